"""Listening sockets and loopback addresses, shared by the data plane's listeners, the admin
API and the command line.

I/O (creates sockets); `is_loopback` is pure.
"""

from __future__ import annotations

import ipaddress
import socket


def listening_socket(
    host: str, port: int, backlog: int, *, reuse_port: bool = False
) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; OSError (address in use, ...) for the
    caller to report, with nothing left open. With `reuse_port`, other sockets that also ask
    for it (the worker processes) bind the same port and the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP address: traffic that never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
