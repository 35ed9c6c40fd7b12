"""edgeclf as an unattended device service: its config file (``config``), debounced states
(``state``), the loop over several sources (``runner``) and systemd (``systemd``, ``unit``)."""
