"""translate(resources, facts) -> Snapshot: every status and the routing table, in one pass.

Pure and deterministic: the same documents and runtime facts give the same statuses and the
same table (SPEC.md §2-§12). Configuration problems become status conditions, never exceptions,
so one bad route never blocks the good ones (ARCHITECTURE.md).

Theory of operation. A build is a list of steps over one `Build` context (`context.py`); each
step reads what the earlier ones left there and adds its own part, and each lives in its own
module, named after the part of the spec it implements:

1. `gateways`: GatewayClasses of our controller (§2), then the Gateways that use them, with
   the gateway-level checks and each listener's own (§3, §9.1, `listeners`).
2. `conflicts`: across Gateways, who serves each (address, port); compatible Gateways share
   it, the older Gateway keeps what conflicts, a failed bind is reported (§9.2).
3. `policies`: BackendTLSPolicies, before routes, since a route's backends carry the policy
   that re-encrypts to them (§7).
4. `attachment`: per TLSRoute and parentRef, attachment (§8) and ResolvedRefs with the
   weighted backend pool (§8 step 5, §9.4, `backends`).
5. `tables`: per listener, the winning route of each effective hostname, and the table (§10).
6. `statuses`: every status, stamped with generations and transition times (§4, §5.3, §12).

Mutation is confined to the `Build` and the listener/Gateway states in it, all made here and
dropped when `translate` returns; what leaves is frozen (`Snapshot`, the status values).
"""

from __future__ import annotations

from gateway.routing.snapshot import Snapshot
from gateway.translate.attachment import process_routes
from gateway.translate.conflicts import process_conflicts
from gateway.translate.context import Build
from gateway.translate.facts import Facts
from gateway.translate.gateways import process_gateway_classes, process_gateways
from gateway.translate.policies import evaluate_policies
from gateway.translate.resources import Resources
from gateway.translate.statuses import finish_gateways, finish_policies, finish_routes
from gateway.translate.tables import build_binds


def translate(resources: Resources, facts: Facts, generation: int = 0) -> Snapshot:
    build = Build(resources, facts)
    process_gateway_classes(build)
    process_gateways(build)
    process_conflicts(build)
    build.policies, build.policy_results = evaluate_policies(resources, facts)
    process_routes(build)
    binds = build_binds(build)
    finish_gateways(build)
    finish_routes(build)
    finish_policies(build)
    return Snapshot(generation=generation, statuses=build.statuses, binds=binds)
