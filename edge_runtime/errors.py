"""User-facing errors: the CLI prints them as one line and exits with code 2, no traceback."""


class EdgeclfError(Exception):
    """A problem with the user's input (a path, a file, an option) that stops a command."""

    exit_code = 2


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of a library's exception message (or its type), cut to ``limit`` characters,
    for one-line errors that say what the library objected to."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]


class ImageReadError(EdgeclfError):
    """An image file that cannot be used; ``reason`` says why in a few words."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def require_train_extra(command: str) -> None:
    """Fail in one line when TensorFlow (the ``train`` extra) is not installed."""
    import importlib.util

    try:
        missing = importlib.util.find_spec("tensorflow") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        raise EdgeclfError(f"'edgeclf {command}' needs TensorFlow: pip install 'edgeclf[train]'")


class OutputError(EdgeclfError):
    """An output (``--csv``, ``--save``, ``--plot``) that cannot be written: a full disk, a
    read-only folder. The failed output is discarded; outputs that did not fail are kept."""


# Characters that would let a file name (or a network peer) rewrite what the terminal shows:
# C0/C1 controls (newline, ESC, BEL, NUL...), DEL, the Unicode line and paragraph separators and
# the bidirectional overrides ("Trojan source"). Undecodable bytes of a file name arrive as lone
# surrogates (PEP 383) and could not be written to a UTF-8 stream at all.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_UNSAFE.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_UNSAFE.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})
_UNSAFE.update({c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)})


def safe_text(text: object) -> str:
    """``text`` with control characters and undecodable file-name bytes escaped (``\\n``,
    ``\\x1b``, ``\\xe9``), so a printed path is one line of valid UTF-8 that cannot forge output."""
    return str(text).translate(_UNSAFE)


def warn(msg: str) -> None:
    """One ``warning:`` line on stderr, with anything that could forge lines escaped."""
    import sys

    print(f"warning: {safe_text(msg)}", file=sys.stderr, flush=True)


def warn_skip(path: object, reason: str) -> None:
    """The default ``on_skip``: one warning line on stderr for an unreadable file."""
    warn(f"skipped {path}: {reason}")
