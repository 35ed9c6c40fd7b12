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
