"""The export folder, all or nothing: built in a hidden folder beside ``--out`` and swapped in at
the end, so Ctrl-C, a kill or a full disk at any point leaves either the earlier export, whole, or
the new one, whole (never a new ``model.onnx`` beside an old ``model.int8.onnx``).

The swap is one ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere three renames, and a kill in
between leaves the earlier export aside, which the next export puts back. Files in ``--out`` that
are not the export's are carried into the new folder as hard links (no copy, nothing lost).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from edgeclf.errors import EdgeclfError
from edgeclf.model.exported import MODEL_NAMES, REPORT_NAME

EXPORT_NAMES = (*MODEL_NAMES, REPORT_NAME)
ENGINE_RECORD = "engine.json"  # edgeclf.model.engine_choice.RECORD_NAME
_ASIDE = ".old"  # suffix of the earlier export while the three-rename swap runs


def _prefix(out: Path) -> str:
    return f".{out.name[:100]}.export-"  # cut: the hidden name must fit the file system's limit too


def _real(out: Path) -> Path:
    """``out`` as the folder swapped: absolute (``--out .`` has a name), a link's target (the link stays)."""
    path = Path(os.path.abspath(out))
    return path.resolve() if path.is_symlink() else path


def check_out_folder(out: Path, force: bool) -> None:
    """Before any work: put back an export a killed swap left aside, remove folders a killed export
    left beside ``out``, and refuse an ``out`` that holds an earlier export (without ``force``) or
    that is a mount point (it cannot be swapped)."""
    _clean_leftovers(_real(out))
    held = [name for name in EXPORT_NAMES if (out / name).exists()]
    if held and not force:
        raise EdgeclfError(f"{out}: already holds an export ({', '.join(held)}); use --force to replace it "
                           "or --out elsewhere")
    if out.is_dir() and os.stat(out).st_dev != os.stat(_real(out).parent).st_dev:
        raise EdgeclfError(f"{out}: is a mount point, which an export cannot replace; use a folder inside it")


def _clean_leftovers(out: Path) -> None:
    leftovers = sorted(out.parent.glob(_prefix(out) + "*")) if out.parent.is_dir() else []
    for path in leftovers:
        if path.name.endswith(_ASIDE) and not out.exists():
            os.rename(path, out)
            print(f"warning: {out}: put back the export a killed export had set aside", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)
            print(f"warning: removed {path}, left by a killed export", file=sys.stderr)


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A new hidden folder beside ``out`` to build the export in; removed when the block ends
    (after ``swap_in`` it holds the earlier export)."""
    out = _real(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=_prefix(out), dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(new, 0o777 & ~umask)  # mkdtemp makes 0700; the export folder gets normal permissions
    try:
        yield new
    finally:
        shutil.rmtree(new, ignore_errors=True)


def swap_in(new: Path, out: Path) -> None:
    """Make ``new`` the folder ``out`` in one step, carrying over the files of ``out`` that are
    not the export's; the earlier export ends up at ``new``."""
    out = _real(out)
    if not out.exists():
        os.rename(new, out)
        return
    for entry in os.scandir(out):
        # engine.json (bench --engines) timed the models this export replaces: it goes with them
        if entry.name not in EXPORT_NAMES and entry.name != ENGINE_RECORD:
            _link(Path(entry.path), new / entry.name)
    if not _exchange(new, out):
        aside = new.with_name(new.name + _ASIDE)
        os.rename(out, aside)
        os.rename(new, out)
        os.rename(aside, new)


def _link(src: Path, dst: Path) -> None:
    """``src`` as hard links at ``dst`` (folders rebuilt, their files linked)."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
    else:
        os.link(src, dst, follow_symlinks=False)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux 3.15+ and a file system that supports it); False if not done."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
