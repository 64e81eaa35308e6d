"""The routing table as JSON-ready data, and `explain`: what a connection with a given SNI
would get (`GET /v1/routingtable`, `GET /v1/explain`, `tlsgate translate`, `tlsgate explain`).

Pure. Shows references (Secrets, ConfigMaps, policies), never certificate or key material.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from gateway.routing.health import EndpointHealth
from gateway.routing.snapshot import Backend, ListenerTable, Rejected, Snapshot

#: An endpoint's health, as the running gateway knows it: (backend, endpoint) -> its state,
#: None for an endpoint without a check. Offline (`tlsgate translate`) there is none.
HealthOf = Callable[[str, str], EndpointHealth | None]


def _health_wire(health: EndpointHealth) -> dict[str, Any]:
    out: dict[str, Any] = {"state": str(health.state)}
    if health.until is not None:
        until = datetime.datetime.fromtimestamp(health.until, tz=datetime.UTC)
        out["until"] = until.isoformat(timespec="seconds").replace("+00:00", "Z")
    if health.error is not None:
        out["error"] = health.error
    return out


def _backend_wire(backend: Backend, health: HealthOf | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": backend.name,
        "weight": backend.weight,
        "endpoints": [str(e) for e in backend.endpoints],
    }
    if backend.reject is not None:
        out["reject"] = backend.reject
    if backend.tls is not None:
        out["tls"] = {"policy": backend.tls.policy, "hostname": backend.tls.hostname}
    if backend.traffic is not None:
        traffic: dict[str, Any] = {"policies": list(backend.traffic.policies)}
        if backend.traffic.proxy_version is not None:
            traffic["proxyProtocol"] = f"V{backend.traffic.proxy_version}"
        if backend.traffic.connect_timeout is not None:
            traffic["connectTimeoutSeconds"] = backend.traffic.connect_timeout
        if backend.traffic.attempts is not None:
            traffic["numAttempts"] = backend.traffic.attempts
        if backend.traffic.balance is not None:
            traffic["loadBalancer"] = backend.traffic.balance
        checks = backend.traffic
        if checks.passive is not None:
            traffic["passiveHealthCheck"] = {
                "consecutiveConnectFailures": checks.passive.consecutive_failures,
                "baseEjectionTimeSeconds": checks.passive.base_ejection,
                "maxEjectionPercent": checks.passive.max_ejection_percent,
            }
        if checks.active is not None:
            traffic["activeHealthCheck"] = {
                "type": checks.active.type,
                "intervalSeconds": checks.active.interval,
                "timeoutSeconds": checks.active.timeout,
                "healthyThreshold": checks.active.healthy_threshold,
                "unhealthyThreshold": checks.active.unhealthy_threshold,
            }
        out["traffic"] = traffic
        if checks.checked and health is not None:
            states = {e.text: health(backend.name, e.text) for e in backend.endpoints}
            out["health"] = {
                endpoint: _health_wire(state)
                for endpoint, state in states.items()
                if state is not None
            }
    return out


def _listener_wire(listener: ListenerTable, health: HealthOf | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "gateway": listener.gateway,
        "name": listener.name,
        "hostname": listener.hostname,
        "mode": listener.mode,
    }
    if listener.certificates:
        out["certificateRefs"] = [str(c.secret) for c in listener.certificates]
    if listener.frontend is not None:
        out["frontendValidation"] = {
            "mode": listener.frontend.mode,
            "caCertificateRefs": [str(key) for key in listener.frontend.ca_config_maps],
        }
    if listener.alpn:
        out["alpn"] = list(listener.alpn)
    if listener.client is not None:
        client = listener.client
        policy: dict[str, Any] = {"policies": list(client.policies)}
        if client.proxy_trusted is not None:
            policy["proxyProtocol"] = {
                "trustedCIDRs": [str(n) for n in client.proxy_trusted],
                "optional": client.proxy_optional,
            }
        if client.allow is not None or client.deny:
            policy["clientIPs"] = {
                **({"allow": [str(n) for n in client.allow]} if client.allow is not None else {}),
                "deny": [str(n) for n in client.deny],
            }
        timeouts = {
            name: seconds
            for name, seconds in (
                ("idleTimeoutSeconds", client.idle_timeout),
                ("helloTimeoutSeconds", client.hello_timeout),
                ("handshakeTimeoutSeconds", client.handshake_timeout),
            )
            if seconds is not None
        }
        if timeouts:
            policy["timeouts"] = timeouts
        if client.limits:
            policy["limits"] = [
                {"kind": str(rule.kind), "scope": rule.scope, "value": rule.value}
                for rule in client.limits
            ]
        out["clientTrafficPolicy"] = policy
    if listener.reject is not None:
        out["reject"] = listener.reject
    routes = []
    for target in listener.ordered_routes():
        route: dict[str, Any] = {
            "hostname": target.hostname,
            "route": target.route,
            "backends": [_backend_wire(b, health) for b in target.backends],
        }
        if target.shadowed:
            route["shadowed"] = list(target.shadowed)
        routes.append(route)
    out["routes"] = routes
    return out


def table_to_wire(snapshot: Snapshot, health: HealthOf | None = None) -> dict[str, Any]:
    """The routing table as JSON-ready data (`GET /v1/routingtable`, `tlsgate translate`),
    with each checked endpoint's health when `health` knows it."""
    return {
        "generation": snapshot.generation,
        "binds": [
            {
                "address": bind.address,
                "port": bind.port,
                "gateways": list(bind.gateways),
                **({"error": bind.error} if bind.error else {}),
                "listeners": [_listener_wire(lst, health) for lst in bind.listeners],
            }
            for bind in snapshot.binds.values()
        ],
    }


def explain(
    snapshot: Snapshot,
    address: str | None,
    port: int,
    sni: str | None,
    health: HealthOf | None = None,
) -> dict[str, Any]:
    """What a connection with this SNI would get (`GET /v1/explain`): the listener, the route,
    the weighted backends with their endpoints, or why it is rejected. Without an address,
    the port must name one bind."""
    if address is None:
        addresses = sorted(a for a, p in snapshot.binds if p == port)
        if len(addresses) > 1:
            raise ValueError(f"port {port} is bound on {', '.join(addresses)}: give ?address=")
        address = addresses[0] if addresses else "0.0.0.0"
    out: dict[str, Any] = {
        "address": address,
        "port": port,
        "sni": sni,
        "generation": snapshot.generation,
    }
    result = snapshot.lookup(address, port, sni)
    if isinstance(result, Rejected):
        out["result"] = "rejected"
        out["reason"] = str(result.reason)
        out["message"] = result.message
        if result.listener is not None:
            out["listener"] = _listener_wire(result.listener)
            out["listener"].pop("routes")
        return out
    target = result.target
    listener = _listener_wire(result.listener)
    del listener["routes"]
    total = target.total_weight
    out |= {
        "result": "routed",
        "listener": listener,
        "mode": result.listener.mode,
        "hostname": target.hostname,
        "route": target.route,
        "backends": [
            _backend_wire(b, health) | {"share": round(b.weight / total, 4)}
            for b in target.backends
        ],
    }
    if target.shadowed:
        out["shadowed"] = list(target.shadowed)
    if any(b.reject for b in target.backends if b.weight):
        rejected = sum(b.weight for b in target.backends if b.reject) / total
        out["message"] = (
            f"{rejected:.0%} of connections fall on an invalid backend and are "
            "closed (Gateway API: an invalid backend keeps its weight)"
        )
    return out
