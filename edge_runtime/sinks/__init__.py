"""Where ``edgeclf predict``'s results go: the console (lines or ``--json``), ``--csv``, ``--save``,
``--show`` and ``--serve``, each a ``Sink`` (see ``base``) in a module of its own with what writes
it: ``console``, ``csvfile``, ``video``, ``window``, ``live``. ``annotation`` draws the frame the
video, the window and the live view show; ``open`` checks and opens them from the options."""
