"""How the workstation side plugs into the runtime without the runtime importing it.

Training and export are subpackages of ``edgeclf`` but sit above the runtime: the runtime never
imports them. They announce themselves through entry points in the distribution's metadata
(pyproject.toml), which the runtime looks up by group name:

- ``edgeclf.commands``: ``register(app)`` functions that add CLI commands (``train``, ``export``,
  ``demo``);
- ``edgeclf.model_loaders``: ``load(path)`` functions that open a model format the runtime cannot
  (``keras``: a run folder or a ``.keras`` file, for ``edgeclf eval``). What they return has
  ``class_names`` (or None), ``num_classes``, ``size`` (height, width) and ``predict(rgb_batch)``.

Other packages can add commands or loaders the same way.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

from .errors import first_line, safe_text

COMMANDS = "edgeclf.commands"
MODEL_LOADERS = "edgeclf.model_loaders"


def _entry_points(group: str) -> list[EntryPoint]:
    return sorted(entry_points(group=group), key=lambda ep: ep.name)


def load_commands(app: Any) -> None:
    """Let every ``edgeclf.commands`` plugin add its commands to the typer ``app``.

    A plugin that fails to load costs its own commands only: one warning line, the rest works."""
    for ep in _entry_points(COMMANDS):
        try:
            ep.load()(app)
        except Exception as e:  # a broken third-party plugin must not take `edgeclf predict` down
            print(f"warning: edgeclf command plugin {ep.name!r} ({ep.value}) did not load: {safe_text(first_line(e))}",
                  file=sys.stderr)


def model_loader(kind: str) -> Callable[..., Any] | None:
    """The ``edgeclf.model_loaders`` function named ``kind``, or None when none is installed."""
    for ep in _entry_points(MODEL_LOADERS):
        if ep.name == kind:
            return ep.load()
    return None
