"""Secrets named by a config file: the value of an environment variable, or the contents of a file
of their own (bounded, first line), so that the config itself can be shared and committed."""

from __future__ import annotations

import os
from pathlib import Path

from edgeclf.errors import EdgeclfError, safe_text

MAX_SECRET_BYTES = 4096


def read_secret(*, env: str | None = None, file: str | os.PathLike | None = None) -> str:
    """The secret in environment variable ``env`` or in ``file``; a one-line ``EdgeclfError`` that
    names the variable or the file (never the secret) when it is missing or empty."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise EdgeclfError(f"environment variable {safe_text(env)} is not set or empty")
        return value
    if file is None:
        raise EdgeclfError("no secret given")
    path = Path(file)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise EdgeclfError(f"{safe_text(path)}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_SECRET_BYTES:
        raise EdgeclfError(f"{safe_text(path)}: larger than {MAX_SECRET_BYTES} bytes; not a secret file")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise EdgeclfError(f"{safe_text(path)}: not UTF-8 text") from None
    value = lines[0].strip() if lines else ""
    if not value:
        raise EdgeclfError(f"{safe_text(path)}: empty")
    return value
