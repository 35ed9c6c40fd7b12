"""The live view's addresses: the ``--serve [HOST:]PORT`` it listens on, and the ``Host`` header
check that keeps other web sites from reading it (DNS rebinding)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Sequence

from edgeclf.errors import EdgeclfError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_address(spec: str) -> tuple[str, int]:
    """``8080``, ``:8080``, ``0.0.0.0:8080``, ``[::1]:8080`` -> (host, port); the host defaults to
    127.0.0.1 so nothing is exposed to the network unless asked for. Port 0 picks a free one."""
    text = str(spec).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.count(":") and not host.startswith("["):
        port = ""  # a bare IPv6 address: the port is ambiguous without brackets
    host = host.strip("[]") or "127.0.0.1"
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise EdgeclfError(f"--serve {text!r}: expected [HOST:]PORT, e.g. 8080, 127.0.0.1:8080 or 0.0.0.0:8080")
    return host, int(port)


def host_name(header: str) -> str:
    """The name in a Host header, without port or brackets, lower case: ``[::1]:80`` -> ``::1``."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def is_host_name(name: str) -> bool:
    """Whether ``name`` can be a Host header's name (not empty, no path, no blanks)."""
    return bool(name.strip()) and not any(c in name for c in "/ \t")


def allowed_hosts(bound: str, extra: Sequence[str]) -> frozenset[str]:
    """The names a server bound to ``bound`` answers to: localhost, its own, this machine's, and
    ``extra`` (``--allow-host``)."""
    names = {"localhost", host_name(bound), socket.gethostname().lower()}
    names.add(socket.gethostname().lower().split(".")[0] + ".local")  # mDNS, as a Raspberry Pi answers to
    for name in extra:
        if not is_host_name(name):
            raise EdgeclfError(f"--allow-host {name!r}: expected a host name, e.g. pi.example.com")
        names.add(host_name(name))
    return frozenset(names)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header names this server. A web page from another site can reach
    127.0.0.1 by pointing its own name at it (DNS rebinding); its requests then carry that name, so
    only IP addresses (which cannot be rebound), localhost names, this machine's names and the
    names the user allowed are answered. No Host at all (HTTP/1.0 tools) is not a browser."""
    if header is None:
        return True
    host = host_name(header)
    if host in allowed or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
