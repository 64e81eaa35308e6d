"""The status of every Gateway, TLSRoute and BackendTLSPolicy of ours, from what the earlier
steps found (SPEC.md §4, §5.3, §7), stamped with generations and transition times (§12).

Pure. Runs last: attachedRoutes, shadowed hostnames and policy ancestors are known only once
routes are attached and the table is built. A route's status is a function of its own
result and of who won its hostnames, so `routes.py` restamps only the routes a change reaches.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from gateway import CONTROLLER_NAME
from gateway.api import model
from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName
from gateway.api.status import (
    Condition,
    ConditionType,
    Draft,
    GatewayStatus,
    GatewayStatusAddress,
    ListenerStatus,
    PolicyAncestorStatus,
    PolicyStatus,
    Reason,
    RouteParentStatus,
    RouteStatus,
    Status,
    stamp,
)
from gateway.translate.context import (
    Build,
    ClaimKey,
    GatewayState,
    ListenerKey,
    Parent,
    RouteResult,
    listener_problem,
)


def finish_gateways(build: Build, attached: Mapping[ListenerKey, int]) -> dict[ObjectKey, Status]:
    """Gateway statuses; `attached` counts the routes attached to each listener."""
    statuses: dict[ObjectKey, Status] = {}
    for state in build.gateways.values():
        key = ObjectKey("Gateway", *state.key)
        old = build.previous(key)
        old_listeners = (
            {lst.name: lst.conditions for lst in old.listeners}
            if isinstance(old, GatewayStatus)
            else {}
        )
        generation = state.doc.metadata.generation or 1
        now = build.facts.now
        listener_statuses = []
        programmed_any = False
        for listener in state.listeners:
            problem = listener_problem(state, listener)
            programmed_any = programmed_any or problem is None
            drafts = [
                listener.accepted,
                Draft(
                    ConditionType.PROGRAMMED,
                    problem is None,
                    Reason.PROGRAMMED if problem is None else Reason.INVALID,
                    "Listener is programmed" if problem is None else problem,
                ),
                listener.resolved_refs,
                Draft(ConditionType.CONFLICTED, False, Reason.NO_CONFLICTS, "No conflicts"),
            ]
            listener_statuses.append(
                ListenerStatus(
                    name=listener.spec.name,
                    supported_kinds=listener.supported_kinds,
                    attached_routes=attached.get((state.key, listener.spec.name), 0),
                    conditions=stamp(
                        drafts, generation, now, old_listeners.get(listener.spec.name, ())
                    ),
                )
            )
        addresses = (
            tuple(GatewayStatusAddress(type="IPAddress", value=a) for a in state.addresses)
            if programmed_any
            else ()
        )
        statuses[key] = GatewayStatus(
            addresses=addresses,
            listeners=tuple(listener_statuses),
            conditions=stamp(
                _gateway_drafts(state, programmed_any),
                generation,
                now,
                old.conditions if isinstance(old, GatewayStatus) else (),
            ),
        )
    return statuses


def _gateway_drafts(state: GatewayState, programmed_any: bool) -> list[Draft]:
    """SPEC.md §4.1: Accepted is True while at least one listener is accepted, with reason
    ListenersNotValid when some are not; Programmed while a listener serves."""
    invalid = [lst.spec.name for lst in state.listeners if not lst.accepted.status]
    if state.refusal is not None:
        accepted = state.refusal
    elif len(invalid) == len(state.listeners):
        accepted = Draft(
            ConditionType.ACCEPTED,
            False,
            Reason.LISTENERS_NOT_VALID,
            f"no listener is valid: {', '.join(invalid)}",
        )
    elif invalid:
        accepted = Draft(
            ConditionType.ACCEPTED,
            True,
            Reason.LISTENERS_NOT_VALID,
            f"some listeners are not valid: {', '.join(invalid)}",
        )
    else:
        accepted = Draft(ConditionType.ACCEPTED, True, Reason.ACCEPTED, "Gateway is accepted")
    if accepted.status and programmed_any:
        programmed = Draft(
            ConditionType.PROGRAMMED, True, Reason.PROGRAMMED, "Gateway is programmed"
        )
    else:
        programmed = Draft(
            ConditionType.PROGRAMMED,
            False,
            Reason.INVALID,
            "no listener of this Gateway is programmed",
        )
    drafts = [accepted, programmed]
    if state.client_certificate is not None:
        resolved = state.client_certificate
        unresolved = [lst.spec.name for lst in state.listeners if not lst.resolved_refs.status]
        if resolved.status and unresolved:
            resolved = Draft(
                ConditionType.RESOLVED_REFS,
                False,
                Reason.LISTENERS_NOT_RESOLVED,
                f"listeners with unresolved references: {', '.join(unresolved)}",
            )
        drafts.append(resolved)
    if state.insecure_frontend:
        drafts.append(
            Draft(
                ConditionType.INSECURE_FRONTEND_VALIDATION_MODE,
                True,
                Reason.CONFIGURATION_CHANGED,
                "client-certificate validation uses AllowInsecureFallback: "
                "clients without a valid certificate are admitted",
            )
        )
    return drafts


def route_status(
    key: NamespacedName,
    route: model.TLSRoute,
    result: RouteResult,
    claims: Mapping[ClaimKey, tuple[NamespacedName, ...]],
    previous: Status | None,
    now: str,
    fresh: dict[Hashable, RouteStatus] | None = None,
) -> RouteStatus | None:
    """One route's status; None when none of its parents is ours (no status from us).
    Parts equal to the previous status are the previous objects (cheap to make and to
    compare, and a rendered answer of them can be kept: admin/render.py).

    `fresh` is one build's memo of the statuses of routes without a previous status: routes
    attached the same way to the same parentRef (a Kafka broker's routes, say) get the same
    value, made once (a full build of 10,000 routes is mostly this)."""
    if not result.parents:
        return None
    generation = route.metadata.generation or 1
    if previous is None and fresh is not None:
        memo_key: Hashable
        if len(result.parents) == 1:  # the common case, without a list
            parent = result.parents[0]
            draft = parent.accepted
            message = _accepted_message(claims, key, parent) if draft.status else ""
            memo_key = (generation, result.resolved, parent.ref, draft, message)
        else:
            memo_key = (generation, result.resolved, *_fresh_parents(claims, key, result))
        status = fresh.get(memo_key)
        if status is None:
            status = fresh[memo_key] = _route_status(key, result, claims, None, generation, now)
        return status
    return _route_status(key, result, claims, previous, generation, now)


def _fresh_parents(
    claims: Mapping[ClaimKey, tuple[NamespacedName, ...]], key: NamespacedName, result: RouteResult
) -> list[tuple[model.ParentReference, Draft, str]]:
    """What a status without a previous one is made of, per parent."""
    return [
        (
            parent.ref,
            parent.accepted,
            _accepted_message(claims, key, parent) if parent.accepted.status else "",
        )
        for parent in result.parents
    ]


def _route_status(
    key: NamespacedName,
    result: RouteResult,
    claims: Mapping[ClaimKey, tuple[NamespacedName, ...]],
    previous: Status | None,
    generation: int,
    now: str,
) -> RouteStatus:
    old_parents = previous.parents if isinstance(previous, RouteStatus) else ()
    if isinstance(previous, RouteStatus) and _unchanged(
        key, result, claims, old_parents, generation
    ):
        return previous
    parents = []
    kept = len(old_parents) == len(result.parents)
    for index, parent in enumerate(result.parents):
        accepted = parent.accepted
        if accepted.status:
            accepted = Draft(
                accepted.type, True, Reason.ACCEPTED, _accepted_message(claims, key, parent)
            )
        old = _old_parent(old_parents, index, parent.ref)
        conditions = stamp(
            [accepted, result.resolved], generation, now, old.conditions if old else ()
        )
        if old is not None and _same(conditions, old.conditions):
            parents.append(old)
            kept = kept and old is old_parents[index]
            continue
        kept = False
        parents.append(
            RouteParentStatus(
                parent_ref=parent.ref, controller_name=CONTROLLER_NAME, conditions=conditions
            )
        )
    if kept and isinstance(previous, RouteStatus):
        return previous
    return RouteStatus(parents=tuple(parents))


def _unchanged(
    key: NamespacedName,
    result: RouteResult,
    claims: Mapping[ClaimKey, tuple[NamespacedName, ...]],
    old_parents: tuple[RouteParentStatus, ...],
    generation: int,
) -> bool:
    """The common case, checked without making anything: each parent's previous conditions
    are exactly the Accepted and ResolvedRefs this build would stamp (so stamping would give
    the previous objects back)."""
    if len(old_parents) != len(result.parents):
        return False
    resolved = result.resolved
    for parent, old in zip(result.parents, old_parents, strict=True):
        if not (old.parent_ref is parent.ref or old.parent_ref == parent.ref):
            return False
        if len(old.conditions) != 2:
            return False
        accepted, refs = old.conditions
        draft = parent.accepted
        message = _accepted_message(claims, key, parent) if draft.status else draft.message
        if (
            accepted.type != draft.type
            or accepted.status != ("True" if draft.status else "False")
            or accepted.reason != draft.reason
            or accepted.message != message
            or accepted.observed_generation != generation
            or refs.type != resolved.type
            or refs.status != ("True" if resolved.status else "False")
            or refs.reason != resolved.reason
            or refs.message != resolved.message
            or refs.observed_generation != generation
        ):
            return False
    return True


def _old_parent(
    old_parents: tuple[RouteParentStatus, ...], index: int, ref: model.ParentReference
) -> RouteParentStatus | None:
    """The previous status of this parentRef: usually at the same place, as the same object."""
    if index < len(old_parents) and (
        old_parents[index].parent_ref is ref or old_parents[index].parent_ref == ref
    ):
        return old_parents[index]
    return next((p for p in old_parents if p.parent_ref == ref), None)


def _same(a: tuple[Condition, ...], b: tuple[Condition, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _accepted_message(
    claims: Mapping[ClaimKey, tuple[NamespacedName, ...]], key: NamespacedName, parent: Parent
) -> str:
    """Say where the route attached, and which of its hostnames an older route holds
    (the losing route stays Accepted, SPEC.md §10.2)."""
    attached = parent.attached
    if len(attached) == 1:  # the common case, without a generator
        a = attached[0]
        where = f"{a.gateway.namespace}/{a.gateway.name}/{a.listener}"
    else:
        where = ", ".join(f"{a.gateway}/{a.listener}" for a in attached)
    shadowed = []
    for a in attached:
        for hostname in a.hostnames:
            keys = claims.get((a.gateway, a.listener, hostname))
            if keys and keys[0] != key:
                shadowed.append(
                    f"{hostname} on {a.gateway}/{a.listener} is served by "
                    f"{keys[0]}, which takes precedence (older, then namespace/name)"
                )
    message = f"Route is accepted on listeners {where}"
    if shadowed:
        message += "; shadowed: " + "; ".join(shadowed)
    return message


def finish_policies(
    build: Build,
    results: Mapping[NamespacedName, RouteResult],
    users: Mapping[NamespacedName, frozenset[NamespacedName]],
) -> dict[ObjectKey, Status]:
    """PolicyStatus.ancestors: one entry per Gateway of ours that routes to a targeted
    Service (SPEC.md §7), with the policy's own generation. `users` are the routes naming
    each Service."""
    statuses: dict[ObjectKey, Status] = {}
    for key, result in build.policy_results.items():
        ancestors = sorted(
            {
                a.gateway
                for ns, name, _ in result.targets
                for route in users.get(NamespacedName(ns, name), ())
                for parent in results[route].parents
                for a in parent.attached
            }
        )
        if not ancestors:
            continue  # no Gateway of ours uses it: not ours to report on
        status_key = ObjectKey("BackendTLSPolicy", *key)
        policy = build.resources.backend_tls_policies[key]
        statuses[status_key] = policy_status(
            build,
            status_key,
            [model.ParentReference(namespace=ns, name=name) for ns, name in ancestors],
            [result.accepted, result.resolved_refs],
            policy.metadata.generation or 1,
        )
    return statuses


def policy_status(
    build: Build,
    status_key: ObjectKey,
    ancestors: Iterable[model.ParentReference],
    drafts: list[Draft],
    generation: int,
) -> PolicyStatus:
    """A policy's `status.ancestors` (GEP-713): the same conditions under each ancestor, each
    keeping its transition time while it holds (SPEC.md §12)."""
    old = build.previous(status_key)
    entries = []
    for ancestor in ancestors:
        previous = (
            next((a.conditions for a in old.ancestors if a.ancestor_ref == ancestor), ())
            if isinstance(old, PolicyStatus)
            else ()
        )
        entries.append(
            PolicyAncestorStatus(
                ancestor_ref=ancestor,
                controller_name=CONTROLLER_NAME,
                conditions=stamp(drafts, generation, build.facts.now, previous),
            )
        )
    return PolicyStatus(ancestors=tuple(entries))
