"""The route side of a build, kept from one build to the next: every route's result, who
claims each effective hostname, the listeners' route targets and the routes' statuses.

Pure. At 10,000 routes, recomputing every route on every write is most of a second; a write
touches one route, or one Service that a few routes name. So a build starts from the previous
one's `Routes`, finds the routes a change can reach (`affected`), and recomputes those only
(`update`); a full build is the same `update` from `EMPTY` with every route affected, so the
two cannot drift apart (tests/test_incremental.py checks that they agree on random changes).

What a route's result depends on, and so what makes it affected:
- its own document;
- the Services its backendRefs name and their EndpointSlices (index `users`);
- what `context.attachment_view` shows of the Gateways its parentRefs name (`parents_of`);
- the BackendTLSPolicy chosen for those Services (`users` again);
- ReferenceGrants, when a backendRef crosses namespaces;
- the labels of its namespace (allowedRoutes selectors).
Its status also depends on who won the hostnames it claims (a shadowed route says by whom),
so every claimant of a hostname whose claimants changed is restamped.

Nothing here is changed in place once made: `update` copies the maps it changes, so a dry run
built from the same `Routes` leaves them as they were.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

from attrs import frozen

from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName, new_tuple
from gateway.api.status import RouteStatus, Status, accepted_count
from gateway.routing.snapshot import RouteTarget
from gateway.translate.attachment import route_result
from gateway.translate.context import (
    Build,
    ClaimKey,
    ListenerKey,
    RouteResult,
    attachment_view,
)
from gateway.translate.resources import Resources, service_of
from gateway.translate.statuses import route_status
from gateway.translate.tables import route_precedence, route_target

_Keys = frozenset[NamespacedName]


@frozen
class Routes:
    results: Mapping[NamespacedName, RouteResult]
    #: Each effective hostname on a listener -> the routes claiming it, the winner first.
    claims: Mapping[ClaimKey, tuple[NamespacedName, ...]]
    #: Each listener -> hostname -> its target (only listeners some route attached to).
    targets: Mapping[ListenerKey, Mapping[str, RouteTarget]]
    #: Each listener -> how many routes attached to it (its attachedRoutes).
    attached: Mapping[ListenerKey, int]
    #: Each Service -> the routes whose backendRefs name it.
    users: Mapping[NamespacedName, _Keys]
    #: Each Gateway -> the routes whose parentRefs name it.
    parents_of: Mapping[NamespacedName, _Keys]
    #: The TLSRoute statuses of ours.
    statuses: Mapping[ObjectKey, Status]
    #: (accepted, not accepted) parents over those statuses, for the swap's log line.
    counts: tuple[int, int] = (0, 0)


EMPTY = Routes({}, {}, {}, {}, {}, {}, {})


def changed_keys(old: Resources, new: Resources, attr: str) -> set[Any]:
    """Keys of map `attr` whose document was added, replaced or removed: as `updated` said,
    else by comparing the maps (documents by identity: an unchanged one is the same object)."""
    known = new.changed_since(old, attr)
    if known is not None:
        return set(known)
    before: Mapping[Any, object] = getattr(old, attr)
    after: Mapping[Any, object] = getattr(new, attr)
    changed = {key for key, doc in after.items() if before.get(key) is not doc}
    changed.update(key for key in before if key not in after)
    return changed


def affected(
    before: Build, after: Build, routes: Routes, gateway_side_changed: bool
) -> tuple[set[NamespacedName], set[NamespacedName]]:
    """(the routes to recompute, the routes whose own document changed)."""
    old, new = before.resources, after.resources
    changed = changed_keys(old, new, "tls_routes")
    dirty = set(changed)
    empty: _Keys = frozenset()
    for service in changed_keys(old, new, "services"):
        dirty |= routes.users.get(service, empty)
    for key in changed_keys(old, new, "endpoint_slices"):
        for eps in (old.endpoint_slices.get(key), new.endpoint_slices.get(key)):
            if eps is not None and (owner := service_of(eps)) is not None:
                dirty |= routes.users.get(owner, empty)
    if not gateway_side_changed:
        return dirty, changed
    for gateway in old.gateways.keys() | new.gateways.keys() | routes.parents_of.keys():
        if attachment_view(before, gateway) != attachment_view(after, gateway):
            dirty |= routes.parents_of.get(gateway, empty)
    for target in before.policies.keys() | after.policies.keys():
        if before.policies.get(target) != after.policies.get(target):
            dirty |= routes.users.get(NamespacedName(target[0], target[1]), empty)
    for service in before.backend_traffic.keys() | after.backend_traffic.keys():
        if before.backend_traffic.get(service) != after.backend_traffic.get(service):
            dirty |= routes.users.get(NamespacedName(*service), empty)
    if old.reference_grants is not new.reference_grants:
        dirty.update(key for key, result in routes.results.items() if result.cross_namespace)
    namespaces = {n for n in changed_keys(old, new, "namespaces") if isinstance(n, str)}
    if namespaces:
        dirty.update(key for key in routes.results if key.namespace in namespaces)
    return dirty, changed


class _Update:
    """The working copies of one `update`: each map is copied the first time it changes."""

    def __init__(self, previous: Routes, build: Build) -> None:
        self.build = build
        self.results = dict(previous.results)
        self.claims = dict(previous.claims)
        self.attached = dict(previous.attached)
        self.statuses = dict(previous.statuses)
        self.targets = dict(previous.targets)
        self.previous = previous
        self.routes = build.resources.tls_routes
        self.previous_statuses = build.facts.previous
        self.now = build.facts.now
        #: The listeners' target maps copied (and so changed) by this update.
        self._tables: dict[ListenerKey, dict[str, RouteTarget]] = {}
        self._index: dict[str, dict[NamespacedName, set[NamespacedName]]] = {
            "users": {},
            "parents_of": {},
        }
        #: Claims whose claimants changed (their targets are redone, their claimants restamped).
        self.touched: set[ClaimKey] = set()
        self.restamp: set[NamespacedName] = set()
        self.accepted, self.rejected = previous.counts
        #: This update's statuses of routes without a previous one, and their counts: most
        #: routes of a full build share a few (`route_status`).
        self.fresh: dict[Hashable, RouteStatus] = {}
        self._counts: dict[int, tuple[RouteStatus, tuple[int, int]]] = {}

    def index(self, name: str, key: NamespacedName) -> set[NamespacedName]:
        working = self._index[name]
        members = working.get(key)
        if members is None:
            frozen_index: Mapping[NamespacedName, _Keys] = getattr(self.previous, name)
            members = working[key] = set(frozen_index.get(key, ()))
        return members

    def frozen_index(self, name: str) -> dict[NamespacedName, _Keys]:
        out: dict[NamespacedName, _Keys] = dict(getattr(self.previous, name))
        for key, members in self._index[name].items():
            if members:
                out[key] = frozenset(members)
            else:
                out.pop(key, None)
        return out

    def remove(self, key: NamespacedName, result: RouteResult) -> None:
        del self.results[key]
        for claim in set(result.claims()):
            kept = tuple(k for k in self.claims[claim] if k != key)
            if kept:
                self.claims[claim] = kept
            else:
                del self.claims[claim]
            self.touched.add(claim)
        for listener in set(result.listeners()):
            self.attached[listener] -= 1
            if not self.attached[listener]:
                del self.attached[listener]
        for service in result.services:
            self.index("users", service).discard(key)
        for gateway in result.gateways:
            self.index("parents_of", gateway).discard(key)

    def add(self, key: NamespacedName, result: RouteResult) -> None:
        self.results[key] = result
        routes = self.routes
        claims = result.claims()
        for claim in claims if len(claims) < 2 else set(claims):
            claimants = self.claims.get(claim)
            if claimants is None:
                self.claims[claim] = (key,)  # the common case: a hostname of its own
            else:
                ordered = list(claimants)
                bisect.insort(ordered, key, key=lambda k: route_precedence(routes[k]))
                self.claims[claim] = tuple(ordered)
            self.touched.add(claim)
        listeners = result.listeners()
        for listener in listeners if len(listeners) < 2 else set(listeners):
            self.attached[listener] = self.attached.get(listener, 0) + 1
        index = self.index
        for service in result.services:
            index("users", service).add(key)
        for gateway in result.gateways:
            index("parents_of", gateway).add(key)

    def retarget(self, claim: ClaimKey) -> None:
        gateway, listener, hostname = claim
        key = (gateway, listener)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = dict(self.targets.get(key, {}))
            self.targets[key] = table
        # A route that left a claim is being recomputed itself: only those that stay (or
        # join) may need a new status (who wins the hostname now).
        claimants = self.claims.get(claim)
        if not claimants:
            table.pop(hostname, None)
            return
        self.restamp.update(claimants)
        target = route_target(hostname, claimants, self.results[claimants[0]].backends)
        old = table.get(hostname)
        if old is None or old != target:  # an equal target stays the same object
            table[hostname] = target

    def stamp(self, key: NamespacedName) -> None:
        status_key = new_tuple(ObjectKey, ("TLSRoute", key.namespace, key.name))
        route = self.routes.get(key)
        status = None
        if route is not None:
            status = route_status(
                key,
                route,
                self.results[key],
                self.claims,
                self.previous_statuses.get(status_key),
                self.now,
                self.fresh,
            )
        old = self.statuses.get(status_key)
        if old is not None:
            if status is old or status == old:
                return
            accepted, rejected = self.count(old)
            self.accepted, self.rejected = self.accepted - accepted, self.rejected - rejected
        if status is None:
            self.statuses.pop(status_key, None)
            return
        self.statuses[status_key] = status
        accepted, rejected = self.count(status)
        self.accepted, self.rejected = self.accepted + accepted, self.rejected + rejected

    def count(self, status: Status) -> tuple[int, int]:
        """`accepted_count`, once per shared status (an id is safe: the memo keeps it alive)."""
        if not isinstance(status, RouteStatus):
            return accepted_count(status)
        known = self._counts.get(id(status))
        if known is None:
            known = self._counts[id(status)] = (status, accepted_count(status))
        return known[1]

    def finish(self) -> Routes:
        for key, table in self._tables.items():
            if not table:
                del self.targets[key]  # no route is attached there any more
        return Routes(
            results=self.results,
            claims=self.claims,
            targets=self.targets,
            attached=self.attached,
            users=self.frozen_index("users"),
            parents_of=self.frozen_index("parents_of"),
            statuses=self.statuses,
            counts=(self.accepted, self.rejected),
        )


def update(
    previous: Routes,
    build: Build,
    dirty: Iterable[NamespacedName],
    changed: Collection[NamespacedName],
) -> Routes:
    """`previous` with the `dirty` routes recomputed against `build` (`changed`: those whose
    own document changed, which are restamped even when their result is the same)."""
    work = _Update(previous, build)
    routes = build.resources.tls_routes
    fresh: dict[NamespacedName, RouteResult] = {}
    for key in dirty:
        old = previous.results.get(key)
        route = routes.get(key)
        new = route_result(build, key, route) if route is not None else None
        if old is not None and new is not None and key not in changed and old == new:
            continue  # an EndpointSlice update that left its endpoints as they were, say
        if old is not None:
            work.remove(key, old)
        if new is not None:
            fresh[key] = new
        work.restamp.add(key)
    # Every removal before any insertion: claimants are ordered by their current documents.
    for key, result in fresh.items():
        work.add(key, result)
    for claim in work.touched:
        work.retarget(claim)
    for key in work.restamp:
        work.stamp(key)
    return work.finish()
