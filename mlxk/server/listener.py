"""The listening socket, bound by us before the server starts.

Granian binds its own sockets with ``SO_REUSEPORT``, so a second server on a taken port binds too
and the kernel splits the connections between the two (a restart that adds ``--api-key`` would let
part of the traffic reach the old, open server). We bind without it: a taken port is a clear error
at start, unless the user asks for sharing (``--reuse-port``), and then every server on the port
must have asked for it.
"""

from __future__ import annotations

import errno
import socket

from mlxk.errors import ValidationError

BACKLOG = 2048  # connections the kernel queues while all of ours are busy


def bind_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket listening on ``host:port``: connections queue from now on, before the server
    takes them (a client that reads the start-up message may connect at once)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValidationError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # lets a restarted server bind while connections of the old one linger in TIME_WAIT; on
        # Linux and macOS it does not let two servers listen on one port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ValidationError(_why(exc, host, port)) from None
    return sock


def _why(exc: OSError, host: str, port: int) -> str:
    where = f"{'[' + host + ']' if ':' in host else host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where} is already in use (another server?); stop it, choose another --port, "
            "or start every server on it with --reuse-port to share it"
        )
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where} (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"
