"""What the access log says about one connection: its record, how it ended, and the line.

I/O edge only in that the line is written by the caller (`proxy`); this module formats. One
line per finished connection (ARCHITECTURE.md "Logging"): peer, SNI, listener, route, backend,
endpoint, bytes each way, duration, outcome; never key material.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

import attrs

from gateway.dataplane.relay import Transfer
from gateway.logs import logfmt
from gateway.routing.snapshot import RejectReason


class Outcome(StrEnum):
    """How a connection ended: the access log's `outcome` and the metrics' label, so a fixed
    vocabulary (docs/configuration.md lists every one)."""

    CLOSED = "closed"
    CLIENT_CLOSED = "client-closed"
    IDLE_TIMEOUT = "idle-timeout"
    HELLO_TIMEOUT = "hello-timeout"
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    TLS_HANDSHAKE_FAILED = "tls-handshake-failed"
    CONNECT_FAILED = "connect-failed"
    BACKEND_TLS_FAILED = "backend-tls-failed"
    REJECTED_NOT_TLS = "rejected-not-tls"
    REJECTED_NO_BIND = "rejected-no-bind"
    REJECTED_NO_SNI = "rejected-no-sni"
    REJECTED_NO_LISTENER = "rejected-no-listener"
    REJECTED_LISTENER_NOT_PROGRAMMED = "rejected-listener-not-programmed"
    REJECTED_NO_ROUTE = "rejected-no-route"
    REJECTED_NO_BACKEND = "rejected-no-backend"
    REJECTED_INVALID_BACKEND = "rejected-invalid-backend"
    #: Closed by a ClientTrafficPolicy before any handshake byte (API.md "Traffic policies").
    REFUSED_CLIENT_IP = "refused-client-ip"
    REFUSED_PROXY_PROTOCOL = "refused-proxy-protocol"
    #: Over a `connection` limit (routing.snapshot.LimitKind: the part after `refused-`).
    REFUSED_CONNECTION_LIMIT = "refused-connection-limit"
    REFUSED_CLIENT_CONNECTION_LIMIT = "refused-client-connection-limit"
    REFUSED_CLIENT_RATE_LIMIT = "refused-client-rate-limit"
    ERROR = "error"
    INTERNAL_ERROR = "internal-error"
    SHUTDOWN = "shutdown"

    @classmethod
    def rejected(cls, reason: RejectReason) -> Outcome:
        """The outcome of a lookup's rejection (SPEC.md §10.3): `rejected-<reason>`."""
        return cls(f"rejected-{reason}")


#: Outcomes that say who ended the connection by themselves.
_ENDED_BY: dict[Outcome, str] = {
    Outcome.CLIENT_CLOSED: "client",
    Outcome.CONNECT_FAILED: "backend",
    Outcome.BACKEND_TLS_FAILED: "backend",
    Outcome.SHUTDOWN: "gateway",
    Outcome.INTERNAL_ERROR: "gateway",
    Outcome.IDLE_TIMEOUT: "gateway",
    Outcome.HELLO_TIMEOUT: "gateway",
    Outcome.HANDSHAKE_TIMEOUT: "gateway",
    **{o: "gateway" for o in Outcome if o.startswith(("rejected-", "refused-"))},
}


@attrs.define
class AccessRecord:
    """What one access-log line says about a connection."""

    peer: tuple[str, int]
    bind: tuple[str, int]
    started: float = attrs.field(factory=time.monotonic)
    sni: str | None = None
    #: "" until known (the metrics' label value for "none"; the log line says "-").
    gateway: str = ""
    #: The listener's full name (`ListenerTable.full_name`).
    listener: str = ""
    route: str = ""
    backend: str = ""
    endpoint: str = ""
    outcome: Outcome = Outcome.CLOSED
    detail: str = ""
    transfer: Transfer | None = None
    worker: int | None = None
    #: What the client sent before its ClientHello (`sslrequest`: PostgreSQL's), if anything.
    prelude: str | None = None
    #: The socket's own peer when a PROXY header carried the client's address (`peer`).
    via: tuple[str, int] | None = None
    #: A PROXY header came first (with addresses, or LOCAL / UNKNOWN without).
    proxied: bool = False
    #: The address and port the client connected to, as a PROXY header carried it.
    destination: tuple[str, int] | None = None
    #: The first ALPN protocol the ClientHello offers (a PROXY v2 header passes it on).
    alpn: str | None = None
    #: The shared counters the connection counts in (`limits.Held`), given back at close.
    held: Any = None
    #: The side whose socket failed ("client", "backend"), when a failure ended it.
    failed: str | None = None
    #: The (gateway, listener, route) the connection counts in as open (`Proxy.open`).
    counted: tuple[str, str, str] | None = None

    def ended_by(self) -> str | None:
        """Who ended the connection: `client`, `backend` or `gateway` (a timeout, a rule, a
        limit, a shutdown); the side that failed, or that ended its side first; None when
        nothing says (a failed TLS handshake: either side may have refused)."""
        if self.failed is not None:
            return self.failed
        by = _ENDED_BY.get(self.outcome)
        if by is not None:
            return by
        return self.transfer.ended_by if self.transfer is not None else None

    def fields(self) -> dict[str, object]:
        """The access-log fields, in order (ARCHITECTURE.md "Logging"; never key material)."""
        host, port = self.peer[:2]
        out: dict[str, object] = {
            "client": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "bind": f"{self.bind[0]}:{self.bind[1]}",
            # None when unknown: `-` in the text line, null in JSON.
            "sni": self.sni or None,
            "listener": self.listener or None,
            "route": self.route or None,
            "backend": self.backend or None,
            "endpoint": self.endpoint or None,
            "bytes_up": self.transfer.up if self.transfer else 0,
            "bytes_down": self.transfer.down if self.transfer else 0,
            "duration": round(time.monotonic() - self.started, 3),
            "outcome": self.outcome,
            "ended_by": self.ended_by(),
        }
        if self.via is not None:
            host, port = self.via[:2]
            out["peer"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.worker is not None:
            out["worker"] = self.worker
        if self.prelude is not None:
            out["prelude"] = self.prelude
        if self.detail:
            out["detail"] = self.detail
        return out

    @staticmethod
    def line(fields: dict[str, object]) -> str:
        """The text access-log line, logfmt style (`logs.logfmt`)."""
        return logfmt(fields)
