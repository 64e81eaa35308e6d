"""The routing table: per (address, port), its listeners, and per listener the route that
wins each effective hostname (SPEC.md §10).

Pure. More specific hostnames are separate keys; for one hostname the older route wins, then
namespace/name (SPEC.md §10.2), and the others are listed as shadowed. A listener that cannot
serve keeps its place with `reject` set, so the connections it wins are closed rather than
handed to a broader listener (SPEC.md §10.1).
"""

from __future__ import annotations

from gateway.api import model
from gateway.api.names import NamespacedName, TLSMode
from gateway.api.status import Reason
from gateway.routing import hostnames
from gateway.routing.snapshot import Bind, ListenerTable, RouteTarget
from gateway.translate.context import Build, GatewayState, age, listener_problem
from gateway.translate.listeners import ListenerState
from gateway.translate.references import certificate_of


def build_binds(build: Build) -> dict[tuple[str, int], Bind]:
    out: dict[tuple[str, int], Bind] = {}
    for (address, port), holders in sorted(build.holders.items()):
        tables = tuple(
            _listener_table(build, state, listener)
            for state in holders
            for listener in state.listeners
            if listener.is_tls
            and listener.spec.port == port
            and listener.accepted.reason != Reason.PORT_UNAVAILABLE
        )
        out[(address, port)] = Bind(
            address=address,
            port=port,
            # The Gateways that serve listeners here (the oldest claimant when none does).
            gateways=tuple(dict.fromkeys(t.gateway for t in tables)) or (holders[0].name,),
            listeners=tables,
            error=build.facts.bind_failures.get((address, port)),
        )
    return out


def _route_precedence(route: model.TLSRoute) -> tuple[str, str, str]:
    # Upstream issue #5120 may put the specificity of the route's *original* hostname before
    # the timestamp (SPEC.md §10.2); that tie-breaker would be inserted first in this key.
    return age(route.metadata)


def _listener_table(build: Build, state: GatewayState, listener: ListenerState) -> ListenerTable:
    claims: dict[str, list[NamespacedName]] = {}
    for route_key in sorted(
        listener.attached, key=lambda k: _route_precedence(build.resources.tls_routes[k])
    ):
        for parent in build.routes[route_key].parents:
            for attached_state, attached, effective in parent.attached:
                if attached is listener and attached_state is state:
                    for hostname in effective:
                        claims.setdefault(hostname, [])
                        if route_key not in claims[hostname]:
                            claims[hostname].append(route_key)
    targets = []
    for hostname, keys in sorted(
        claims.items(), key=lambda kv: (hostnames.specificity(kv[0]), kv[0])
    ):
        build.winners[(state.key, listener.spec.name, hostname)] = keys
        winner = keys[0]
        targets.append(
            RouteTarget(
                route=str(winner),
                hostname=hostname,
                backends=build.routes[winner].backends,
                shadowed=tuple(str(k) for k in keys[1:]),
            )
        )
    return ListenerTable(
        gateway=state.name,
        name=listener.spec.name,
        hostname=listener.spec.hostname,
        mode=listener.spec.tls.mode if listener.spec.tls else TLSMode.PASSTHROUGH.value,
        port=listener.spec.port,
        certificates=tuple(
            certificate
            for key in listener.certificates
            if (certificate := certificate_of(build.resources, key)) is not None
        ),
        frontend=listener.frontend,
        backend_client_certificate=(
            certificate_of(build.resources, state.client_certificate_ref)
            if state.client_certificate_ref is not None
            else None
        ),
        reject=listener_problem(state, listener),
        routes=tuple(targets),
    )
