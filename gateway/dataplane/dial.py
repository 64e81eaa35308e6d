"""Connecting to a backend: round robin over its ready endpoints, a bounded number of tries,
FQDN endpoints resolved at connect time (API.md "Documents").

I/O. Non-blocking `connect_ex` and a wait for writability: no Trio socket wrapper, whose
construction and scheduler passes cost more than the connect itself on loopback.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import trio

from gateway.dataplane.access import AccessRecord, Outcome
from gateway.metrics import Metrics
from gateway.routing.snapshot import Backend, Endpoint

#: Endpoints of one backend tried per connection before the client is closed.
CONNECT_ATTEMPTS = 3


class Dialer:
    def __init__(self, connect_timeout: float, metrics: Metrics) -> None:
        self.connect_timeout = connect_timeout
        self.metrics = metrics
        #: Backend name -> the endpoint index the next connection starts from.
        self._next: dict[str, int] = {}

    async def connect(self, backend: Backend, record: AccessRecord) -> socket.socket | None:
        """A connected socket to one of the backend's endpoints, or None with the record
        saying why (every endpoint tried, one line each)."""
        endpoints = backend.endpoints
        start = self._next.get(backend.name, 0)
        self._next[backend.name] = start + 1
        errors = []
        for attempt in range(min(CONNECT_ATTEMPTS, len(endpoints))):
            endpoint = endpoints[(start + attempt) % len(endpoints)]
            record.endpoint = endpoint.text
            with trio.move_on_after(self.connect_timeout):
                try:
                    return await open_endpoint(endpoint)
                except OSError as exc:
                    errors.append(f"{endpoint}: {exc.strerror or exc}")
                    self.metrics.backend_connect_failures.labels(backend.name).inc()
                    continue
            errors.append(f"{endpoint}: timed out")
            self.metrics.backend_connect_failures.labels(backend.name).inc()
        record.outcome = Outcome.CONNECT_FAILED
        record.detail = "; ".join(errors) or "no endpoint"
        return None


async def open_endpoint(endpoint: Endpoint) -> socket.socket:
    """A non-blocking TCP connection to the endpoint; FQDN endpoints are resolved now (API.md:
    a docker-compose service name works)."""
    if endpoint.ip_version:  # parsed once, with the snapshot
        family = socket.AF_INET6 if endpoint.ip_version == 6 else socket.AF_INET
        return await _connect_one(family, (endpoint.address, endpoint.port))
    infos = await trio.socket.getaddrinfo(endpoint.address, endpoint.port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"{endpoint.address} did not resolve")
    for family, _, _, _, address in infos:
        try:
            return await _connect_one(family, address)
        except OSError as exc:
            error = exc
    raise error


async def _connect_one(family: int, address: tuple[Any, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock
