"""translate(resources, facts) -> Translation: every status and the routing table.

Pure and deterministic: the same documents and runtime facts give the same statuses and the
same table (SPEC.md §2-§12). Configuration problems become status conditions, never exceptions,
so one bad route never blocks the good ones (ARCHITECTURE.md).

Theory of operation. A build is a list of steps, each in its own module named after the part
of the spec it implements. The Gateway side fills one `Build` context (`context.py`):

1. `gateways`: GatewayClasses of our controller (§2), then the Gateways that use them, with
   the gateway-level checks and each listener's own (§3, §9.1, `listeners`).
2. `conflicts`: across Gateways, who serves each (address, port); compatible Gateways share
   it, the older Gateway keeps what conflicts, a failed bind is reported (§9.2).
3. `policies`: BackendTLSPolicies, before routes, since a route's backends carry the policy
   that re-encrypts to them (§7); `traffic`: ClientTrafficPolicies, on Gateways and
   listeners (API.md "Traffic policies").

Then the route side (`routes.py`), per TLSRoute:

4. `attachment`: per parentRef, attachment (§8), and ResolvedRefs with the weighted backend
   pool (§8 step 5, §9.4, `backends`); who claims each effective hostname, in precedence
   order, and each route's status (§5.3, §10.2).

And last, from both:

5. `tables`: per (address, port) and listener, the table of route targets (§10).
6. `statuses`: the Gateways' and policies' statuses (§4, §7, §12).

Incremental builds. Given the previous `Translation`, a build keeps the Gateway side whole
when none of its inputs changed (the maps of `Resources` are compared by identity, see
`Resources.updated`), recomputes only the routes a change can reach, and keeps every table and
bind whose contents did not change (the same objects, so the workers are sent only what
changed). Without one it is a full build; both give the same result.
"""

from __future__ import annotations

import attrs
from attrs import frozen

from gateway.api.status import accepted_counts
from gateway.routing.snapshot import Snapshot
from gateway.translate import routes
from gateway.translate.conflicts import process_conflicts
from gateway.translate.context import Build
from gateway.translate.facts import Facts
from gateway.translate.gateways import process_gateway_classes, process_gateways
from gateway.translate.policies import evaluate_policies
from gateway.translate.resources import Resources
from gateway.translate.statuses import finish_gateways, finish_policies
from gateway.translate.tables import build_binds
from gateway.translate.traffic import (
    backend_policy_statuses,
    client_policy_statuses,
    evaluate_backend_policies,
    evaluate_client_policies,
)

#: What the Gateway side reads of the resources; a change elsewhere keeps it.
_GATEWAY_SIDE = (
    "gateway_classes",
    "gateways",
    "reference_grants",
    "backend_tls_policies",
    "client_traffic_policies",
    "backend_traffic_policies",
    "secrets",
    "config_maps",
    "namespaces",
)


@frozen
class Translation:
    """One build: its snapshot, and what the next build may keep of it."""

    build: Build
    routes: routes.Routes
    snapshot: Snapshot
    #: (accepted, not accepted) over every status: the swap's log line, kept without a walk
    #: over 10,000 route statuses.
    counts: tuple[int, int] = (0, 0)


def translate(
    resources: Resources,
    facts: Facts,
    generation: int = 0,
    *,
    previous: Translation | None = None,
) -> Translation:
    side_changed = previous is None or not _same_gateway_side(previous.build, resources, facts)
    if previous is None or side_changed:
        build = gateway_side(resources, facts)
    else:
        # The same Gateway side, read against these resources and facts.
        build = attrs.evolve(previous.build, resources=resources, facts=facts)
    if previous is None:
        keys = resources.tls_routes.keys()
        route_side = routes.update(routes.EMPTY, build, keys, keys)
    else:
        dirty, changed = routes.affected(previous.build, build, previous.routes, side_changed)
        route_side = routes.update(previous.routes, build, dirty, changed)
    kept = None if previous is None or side_changed else previous.snapshot.binds
    binds = build_binds(build, route_side.targets, kept)
    others = dict(build.statuses)
    others.update(finish_gateways(build, route_side.attached))
    others.update(finish_policies(build, route_side.results, route_side.users))
    others.update(client_policy_statuses(build, build.client_policy_results))
    others.update(
        backend_policy_statuses(
            build, build.backend_traffic_results, route_side.results, route_side.users
        )
    )
    statuses = dict(route_side.statuses)
    statuses.update(others)
    accepted, rejected = accepted_counts(others)
    counts = (accepted + route_side.counts[0], rejected + route_side.counts[1])
    snapshot = Snapshot(generation=generation, statuses=statuses, binds=binds)
    return Translation(build=build, routes=route_side, snapshot=snapshot, counts=counts)


def gateway_side(resources: Resources, facts: Facts) -> Build:
    """Steps 1-3: everything that does not depend on routes."""
    build = Build(resources, facts)
    process_gateway_classes(build)
    process_gateways(build)
    process_conflicts(build)
    build.policies, build.policy_results = evaluate_policies(resources, facts)
    build.client_policies, build.client_policy_results = evaluate_client_policies(build)
    build.backend_traffic, build.backend_traffic_results = evaluate_backend_policies(resources)
    return build


def _same_gateway_side(before: Build, resources: Resources, facts: Facts) -> bool:
    old, new = before.resources, resources
    if any(getattr(old, name) is not getattr(new, name) for name in _GATEWAY_SIDE):
        return False
    was = before.facts
    return (
        facts.bind_address == was.bind_address
        and facts.bind_failures == was.bind_failures
        and (facts.secrets is was.secrets or facts.secrets == was.secrets)
        and (facts.ca_bundles is was.ca_bundles or facts.ca_bundles == was.ca_bundles)
    )
