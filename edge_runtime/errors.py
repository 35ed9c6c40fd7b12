"""User-facing errors: the CLI prints them as one line and exits with code 2, no traceback."""


class EdgeclfError(Exception):
    """A problem with the user's input (a path, a file, an option) that stops a command."""

    exit_code = 2


class ImageReadError(EdgeclfError):
    """An image file that cannot be used; ``reason`` says why in a few words."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
