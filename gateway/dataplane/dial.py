"""Connecting to a backend: round robin over its ready endpoints (or as its
BackendTrafficPolicy's loadBalancer says: Random, or ConsistentHash by the client's address),
a bounded number of tries over distinct endpoints, FQDN endpoints resolved at connect time
(API.md "Documents", "Traffic policies").

I/O. Non-blocking `connect_ex` and a wait for writability: no Trio socket wrapper, whose
construction and scheduler passes cost more than the connect itself on loopback. Passthrough
connections wait for the connect in the relay loop instead (`proxy`, `relay`): the pieces
are here (`attempts`, `addresses`, `start_connect`), `Dialer.connect` waits in the task.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
from collections.abc import Callable, Sequence
from typing import Any

import trio

from gateway.dataplane.access import AccessRecord, Outcome
from gateway.metrics import Metrics
from gateway.routing.health import HealthView
from gateway.routing.snapshot import Backend, Endpoint

#: Where connect outcomes of health-checked Services go: (backend, endpoint, error or None).
Report = Callable[[str, str, str | None], None]

#: Endpoints of one backend tried per connection before the client is closed.
CONNECT_ATTEMPTS = 3
#: IP endpoints whose socket address is kept (forgotten all at once past this).
MAX_REMEMBERED = 4096


class Dialer:
    def __init__(
        self, connect_timeout: float, metrics: Metrics, rng: random.Random | None = None
    ) -> None:
        self.connect_timeout = connect_timeout
        self.metrics = metrics
        self._rng = rng or random.Random()
        #: Backend name -> the endpoint index the next connection starts from.
        self._next: dict[str, int] = {}
        #: IP endpoint `host:port` -> its one (family, address).
        self._ip_addresses: dict[str, tuple[tuple[int, tuple[str, int]]]] = {}
        #: The health view in force (the main process's monitor sends it), and where the
        #: connect outcomes of checked Services are reported.
        self.health = HealthView()
        self.report: Report | None = None
        #: Endpoints this process reported a failure of: their next success is reported
        #: too, even before the monitor's view names them suspects (it is on its way).
        self._reported: set[tuple[str, str]] = set()

    def timeout(self, backend: Backend) -> float:
        """Seconds to connect one endpoint of `backend`."""
        traffic = backend.traffic
        if traffic is not None and traffic.connect_timeout is not None:
            return traffic.connect_timeout
        return self.connect_timeout

    def attempts(self, backend: Backend, client: str | None = None) -> Sequence[Endpoint]:
        """The endpoints one connection tries, in order, all distinct: round robin over the
        backend's, or from a random one, or ranked for the client's address (rendezvous
        hashing: the same address reaches the same endpoint while the set is unchanged, and
        a change moves only the addresses of the endpoints that came or went)."""
        endpoints = backend.endpoints
        traffic = backend.traffic
        if traffic is not None and traffic.checked:
            avoid = self.health.avoid.get(backend.name)
            if avoid:
                usable = tuple(e for e in endpoints if e.text not in avoid)
                # Every endpoint avoided: all are tried (fail open; the monitor logs it).
                endpoints = usable or endpoints
        if len(endpoints) <= 1:
            return (
                endpoints  # nothing to rotate, nothing to allocate (a parked connection holds it)
            )
        tries = traffic.attempts if traffic is not None and traffic.attempts else CONNECT_ATTEMPTS
        count = min(tries, len(endpoints))
        balance = traffic.balance if traffic is not None else None
        if balance == "ConsistentHash" and client is not None:
            return sorted(endpoints, key=lambda e: _rank(client, e), reverse=True)[:count]
        if balance == "Random":
            start = self._rng.randrange(len(endpoints))
        else:
            start = self._next.get(backend.name, 0)
            self._next[backend.name] = start + 1
        return [endpoints[(start + attempt) % len(endpoints)] for attempt in range(count)]

    def failed(self, backend: Backend, endpoint: Endpoint, reason: str, errors: list[str]) -> None:
        errors.append(f"{endpoint}: {reason}")
        self.metrics.backend_connect_failures.add((backend.name,))
        traffic = backend.traffic
        if traffic is not None and traffic.passive is not None and self.report is not None:
            self.report(backend.name, endpoint.text, reason)
            if len(self._reported) >= MAX_REMEMBERED:
                self._reported.clear()
            self._reported.add((backend.name, endpoint.text))

    def on_connect(self, backend: Backend, endpoint: Endpoint) -> Callable[[], None] | None:
        """What to call once a connect to `endpoint` succeeds: report it, if the endpoint has
        failures counted (a success ends their run); None when there is nothing to say."""
        traffic = backend.traffic
        if traffic is None or traffic.passive is None or self.report is None:
            return None
        key = (backend.name, endpoint.text)
        if key not in self.health.suspects and key not in self._reported:
            return None
        self._reported.discard(key)
        report = self.report
        return lambda: report(key[0], key[1], None)

    async def addresses(
        self, endpoint: Endpoint, deadline: float
    ) -> Sequence[tuple[int, tuple[Any, ...]]]:
        """(family, socket address) to try for the endpoint: its own address, without
        waiting (nor a cancel scope), made once per endpoint and shared, since a parked
        connection keeps what it iterates over; an FQDN is resolved now, by the deadline
        (API.md: a docker-compose service name works)."""
        if endpoint.ip_version:
            found = self._ip_addresses.get(endpoint.text)
            if found is None:
                if len(self._ip_addresses) >= MAX_REMEMBERED:
                    self._ip_addresses.clear()
                family = socket.AF_INET6 if endpoint.ip_version == 6 else socket.AF_INET
                found = ((family, (endpoint.address, endpoint.port)),)
                self._ip_addresses[endpoint.text] = found
            return found
        infos = None
        with trio.move_on_at(deadline):
            infos = await trio.socket.getaddrinfo(
                endpoint.address, endpoint.port, type=socket.SOCK_STREAM
            )
        if infos is None:
            raise OSError(errno.ETIMEDOUT, "timed out")
        if not infos:
            raise OSError(f"{endpoint.address} did not resolve")
        return [(family, address) for family, _, _, _, address in infos]

    @staticmethod
    def give_up(record: AccessRecord, errors: list[str]) -> None:
        record.outcome = Outcome.CONNECT_FAILED
        record.detail = "; ".join(errors) or "no endpoint"

    async def connect(self, backend: Backend, record: AccessRecord) -> socket.socket | None:
        """A connected socket to one of the backend's endpoints, or None with the record
        saying why (every endpoint tried, one line each)."""
        errors: list[str] = []
        for endpoint in self.attempts(backend, record.peer[0]):
            record.endpoint = endpoint.text
            deadline = trio.current_time() + self.timeout(backend)
            reason = "timed out"
            with trio.move_on_at(deadline):
                try:
                    for family, address in await self.addresses(endpoint, deadline):
                        try:
                            sock = await _connect_one(family, address)
                        except OSError as exc:
                            reason = exc.strerror or str(exc)
                            continue
                        if (connected := self.on_connect(backend, endpoint)) is not None:
                            connected()
                        return sock
                except (OSError, UnicodeError) as exc:  # resolution (IDNA refuses some names)
                    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            self.failed(backend, endpoint, reason, errors)
        self.give_up(record, errors)
        return None


def _rank(client: str, endpoint: Endpoint) -> bytes:
    """The endpoint's weight for this client: a keyed hash, the same in every worker and
    every run (Python's hash() of a str is salted per process)."""
    return hashlib.blake2b(f"{client}|{endpoint.text}".encode(), digest_size=8).digest()


def start_connect(family: int, address: tuple[Any, ...]) -> socket.socket:
    """A non-blocking socket whose connect is under way (or done); OSError if it failed at
    once. Whoever waits for it checks SO_ERROR once it is writable."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_one(family: int, address: tuple[Any, ...]) -> socket.socket:
    sock = start_connect(family, address)
    try:
        await trio.lowlevel.wait_writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock
