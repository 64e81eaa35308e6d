"""Admission of tlsgate's own policy kinds (API.md "Traffic policies"): the schema rules a
CRD would carry, checked before a document is stored.

Pure. Which objects a policy targets, and whether they exist, is the policy's status
(`translate/traffic.py`), as for Gateway API policies; admission checks only what a document
says by itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from gateway.api.admission_checks import Checker, target_refs
from gateway.api.names import parse_duration
from gateway.api.traffic import BackendTrafficPolicy, ClientTrafficPolicy, HealthCheck


def cidr_problem(text: str) -> str | None:
    """Why `text` is not an IP network in CIDR notation with no host bits set, or None."""
    if "/" not in text:
        return "must be a network in CIDR notation, with its prefix length (10.0.0.0/8)"
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            network = ipaddress.ip_network(text, strict=False)
            return f"has host bits set: the network is {network.with_prefixlen}"
        return "must be an IPv4 or IPv6 network in CIDR notation (10.0.0.0/8, 2001:db8::/32)"
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        # Clients are matched as IPv4 (an IPv4-mapped address is read as the IPv4 one): a
        # mapped network would never match, and a deny list would let everyone through.
        return "is an IPv4-mapped IPv6 network: give the IPv4 network instead"
    return None


_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
#: The longest hello or handshake timeout a policy may set: a socket shared by listeners
#: waits for the longest of theirs, so one policy must not hold every client's slot there
#: for hours.
MAX_HELLO_SECONDS: Final = 300.0
#: The largest connection limit: above it a limit is none (a process tree holds fewer).
MAX_LIMIT: Final = 1_000_000


def _cidrs(c: Checker, field: str, values: Sequence[str] | None, low: int, high: int) -> None:
    c.items(field, values, low, high)
    for i, text in enumerate(values or ()):
        if (problem := cidr_problem(text)) is not None:
            c.invalid(f"{field}[{i}]", text, problem)


def admit_client_traffic_policy(c: Checker, doc: ClientTrafficPolicy) -> None:
    spec = doc.spec
    target_refs(c, spec.target_refs)
    if spec.proxy_protocol is not None:
        _cidrs(c, "spec.proxyProtocol.trustedCIDRs", spec.proxy_protocol.trusted_cidrs, 1, 64)
    if spec.client_ips is not None:
        _cidrs(c, "spec.clientIPs.allow", spec.client_ips.allow, 0, 256)
        _cidrs(c, "spec.clientIPs.deny", spec.client_ips.deny, 0, 256)
    timeout = spec.timeout
    if timeout is not None:
        for field, value in (
            ("spec.timeout.tcp.idleTimeout", timeout.tcp.idle_timeout if timeout.tcp else None),
            ("spec.timeout.tls.helloTimeout", timeout.tls.hello_timeout if timeout.tls else None),
            (
                "spec.timeout.tls.handshakeTimeout",
                timeout.tls.handshake_timeout if timeout.tls else None,
            ),
        ):
            if value is None:
                continue
            seconds = parse_duration(value)
            if seconds is None:
                c.invalid(field, value, "must be a duration such as 10s, 1m30s, 500ms or 1h")
            elif seconds <= 0:
                c.invalid(field, value, "must be longer than 0s")
            elif ".tls." in field and seconds > MAX_HELLO_SECONDS:
                c.invalid(field, value, f"must be at most {MAX_HELLO_SECONDS:.0f}s")
    connection = spec.connection
    if connection is not None:
        per_client = connection.per_client
        limits: tuple[tuple[str, int | None], ...] = (
            (
                "spec.connection.connectionLimit.value",
                connection.connection_limit.value if connection.connection_limit else None,
            ),
            (
                "spec.connection.perClient.maxConnections",
                per_client.max_connections if per_client else None,
            ),
            (
                "spec.connection.perClient.connectionsPerSecond",
                per_client.connections_per_second if per_client else None,
            ),
        )
        for name, limit in limits:
            if limit is not None and not 1 <= limit <= MAX_LIMIT:
                c.invalid(name, limit, f"must be between 1 and {MAX_LIMIT}")


def _duration(c: Checker, field: str, text: str | None, shortest: str, longest: str) -> None:
    """A Gateway API duration from `shortest` to `longest` (both durations too)."""
    if text is None:
        return
    seconds = parse_duration(text)
    low, high = parse_duration(shortest), parse_duration(longest)
    assert low is not None
    assert high is not None
    if seconds is None:
        c.invalid(field, text, "must be a duration such as 5s, 1m30s or 500ms")
    elif not low <= seconds <= high:
        c.invalid(field, text, f"must be at least {shortest} and at most {longest}")


def _health_check(c: Checker, check: HealthCheck) -> None:
    passive, active = check.passive, check.active
    if passive is not None:
        failures = passive.consecutive_connect_failures
        if failures is not None and not 1 <= failures <= 1000:
            c.invalid(
                "spec.healthCheck.passive.consecutiveConnectFailures",
                failures,
                "must be between 1 and 1000",
            )
        _duration(
            c, "spec.healthCheck.passive.baseEjectionTime", passive.base_ejection_time, "1ms", "1h"
        )
        percent = passive.max_ejection_percent
        if percent is not None and not 0 <= percent <= 100:
            c.invalid(
                "spec.healthCheck.passive.maxEjectionPercent", percent, "must be between 0 and 100"
            )
    if active is not None:
        c.enum("spec.healthCheck.active.type", active.type, ("TCP", "TLS"))
        _duration(c, "spec.healthCheck.active.interval", active.interval, "100ms", "1h")
        _duration(c, "spec.healthCheck.active.timeout", active.timeout, "1ms", "5m")
        for field, value in (
            ("healthyThreshold", active.healthy_threshold),
            ("unhealthyThreshold", active.unhealthy_threshold),
        ):
            if value is not None and not 1 <= value <= 100:
                c.invalid(f"spec.healthCheck.active.{field}", value, "must be between 1 and 100")


def admit_backend_traffic_policy(c: Checker, doc: BackendTrafficPolicy) -> None:
    spec = doc.spec
    target_refs(c, spec.target_refs)
    if spec.proxy_protocol is not None:
        c.enum("spec.proxyProtocol.version", spec.proxy_protocol.version, ("V1", "V2"))
    if spec.health_check is not None:
        _health_check(c, spec.health_check)
    connect = spec.timeout.tcp.connect_timeout if spec.timeout and spec.timeout.tcp else None
    if connect is not None:
        seconds = parse_duration(connect)
        if seconds is None:
            c.invalid("spec.timeout.tcp.connectTimeout", connect, "must be a duration such as 5s")
        elif not 0 < seconds <= MAX_HELLO_SECONDS:
            c.invalid(
                "spec.timeout.tcp.connectTimeout",
                connect,
                f"must be longer than 0s and at most {MAX_HELLO_SECONDS:.0f}s",
            )
    if spec.retry is not None and spec.retry.num_attempts is not None:
        attempts = spec.retry.num_attempts
        if not 1 <= attempts <= 16:
            c.invalid("spec.retry.numAttempts", attempts, "must be between 1 and 16")
    balancer = spec.load_balancer
    if balancer is not None:
        c.enum("spec.loadBalancer.type", balancer.type, ("RoundRobin", "Random", "ConsistentHash"))
        if balancer.type == "ConsistentHash":
            if balancer.consistent_hash is None:
                c.required(
                    "spec.loadBalancer.consistentHash",
                    "Required value: consistentHash when type is ConsistentHash",
                )
            else:
                kind = balancer.consistent_hash.type
                c.enum("spec.loadBalancer.consistentHash.type", kind, ("SourceIP",))
        elif balancer.consistent_hash is not None:
            c.invalid(
                "spec.loadBalancer.consistentHash",
                None,
                "only with type ConsistentHash",
            )
