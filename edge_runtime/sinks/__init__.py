"""Where ``edgeclf predict``'s results go: the console (lines or ``--json``), ``--csv``, ``--save``,
``--show`` and ``--serve``, each a ``Sink`` (see ``base``)."""
