"""Which ``Host`` a request may name: the defence against DNS rebinding.

A web page on a name its owner controls can point that name at 127.0.0.1 and then talk to a
loopback server from the victim's browser, as its own origin (so CORS does not stop it). The
request still carries the page's name in ``Host``; a server bound to loopback therefore answers
only requests addressed to a loopback name, and to the names the user allows (``--allow-host``:
a tunnel or reverse proxy in front of the server). A server bound to another address is meant to
be reached by other names, and does not check.

A page the server itself serves (the web chat) sends its own ``Origin`` with every POST; that
origin is the scheme and the ``Host`` of the request. It is accepted when the name in ``Host`` is
one the server knows as its own: a loopback name, a name given with ``--allow-host``, or an IP
address (DNS rebinding needs a name it controls, so an IP literal in both headers is the page
that address served). A foreign page keeps needing ``--cors-origin``.
"""

from __future__ import annotations

import ipaddress

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class HostPolicy:
    def __init__(self, bound: str, allowed: tuple[str, ...] = ()) -> None:
        self.checked = bound in LOOPBACK
        self.allowed = frozenset({*LOOPBACK, *(name.lower() for name in allowed)})

    def allows(self, host_header: str | None) -> bool:
        return not self.checked or host_name(host_header or "") in self.allowed

    def own_origin(self, origin: str, host_header: str | None) -> bool:
        """Whether ``origin`` is this server's own, as one of its pages would send it."""
        if not host_header:
            return False
        scheme, separator, authority = origin.strip().lower().partition("://")
        if not separator or scheme not in ("http", "https") or authority != host_header.strip().lower():
            return False
        name = host_name(host_header)
        return name in self.allowed or _is_ip_address(name)


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without the port and the brackets of an IPv6 address."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allow_host_problem(name: str) -> str | None:
    """Why ``--allow-host NAME`` is not a host name (None when it is one)."""
    if not name or len(name) > 253:
        return "a host name of 1 to 253 characters"
    if any(c in name for c in "/@ \t*[]") or name.count(":") == 1:
        return "a bare host name, without scheme, port, path or wildcard"
    return None
