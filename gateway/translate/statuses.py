"""The status of every Gateway, TLSRoute and BackendTLSPolicy of ours, from what the earlier
steps found (SPEC.md §4, §5.3, §7), stamped with generations and transition times (§12).

Pure. Runs last: attachedRoutes, shadowed hostnames and policy ancestors are known only once
routes are attached and the table is built.
"""

from __future__ import annotations

from gateway import CONTROLLER_NAME
from gateway.api import model
from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName
from gateway.api.status import (
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
    stamp,
)
from gateway.translate.context import Build, GatewayState, Parent, listener_problem


def finish_gateways(build: Build) -> None:
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
                    attached_routes=len(listener.attached),
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
        build.statuses[key] = GatewayStatus(
            addresses=addresses,
            listeners=tuple(listener_statuses),
            conditions=stamp(
                _gateway_drafts(state, programmed_any),
                generation,
                now,
                old.conditions if isinstance(old, GatewayStatus) else (),
            ),
        )


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


def finish_routes(build: Build) -> None:
    for key, route in build.resources.tls_routes.items():
        status_key = ObjectKey("TLSRoute", *key)
        old = build.previous(status_key)
        old_parents = old.parents if isinstance(old, RouteStatus) else ()
        generation = route.metadata.generation or 1
        state = build.routes[key]
        parents = []
        for parent in state.parents:
            accepted = parent.accepted
            if accepted.status:
                accepted = Draft(
                    accepted.type, True, Reason.ACCEPTED, _accepted_message(build, key, parent)
                )
            previous = next((p.conditions for p in old_parents if p.parent_ref == parent.ref), ())
            parents.append(
                RouteParentStatus(
                    parent_ref=parent.ref,
                    controller_name=CONTROLLER_NAME,
                    conditions=stamp(
                        [accepted, state.resolved], generation, build.facts.now, previous
                    ),
                )
            )
        if parents:  # a route none of whose parents is ours gets no status from us
            build.statuses[status_key] = RouteStatus(parents=tuple(parents))


def _accepted_message(build: Build, key: NamespacedName, parent: Parent) -> str:
    """Say where the route attached, and which of its hostnames an older route holds
    (the losing route stays Accepted, SPEC.md §10.2)."""
    where = ", ".join(
        f"{state.name}/{listener.spec.name}" for state, listener, _ in parent.attached
    )
    shadowed = []
    for state, listener, effective in parent.attached:
        for hostname in effective:
            keys = build.winners.get((state.key, listener.spec.name, hostname), [key])
            if keys and keys[0] != key:
                shadowed.append(
                    f"{hostname} on {state.name}/{listener.spec.name} is served by "
                    f"{keys[0]}, which takes precedence (older, then namespace/name)"
                )
    message = f"Route is accepted on listeners {where}"
    if shadowed:
        message += "; shadowed: " + "; ".join(shadowed)
    return message


def finish_policies(build: Build) -> None:
    """PolicyStatus.ancestors: one entry per Gateway of ours that routes to a targeted
    Service (SPEC.md §7), with the policy's own generation."""
    users: dict[NamespacedName, set[NamespacedName]] = {}
    for key, route in build.resources.tls_routes.items():
        gateways = {
            state.key for parent in build.routes[key].parents for state, _, _ in parent.attached
        }
        for rule in route.spec.rules:
            for ref in rule.backend_refs:
                if (ref.group, ref.kind) == ("", "Service"):
                    service = NamespacedName(ref.namespace or key.namespace, ref.name)
                    users.setdefault(service, set()).update(gateways)
    for key, result in build.policy_results.items():
        ancestors = sorted(
            {g for ns, name, _ in result.targets for g in users.get(NamespacedName(ns, name), ())}
        )
        if not ancestors:
            continue  # no Gateway of ours uses it: not ours to report on
        status_key = ObjectKey("BackendTLSPolicy", *key)
        old = build.previous(status_key)
        policy = build.resources.backend_tls_policies[key]
        entries = []
        for namespace, name in ancestors:
            ancestor = model.ParentReference(namespace=namespace, name=name)
            previous = (
                next((a.conditions for a in old.ancestors if a.ancestor_ref == ancestor), ())
                if isinstance(old, PolicyStatus)
                else ()
            )
            entries.append(
                PolicyAncestorStatus(
                    ancestor_ref=ancestor,
                    controller_name=CONTROLLER_NAME,
                    conditions=stamp(
                        [result.accepted, result.resolved_refs],
                        policy.metadata.generation or 1,
                        build.facts.now,
                        previous,
                    ),
                )
            )
        build.statuses[status_key] = PolicyStatus(ancestors=tuple(entries))
