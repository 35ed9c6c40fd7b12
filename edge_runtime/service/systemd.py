"""The sd_notify protocol, by hand: tell systemd the service is ready, alive, busy or stopping.

A ``Type=notify`` unit hands its service the address of a datagram socket in ``NOTIFY_SOCKET``;
each message is one datagram of ``KEY=VALUE`` lines. Outside systemd (a terminal, a test) the
variable is unset and every call is a no-op, so the service code calls the notifier the same way
everywhere. Sending never raises and never blocks: a notification is advice to the service
manager, and a service that hangs or crashes because its manager went away is worse than one that
stays quiet.

``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are left in the environment (unlike
``sd_notify(unset_environment=1)``): the service reads them more than once (``from_env`` and
``watchdog_interval`` are independent), and ``NotifyAccess=main`` already makes systemd ignore
messages from child processes (a GStreamer helper, a hook script) that inherit them, while
``WATCHDOG_PID`` tells a child that the watchdog is not its business.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Mapping

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def _address(value: str | None) -> str | None:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value, or None when it is unusable.

    ``@name`` is a Linux abstract socket (a leading NUL byte); a path must be absolute, as
    systemd's own ``sd_notify`` requires (a relative one would depend on the working directory).
    Other schemes (``vsock:``) are not supported and disable notifications."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pets (half of ``WATCHDOG_USEC``, as systemd recommends), or None.

    None when the unit has no ``WatchdogSec=``, the value is not a positive integer, or
    ``WATCHDOG_PID`` names another process (the variables were inherited from a parent)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get(ENV_WATCHDOG_USEC, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get(ENV_WATCHDOG_PID)
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class Notifier:
    """Sends sd_notify messages to ``address`` (a path, or ``@name`` for an abstract socket).

    ``enabled`` is False when there is nowhere to send: every method then returns False at once.
    Methods return True when the datagram went out, False otherwise; none of them raise. Safe to
    call from several threads (the watchdog thread and the main loop)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._target = _address(address)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        """A notifier for ``$NOTIFY_SOCKET``; a disabled one when it is unset or unusable."""
        env = os.environ if environ is None else environ
        return cls(env.get(ENV_SOCKET) or None)

    @property
    def enabled(self) -> bool:
        """True when there is a socket address to send to."""
        return self._target is not None

    def send(self, **fields: object) -> bool:
        """Send one datagram of ``KEY=value`` lines (``send(READY=1, STATUS="ok")``)."""
        if self._target is None:
            return False
        # A newline would start a new field: a status text must stay one line.
        lines = (f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items())
        data = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._sock.setblocking(False)
                # MSG_DONTWAIT as well: a full receive queue must cost a lost message, not a hang.
                self._sock.sendto(data, socket.MSG_DONTWAIT, self._target)
            except OSError:
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is done: systemd moves the unit from 'activating' to 'active'."""
        return self.send(READY=1, STATUS=status) if status is not None else self.send(READY=1)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """Pet the watchdog; call every ``watchdog_interval()`` seconds."""
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (so systemd does not count the slow exit as a hang)."""
        return self.send(STOPPING=1, STATUS=status) if status is not None else self.send(STOPPING=1)

    def reloading(self) -> bool:
        """A configuration reload has begun; send ``ready()`` when it is done.

        ``MONOTONIC_USEC`` is what ``Type=notify-reload`` (systemd 253) requires; older versions
        ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before a start or stop timeout (a slow model load on a Pi)."""
        return self.send(EXTEND_TIMEOUT_USEC=max(1, int(seconds * 1_000_000)))

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pets for this process, or None (see the module function)."""
        return watchdog_interval()

    def close(self) -> None:
        """Close the socket; a later send opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
