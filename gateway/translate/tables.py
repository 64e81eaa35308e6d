"""The routing table: per (address, port), its listeners, and per listener the route that
wins each effective hostname (SPEC.md §10).

Pure. More specific hostnames are separate keys; for one hostname the older route wins, then
namespace/name (SPEC.md §10.2), and the others are listed as shadowed (`routes.py` keeps each
hostname's claimants in that order). A listener that cannot serve keeps its place with
`reject` set, so the connections it wins are closed rather than handed to a broader listener
(SPEC.md §10.1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.api import model
from gateway.api.names import NamespacedName, TLSMode, alpn_protocols
from gateway.api.status import Reason
from gateway.routing.snapshot import Backend, Bind, ListenerTable, RouteTarget
from gateway.translate.context import Build, GatewayState, ListenerKey, age, listener_problem
from gateway.translate.listeners import ListenerState
from gateway.translate.references import certificate_of

#: Per listener, its effective hostnames and the route target of each.
Targets = Mapping[ListenerKey, Mapping[str, RouteTarget]]


#: The routes of a listener no route attaches to: one object, so that such a listener's table
#: (and its bind) is kept from build to build like any other. Never changed in place (every
#: writer copies: routes.py, routing/patch.py).
_NO_ROUTES: Mapping[str, RouteTarget] = {}


def route_precedence(route: model.TLSRoute) -> tuple[str, str, str]:
    # Upstream issue #5120 may put the specificity of the route's *original* hostname before
    # the timestamp (SPEC.md §10.2); that tie-breaker would be inserted first in this key.
    return age(route.metadata)


def route_target(
    hostname: str, claimants: Sequence[NamespacedName], backends: tuple[Backend, ...]
) -> RouteTarget:
    """The target of one hostname: its first claimant (the winner, whose `backends` these
    are) and the shadowed rest."""
    winner = claimants[0]
    return RouteTarget(
        route=f"{winner.namespace}/{winner.name}",
        hostname=hostname,
        backends=backends,
        shadowed=tuple(str(k) for k in claimants[1:]) if len(claimants) > 1 else (),
    )


def _served(holders: Sequence[GatewayState], port: int) -> list[tuple[GatewayState, ListenerState]]:
    return [
        (state, listener)
        for state in holders
        for listener in state.listeners
        if listener.is_tls
        and listener.spec.port == port
        and listener.accepted.reason != Reason.PORT_UNAVAILABLE
    ]


def build_binds(
    build: Build,
    targets: Targets,
    previous: Mapping[tuple[str, int], Bind] | None = None,
) -> dict[tuple[str, int], Bind]:
    """The binds of this build. With `previous` (a build with this same Gateway side), a
    listener whose targets are the same object keeps its table, and a bind all of whose
    tables are kept is kept: unchanged parts of the table stay identical, which is how the
    workers are sent only what changed."""
    out: dict[tuple[str, int], Bind] = {}
    for (address, port), holders in sorted(build.holders.items()):
        old = previous.get((address, port)) if previous is not None else None
        kept = {(t.gateway, t.name): t for t in old.listeners} if old is not None else {}
        tables = []
        for state, listener in _served(holders, port):
            routes = targets.get((state.key, listener.spec.name), _NO_ROUTES)
            table = kept.get((state.name, listener.spec.name))
            if table is None or table.routes is not routes:
                table = _listener_table(build, state, listener, routes)
            tables.append(table)
        error = build.facts.bind_failures.get((address, port))
        if (
            old is not None
            and old.error == error
            and len(old.listeners) == len(tables)
            and all(a is b for a, b in zip(old.listeners, tables, strict=True))
        ):
            out[(address, port)] = old
            continue
        out[(address, port)] = Bind(
            address=address,
            port=port,
            # The Gateways that serve listeners here (the oldest claimant when none does).
            gateways=tuple(dict.fromkeys(t.gateway for t in tables)) or (holders[0].name,),
            listeners=tuple(tables),
            error=error,
        )
    return out


def _listener_table(
    build: Build,
    state: GatewayState,
    listener: ListenerState,
    routes: Mapping[str, RouteTarget],
) -> ListenerTable:
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
        client=build.client_policies.get((state.key, listener.spec.name)),
        alpn=alpn_protocols(listener.spec.tls.options) if listener.spec.tls else (),
        backend_client_certificate=(
            certificate_of(build.resources, state.client_certificate_ref)
            if state.client_certificate_ref is not None
            else None
        ),
        reject=listener_problem(state, listener),
        routes=routes,
    )
