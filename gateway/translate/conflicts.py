"""Listener conflicts (SPEC.md §9.2): who serves each (address, port) across Gateways.

Within one Gateway, listeners cannot conflict here: TLS is the only protocol served and
admission makes (port, protocol, hostname) unique (`api/admission_gateway.py`), so every
listener's `Conflicted` is False/NoConflicts (`statuses.py`). Across Gateways:

Pure. Gateways on the very same address and port share one socket when their listeners are
compatible (distinct hostnames): the bind is a merged set, as the spec allows, and the most
specific listener of the set wins each connection. A listener whose hostname an older Gateway
already serves there, or whose address overlaps another Gateway's (a wildcard and a specific
address cannot both be bound), gets `PortUnavailable` naming the older Gateway. A failed bind
(a runtime fact) is `PortUnavailable` too. Conflicts inside one Gateway are `listeners.py`'s.
"""

from __future__ import annotations

import ipaddress

from gateway.api.status import Reason
from gateway.translate.context import Build, GatewayState, age
from gateway.translate.listeners import ListenerState

#: (address, port) -> listener hostname (None: any) -> the Gateway serving it there.
_Served = dict[tuple[str, int], dict[str | None, GatewayState]]


def process_conflicts(build: Build) -> None:
    """Claim ports for every accepted TLS listener, oldest Gateway first."""
    served: _Served = {}
    for state in sorted(build.gateways.values(), key=lambda s: age(s.doc.metadata)):
        if state.refusal is not None:
            continue
        wanted: dict[int, list[ListenerState]] = {}
        for listener in state.listeners:
            if listener.is_tls:
                wanted.setdefault(listener.spec.port, []).append(listener)
        for port, listeners in wanted.items():
            if not any(lst.accepted.status for lst in listeners):
                continue
            for address in state.addresses:
                _claim(build, state, address, port, listeners, served)


def _overlaps(a: str, b: str) -> bool:
    """Two bind addresses collide on one port: equal, or one is a wildcard covering the other
    ("::" covers both families on Linux' default dual-stack sockets)."""
    if a == b or "::" in (a, b):
        return True
    return (a == "0.0.0.0" and ipaddress.ip_address(b).version == 4) or (
        b == "0.0.0.0" and ipaddress.ip_address(a).version == 4
    )


def _claim(
    build: Build,
    state: GatewayState,
    address: str,
    port: int,
    listeners: list[ListenerState],
    served: _Served,
) -> None:
    other = next(
        (
            h
            for (a, p), holders in build.holders.items()
            for h in holders
            if p == port and a != address and h is not state and _overlaps(a, address)
        ),
        None,
    )
    if other is not None:
        for listener in listeners:
            listener.refuse(
                Reason.PORT_UNAVAILABLE,
                f"port {port} on {address} overlaps {other.name}'s bind of the "
                "same port, which is older",
            )
        return
    # Claimed even when the bind failed, so the data plane keeps retrying.
    holders = build.holders.setdefault((address, port), [])
    if state not in holders:
        holders.append(state)
    hostnames = served.setdefault((address, port), {})
    failure = build.facts.bind_failures.get((address, port))
    for listener in listeners:
        if failure is not None:
            listener.refuse(Reason.PORT_UNAVAILABLE, f"cannot bind {address}:{port}: {failure}")
            continue
        holder = hostnames.get(listener.spec.hostname)
        if holder is not None and holder is not state:
            listener.refuse(
                Reason.PORT_UNAVAILABLE,
                f"port {port} on {address} already serves hostname "
                f"{listener.spec.hostname or '*'} for Gateway {holder.name}, which is older",
            )
        elif listener.accepted.status:
            hostnames[listener.spec.hostname] = state
