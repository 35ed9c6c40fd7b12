"""How the workstation side plugs into the runtime without the runtime importing it.

Training and export are subpackages of ``edgeclf`` but sit above the runtime: the runtime never
imports them. They announce themselves through entry points in the distribution's metadata
(pyproject.toml), which the runtime looks up by group name:

- ``edgeclf.commands``: ``register(app)`` functions that add CLI commands (``train``, ``export``,
  ``demo``);
- ``edgeclf.model_loaders``: ``load(path)`` functions that open a model format the runtime cannot
  (``keras``: a run folder or a ``.keras`` file, for ``edgeclf eval``). What they return has
  ``class_names`` (or None), ``num_classes``, ``size`` (height, width) and ``predict(rgb_batch)``.

Other packages can add commands or loaders the same way; edgeclf's own come first and cannot be
replaced.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, distributions
from typing import Any, Callable

from edgeclf.errors import EdgeclfError, first_line, safe_text

COMMANDS = "edgeclf.commands"
MODEL_LOADERS = "edgeclf.model_loaders"


def _entry_points(group: str) -> list[EntryPoint]:
    """The group's entry points, edgeclf's own first, each (name, value) once.

    Read from every distribution found, not only the first of each name, so a stale
    ``edgeclf.egg-info`` in the working folder (left by an old in-tree build) cannot hide the
    installed package's entry points."""
    seen: set[tuple[str, str]] = set()
    found: list[tuple[bool, str, EntryPoint]] = []
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == group and (ep.name, ep.value) not in seen:
                seen.add((ep.name, ep.value))
                found.append((not ep.value.startswith("edgeclf."), ep.name, ep))
    return [ep for *_, ep in sorted(found, key=lambda t: t[:2])]


def _warn(ep: EntryPoint, what: str, e: BaseException) -> None:
    print(f"warning: edgeclf {what} plugin {ep.name!r} ({ep.value}) did not load: {safe_text(first_line(e))}",
          file=sys.stderr)


def load_commands(app: Any) -> None:
    """Let every ``edgeclf.commands`` plugin add its commands to the typer ``app``.

    A plugin that fails to load costs its own commands only (one warning line, the rest works),
    and one that redefines an existing command is ignored for that command, with a warning."""
    for ep in _entry_points(COMMANDS):
        before = list(app.registered_commands)
        try:
            ep.load()(app)
        except (Exception, SystemExit) as e:  # a broken third-party plugin must not take `edgeclf predict` down
            del app.registered_commands[len(before):]
            _warn(ep, "command", e)
            continue
        names = {command_name(c) for c in before}
        for info in app.registered_commands[len(before):]:
            if command_name(info) in names:
                app.registered_commands.remove(info)
                print(f"warning: edgeclf command plugin {ep.name!r} ({ep.value}) redefines '{command_name(info)}'; ignored",
                      file=sys.stderr)


def command_name(info: Any) -> str:
    """A typer command's name as the CLI shows it."""
    return info.name or info.callback.__name__.replace("_", "-")


def model_loader(kind: str) -> Callable[..., Any] | None:
    """The ``edgeclf.model_loaders`` function named ``kind`` (edgeclf's own first), or None when
    none is installed. One that fails to load is a one-line error."""
    for ep in _entry_points(MODEL_LOADERS):
        if ep.name == kind:
            try:
                return ep.load()
            except (Exception, SystemExit) as e:
                raise EdgeclfError(f"the {kind} model loader ({ep.value}) did not load: {first_line(e)}") from None
    return None
