"""The API token: who may use a server that listens beyond loopback.

A request carries it as ``Authorization: Bearer <token>`` (machines) or as the cookie
``edgeclf_token`` (the browser: opening ``/?token=<token>`` once sets it and redirects to ``/``, so
the token does not stay in the address bar, the history or a Referer). The token comes from the
service's config, else ``$EDGECLF_TOKEN``, else a file generated once in the state directory (mode
0600). It is never logged or printed.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Mapping

from edgeclf.errors import EdgeclfError

COOKIE = "edgeclf_token"
ENV_TOKEN = "EDGECLF_TOKEN"
ENV_STATE_DIR = "EDGECLF_STATE_DIR"
#: Characters a token may have: RFC 6750's token68, so it fits a header, a cookie and a URL as is.
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")
TOKEN_RULE = "the API token must be 1 to 512 characters of A-Z a-z 0-9 . _ ~ + / = -"
#: How long the browser keeps the cookie (seconds): a month, so a wall display stays signed in.
COOKIE_MAX_AGE = 30 * 24 * 3600


def default_state_dir() -> Path:
    """``$EDGECLF_STATE_DIR``, else ``$XDG_STATE_HOME/edgeclf``, else ``~/.local/state/edgeclf``."""
    if os.environ.get(ENV_STATE_DIR):
        return Path(os.environ[ENV_STATE_DIR]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "edgeclf"


def check_token(token: str, where: str) -> str:
    """``token`` if it is usable (token68 characters, at most 512), else a one-line error naming ``where``."""
    if not TOKEN_RE.fullmatch(token):
        raise EdgeclfError(f"{where}: {TOKEN_RULE}")
    return token


def resolve_token(explicit: str | None, state_dir: Path) -> tuple[str, Path | None]:
    """The token and the file it came from: ``explicit`` (None: not given), else ``$EDGECLF_TOKEN``,
    else ``state_dir/token``, created with a new random token when absent (path None for the first two)."""
    if explicit is not None:
        return check_token(explicit.strip(), "the service config's token"), None
    env = os.environ.get(ENV_TOKEN, "").strip()
    if env:
        return check_token(env, f"${ENV_TOKEN}"), None
    path = Path(state_dir) / "token"
    token = _read_token_file(path)
    if token is None:
        token = _create_token_file(path)
    return token, path


def _read_token_file(path: Path) -> str | None:
    """The token in ``path`` (None when there is no file), refusing one others can read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise EdgeclfError(f"{path}: cannot read the API token file ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise EdgeclfError(f"{path}: the API token file is not a regular file")
        if st.st_mode & 0o077:
            raise EdgeclfError(f"{path}: the API token file is readable by other users "
                               f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}")
        data = f.read(4096)
    try:
        return check_token(data.decode("ascii").strip(), str(path))
    except UnicodeDecodeError:
        raise EdgeclfError(f"{path}: the API token file is not plain text") from None


def _create_token_file(path: Path) -> str:
    """Write a new random token to ``path`` at mode 0600: created under a temporary name with
    O_EXCL (never readable by others, not even for a moment), then renamed into place, so a
    reader never sees half a file. Two processes racing both succeed; the first name wins."""
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if another process made one meanwhile: keep theirs
            except FileExistsError:
                return _read_token_file(path) or token
            except OSError:  # a file system without hard links (FAT): rename instead
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise EdgeclfError(f"{path}: cannot create the API token file ({e.strerror or e})") from None
    return token


class TokenCheck:
    """Whether a request carries ``token`` (None: none is required)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    @property
    def required(self) -> bool:
        return self.token is not None

    def matches(self, given: str | None) -> bool:
        """Constant-time comparison, so the time taken says nothing about the token."""
        if self.token is None:
            return True
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def allows(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` carry the token (bearer header or cookie)."""
        if self.token is None:
            return True
        auth = headers.get("Authorization") or ""
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and self.matches(value.strip()):
            return True
        return self.matches(cookie_value(headers.get("Cookie") or "", COOKIE))

    def set_cookie(self) -> str:
        """The ``Set-Cookie`` value that signs the browser in (script cannot read it, and other
        sites' pages cannot send it)."""
        return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={COOKIE_MAX_AGE}"


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header. Parsed by hand: the standard library's
    SimpleCookie drops every cookie after one it cannot parse, and other apps on the same host
    share this header."""
    for part in header.split(";")[:64]:
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None
