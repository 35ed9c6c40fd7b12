"""``edgeclf predict``: what it is asked to do (``options``) and the frame loop that does it
(``loop``)."""
