"""Where a result came from: the commit, the date, the machine and the command that made it.

Every benchmark script stamps what it writes to ``results/`` with this: ``stamp_json`` puts a
``provenance`` object first in the JSON, ``stamp_markdown`` a short header under the title.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from edgeclf import sysinfo

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def commit() -> tuple[str, bool | None]:
    """The checkout's short commit and whether tracked files differ from it (None outside git)."""
    try:
        return _git("rev-parse", "--short", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def machine() -> str:
    """The machine in one line: CPU model, cores, architecture, OS and Python."""
    m = sysinfo.describe()
    return f"{m['cpu']}, {m['cores']} cores ({m['arch']}, {m['os']}), Python {m['python']}"


def command(argv: list[str] | None = None) -> str:
    """The command line that ran, the script named relative to the repository."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).resolve()
    shown = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else argv[0]
    return " ".join(["python", shlex.quote(shown), *map(shlex.quote, argv[1:])])


def provenance(argv: list[str] | None = None) -> dict:
    """commit, dirty, date (UTC), machine and command of this run."""
    head, dirty = commit()
    return {"commit": head, "dirty": dirty, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(), "command": command(argv)}


def stamp_json(report: dict, prov: dict) -> dict:
    """``report`` with ``prov`` as its first key, ``provenance``."""
    return {"provenance": prov, **{k: v for k, v in report.items() if k != "provenance"}}


def header_lines(prov: dict, chart: str | None = None) -> list[str]:
    """The provenance as a few markdown lines."""
    state = {True: " (uncommitted changes)", False: "", None: ""}[prov.get("dirty")]
    lines = [f"- Commit: `{prov['commit']}`{state}; date: {prov['date']}", f"- Machine: {prov['machine']}",
             f"- Command: `{prov['command']}`"]
    if prov.get("note"):  # results recorded before this module: which code they were measured on
        lines.insert(1, f"- Code: {prov['note']}")
    if chart:
        lines.append(f"- Chart: `{chart}`")
    return lines


def stamp_markdown(text: str, prov: dict, chart: str | None = None) -> str:
    """``text`` with the provenance header under its ``# title`` (on top when it has none)."""
    title, _, rest = text.partition("\n")
    block = "\n".join(header_lines(prov, chart))
    if not title.startswith("# "):
        return f"{block}\n\n{text}"
    body = rest.lstrip("\n")
    return f"{title}\n\n{block}\n\n{body}"
