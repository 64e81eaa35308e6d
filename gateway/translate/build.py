"""translate(resources, runtime) -> Snapshot: every status and the routing table, in one pass.

Pure and deterministic: the same documents and runtime facts give the same statuses and the
same table (SPEC.md §2-§12). Configuration problems become status conditions, never exceptions,
so one bad route never blocks the good ones (ARCHITECTURE.md).

Order of the build:
1. GatewayClasses of our controller, and the Gateways that use them (§2).
2. Per Gateway, the listener checks of §9.1 (`listeners.evaluate_gateway`).
3. Across Gateways, who serves each (address, port): compatible Gateways share it, the older
   Gateway keeps what conflicts (§9.2 "Across Gateways").
4. Per TLSRoute and parentRef, attachment (§8) and ResolvedRefs (§8 step 5).
5. Per listener, the winning route of each effective hostname (§10.2), and the table.
6. Conditions stamped with generations and transition times (§12).
"""

from __future__ import annotations

import ipaddress

from attrs import define, field

from gateway import CONTROLLER_NAME, GATEWAY_GROUP
from gateway.api import model
from gateway.api.kinds import ObjectKey
from gateway.api.status import (
    ConditionType,
    Draft,
    GatewayClassStatus,
    GatewayStatus,
    GatewayStatusAddress,
    ListenerStatus,
    PolicyAncestorStatus,
    PolicyStatus,
    Reason,
    RouteParentStatus,
    RouteStatus,
    Status,
    SupportedFeature,
    stamp,
)
from gateway.routing import hostnames
from gateway.routing.snapshot import Backend, BackendTLS, Bind, ListenerTable, RouteTarget, Snapshot
from gateway.translate.backends import resolve_backends
from gateway.translate.facts import Runtime
from gateway.translate.listeners import (
    TLS_ROUTE_KIND,
    GatewayState,
    ListenerState,
    evaluate_gateway,
)
from gateway.translate.policies import PolicyResult, Target, evaluate_policies
from gateway.translate.resources import NamespacedName, Resources, selector_matches

#: SPEC.md §13, sorted as the spec asks for `status.supportedFeatures`.
SUPPORTED_FEATURES = (
    "Gateway",
    "ReferenceGrant",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
)


def translate(resources: Resources, runtime: Runtime, generation: int = 0) -> Snapshot:
    build = _Build(resources, runtime)
    build.gateway_classes()
    build.gateways()
    build.claim_ports()
    build.routes()
    binds = build.binds()
    build.finish_gateways()
    build.finish_routes()
    build.finish_policies()
    return Snapshot(generation=generation, statuses=build.statuses, binds=binds)


def _age(metadata: model.ObjectMeta) -> tuple[str, str, str]:
    """Conflict precedence: older creationTimestamp, then namespace/name (SPEC.md §11.2)."""
    return (metadata.creation_timestamp or "", metadata.namespace or "", metadata.name)


def _route_precedence(route: model.TLSRoute) -> tuple[str, str, str]:
    # Upstream issue #5120 may put the specificity of the route's *original* hostname before
    # the timestamp (SPEC.md §10.2); that tie-breaker would be inserted first in this key.
    return _age(route.metadata)


def _overlaps(a: str, b: str) -> bool:
    """Two bind addresses collide on one port: equal, or one is a wildcard covering the other
    ("::" covers both families on Linux' default dual-stack sockets)."""
    if a == b or "::" in (a, b):
        return True
    return (a == "0.0.0.0" and ipaddress.ip_address(b).version == 4) or (
        b == "0.0.0.0" and ipaddress.ip_address(a).version == 4
    )


@define
class _Parent:
    """One managed parentRef of a route: its Accepted draft and where it attached."""

    ref: model.ParentReference
    accepted: Draft
    attached: list[tuple[GatewayState, ListenerState, tuple[str, ...]]] = field(factory=list)


@define
class _Build:
    resources: Resources
    runtime: Runtime
    statuses: dict[ObjectKey, Status] = field(factory=dict)
    our_classes: dict[str, bool] = field(factory=dict)
    states: dict[NamespacedName, GatewayState] = field(factory=dict)
    #: (address, port) -> the Gateway holding it.
    holders: dict[tuple[str, int], list[GatewayState]] = field(factory=dict)
    route_parents: dict[NamespacedName, list[_Parent]] = field(factory=dict)
    route_resolved: dict[NamespacedName, Draft] = field(factory=dict)
    route_backends: dict[NamespacedName, tuple[Backend, ...]] = field(factory=dict)
    #: (gateway, listener name, effective hostname) -> (winner, [losers]) route keys.
    winners: dict[tuple[NamespacedName, str, str], list[NamespacedName]] = field(factory=dict)
    policies: dict[Target, BackendTLS] = field(factory=dict)
    policy_results: dict[NamespacedName, PolicyResult] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.policies, self.policy_results = evaluate_policies(self.resources, self.runtime)

    def previous(self, key: ObjectKey) -> Status | None:
        return self.runtime.previous.get(key)

    # --- 1. GatewayClasses (SPEC.md §2) ----------------------------------------------------

    def gateway_classes(self) -> None:
        for name, gwc in self.resources.gateway_classes.items():
            if gwc.spec.controller_name != CONTROLLER_NAME:
                continue  # another controller's class: not ours to write (§2)
            if gwc.spec.parameters_ref is not None:
                ref = gwc.spec.parameters_ref
                accepted = Draft(
                    ConditionType.ACCEPTED,
                    False,
                    Reason.INVALID_PARAMETERS,
                    f"parametersRef {ref.group}/{ref.kind} {ref.name!r} is not "
                    "supported by tlsgate",
                )
            else:
                accepted = Draft(
                    ConditionType.ACCEPTED,
                    True,
                    Reason.ACCEPTED,
                    "GatewayClass is accepted by tlsgate",
                )
            self.our_classes[name] = accepted.status
            key = ObjectKey("GatewayClass", "", name)
            old = self.previous(key)
            self.statuses[key] = GatewayClassStatus(
                conditions=stamp(
                    [accepted],
                    gwc.metadata.generation or 1,
                    self.runtime.now,
                    old.conditions if isinstance(old, GatewayClassStatus) else (),
                ),
                supported_features=tuple(SupportedFeature(name=f) for f in SUPPORTED_FEATURES),
            )

    # --- 2. Gateways and listeners (SPEC.md §3, §9.1) --------------------------------------

    def gateways(self) -> None:
        for key, gateway in self.resources.gateways.items():
            if self.our_classes.get(gateway.spec.gateway_class_name):
                self.states[key] = evaluate_gateway(key, gateway, self.resources, self.runtime)

    # --- 3. Ports across Gateways (SPEC.md §9.2) -------------------------------------------

    def claim_ports(self) -> None:
        """Who serves each (address, port) (SPEC.md §9.2 "Across Gateways").

        Gateways on the very same address and port share one socket when their listeners are
        compatible (distinct hostnames): the bind is a merged set, as the spec allows, and the
        most specific listener of the set wins each connection. A listener whose hostname an
        older Gateway already serves there, or whose address overlaps another Gateway's (a
        wildcard and a specific address cannot both be bound), gets PortUnavailable naming
        the older Gateway. A failed bind is PortUnavailable too.
        """
        served: dict[tuple[str, int], dict[str | None, GatewayState]] = {}
        for state in sorted(self.states.values(), key=lambda s: _age(s.doc.metadata)):
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
                    self._claim(state, address, port, listeners, served)

    def _claim(
        self,
        state: GatewayState,
        address: str,
        port: int,
        listeners: list[ListenerState],
        served: dict[tuple[str, int], dict[str | None, GatewayState]],
    ) -> None:
        other = next(
            (
                h
                for (a, p), holders in self.holders.items()
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
        holders = self.holders.setdefault((address, port), [])
        if state not in holders:
            holders.append(state)
        hostnames = served.setdefault((address, port), {})
        failure = self.runtime.bind_failures.get((address, port))
        for listener in listeners:
            if failure is not None:
                listener.refuse(Reason.PORT_UNAVAILABLE, f"cannot bind {address}:{port}: {failure}")
                continue
            holder = hostnames.get(listener.spec.hostname)
            if holder is not None and holder is not state:
                listener.refuse(
                    Reason.PORT_UNAVAILABLE,
                    f"port {port} on {address} already serves hostname "
                    f"{listener.spec.hostname or '*'} for Gateway {holder.name}, "
                    "which is older",
                )
            elif listener.accepted.status:
                hostnames[listener.spec.hostname] = state

    # --- 4. Routes (SPEC.md §8) ------------------------------------------------------------

    def routes(self) -> None:
        for key, route in self.resources.tls_routes.items():
            self.route_resolved[key], self.route_backends[key] = resolve_backends(
                key, route, self.resources, self.policies
            )
            self.route_parents[key] = [
                parent
                for ref in route.spec.parent_refs or ()
                if (parent := self._attach(key, route, ref)) is not None
            ]

    def _attach(
        self, key: NamespacedName, route: model.TLSRoute, ref: model.ParentReference
    ) -> _Parent | None:
        def refused(reason: Reason, message: str) -> _Parent:
            return _Parent(ref, Draft(ConditionType.ACCEPTED, False, reason, message))

        if (ref.group, ref.kind) != (GATEWAY_GROUP, "Gateway"):
            return None  # a parent kind tlsgate does not implement: not ours (§5.2)
        gateway_key = (ref.namespace or key[0], ref.name)
        gateway = self.resources.gateways.get(gateway_key)
        if gateway is None:
            return refused(
                Reason.NO_MATCHING_PARENT,
                f"Gateway {gateway_key[0]}/{gateway_key[1]} does not exist",
            )
        state = self.states.get(gateway_key)
        if state is None:
            return None  # another controller's Gateway: its status is not ours to write
        relevant = [
            lst
            for lst in state.listeners
            if (ref.section_name is None or lst.spec.name == ref.section_name)
            and (ref.port is None or lst.spec.port == ref.port)
        ]
        if not relevant:
            wanted = " and ".join(
                part
                for part in (
                    f"sectionName {ref.section_name!r}" if ref.section_name else "",
                    f"port {ref.port}" if ref.port else "",
                )
                if part
            )
            return refused(
                Reason.NO_MATCHING_PARENT, f"Gateway {state.name} has no listener with {wanted}"
            )
        allowed = [lst for lst in relevant if self._allows(state, lst, key[0])]
        if not allowed:
            return refused(
                Reason.NOT_ALLOWED_BY_LISTENERS,
                f"no listener of Gateway {state.name} among "
                f"{', '.join(lst.spec.name for lst in relevant)} allows a TLSRoute "
                f"from namespace {key[0]!r}",
            )
        parent = _Parent(ref, Draft(ConditionType.ACCEPTED, True, Reason.ACCEPTED, ""))
        for listener in allowed:
            effective = tuple(
                dict.fromkeys(
                    h
                    for host in route.spec.hostnames or ()
                    if (h := hostnames.intersect(listener.spec.hostname, host)) is not None
                )
            )
            if effective:
                parent.attached.append((state, listener, effective))
                listener.attached.add(key)
        if not parent.attached:
            return refused(
                Reason.NO_MATCHING_LISTENER_HOSTNAME,
                "no route hostname matches the hostname of any allowed listener "
                f"({', '.join(lst.spec.hostname or '*' for lst in allowed)})",
            )
        return parent

    def _allows(self, state: GatewayState, listener: ListenerState, namespace: str) -> bool:
        """Route kind and namespace checks of SPEC.md §8 step 3."""
        if TLS_ROUTE_KIND not in listener.supported_kinds:
            return False
        namespaces = listener.spec.allowed_routes.namespaces
        if namespaces.from_ == "All":
            return True
        if namespaces.from_ == "Selector":
            # A Selector without a selector matches nothing (SPEC.md §3.2).
            return namespaces.selector is not None and selector_matches(
                namespaces.selector, self.resources.namespace_labels(namespace)
            )
        return namespace == state.key[0]

    # --- 5. The table (SPEC.md §10) --------------------------------------------------------

    def binds(self) -> dict[tuple[str, int], Bind]:
        out: dict[tuple[str, int], Bind] = {}
        for (address, port), holders in sorted(self.holders.items()):
            tables = tuple(
                self._listener_table(state, listener)
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
                error=self.runtime.bind_failures.get((address, port)),
            )
        return out

    def _listener_table(self, state: GatewayState, listener: ListenerState) -> ListenerTable:
        """Winning route per effective hostname: more specific hostnames are separate keys;
        for one hostname the older route wins, then namespace/name (SPEC.md §10.2)."""
        claims: dict[str, list[NamespacedName]] = {}
        for route_key in sorted(
            listener.attached, key=lambda k: _route_precedence(self.resources.tls_routes[k])
        ):
            for parent in self.route_parents[route_key]:
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
            self.winners[(state.key, listener.spec.name, hostname)] = keys
            winner = keys[0]
            targets.append(
                RouteTarget(
                    route=f"{winner[0]}/{winner[1]}",
                    hostname=hostname,
                    backends=self.route_backends[winner],
                    shadowed=tuple(f"{k[0]}/{k[1]}" for k in keys[1:]),
                )
            )
        return ListenerTable(
            gateway=state.name,
            name=listener.spec.name,
            hostname=listener.spec.hostname,
            mode=listener.spec.tls.mode if listener.spec.tls else "Passthrough",
            port=listener.spec.port,
            certificates=listener.certificates,
            frontend=listener.frontend,
            backend_client_certificate=state.client_certificate_ref,
            reject=self._problem(state, listener),
            routes=tuple(targets),
        )

    @staticmethod
    def _problem(state: GatewayState, listener: ListenerState) -> str | None:
        if state.refusal is not None:
            return f"Gateway {state.name} is not accepted: {state.refusal.message}"
        if not listener.accepted.status:
            return listener.accepted.message
        return listener.problem

    # --- 6. Status (SPEC.md §4, §5.2, §12) ---------------------------------------------------

    def finish_gateways(self) -> None:
        for state in self.states.values():
            key = ObjectKey("Gateway", state.key[0], state.key[1])
            old = self.previous(key)
            old_listeners = (
                {lst.name: lst.conditions for lst in old.listeners}
                if isinstance(old, GatewayStatus)
                else {}
            )
            generation = state.doc.metadata.generation or 1
            now = self.runtime.now
            listener_statuses = []
            programmed_any = False
            for listener in state.listeners:
                problem = self._problem(state, listener)
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
            drafts = self._gateway_drafts(state, programmed_any)
            addresses = (
                tuple(GatewayStatusAddress(type="IPAddress", value=a) for a in state.addresses)
                if programmed_any
                else ()
            )
            self.statuses[key] = GatewayStatus(
                addresses=addresses,
                listeners=tuple(listener_statuses),
                conditions=stamp(
                    drafts,
                    generation,
                    now,
                    old.conditions if isinstance(old, GatewayStatus) else (),
                ),
            )

    @staticmethod
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

    def finish_routes(self) -> None:
        for key, route in self.resources.tls_routes.items():
            status_key = ObjectKey("TLSRoute", key[0], key[1])
            old = self.previous(status_key)
            old_parents = old.parents if isinstance(old, RouteStatus) else ()
            generation = route.metadata.generation or 1
            parents = []
            for parent in self.route_parents[key]:
                accepted = parent.accepted
                if accepted.status:
                    accepted = Draft(
                        accepted.type, True, Reason.ACCEPTED, self._accepted_message(key, parent)
                    )
                previous = next(
                    (p.conditions for p in old_parents if p.parent_ref == parent.ref), ()
                )
                parents.append(
                    RouteParentStatus(
                        parent_ref=parent.ref,
                        controller_name=CONTROLLER_NAME,
                        conditions=stamp(
                            [accepted, self.route_resolved[key]],
                            generation,
                            self.runtime.now,
                            previous,
                        ),
                    )
                )
            if parents:  # a route none of whose parents is ours gets no status from us
                self.statuses[status_key] = RouteStatus(parents=tuple(parents))

    def _accepted_message(self, key: NamespacedName, parent: _Parent) -> str:
        """Say where the route attached, and which of its hostnames an older route holds
        (the losing route stays Accepted, SPEC.md §10.2)."""
        where = ", ".join(
            f"{state.name}/{listener.spec.name}" for state, listener, _ in parent.attached
        )
        shadowed = []
        for state, listener, effective in parent.attached:
            for hostname in effective:
                keys = self.winners.get((state.key, listener.spec.name, hostname), [key])
                if keys and keys[0] != key:
                    shadowed.append(
                        f"{hostname} on {state.name}/{listener.spec.name} is served by "
                        f"{keys[0][0]}/{keys[0][1]}, which takes precedence (older, then "
                        "namespace/name)"
                    )
        message = f"Route is accepted on listeners {where}"
        if shadowed:
            message += "; shadowed: " + "; ".join(shadowed)
        return message

    def finish_policies(self) -> None:
        """PolicyStatus.ancestors: one entry per Gateway of ours that routes to a targeted
        Service (SPEC.md §7), with the policy's own generation."""
        users: dict[tuple[str, str], set[NamespacedName]] = {}
        for key, route in self.resources.tls_routes.items():
            gateways = {
                state.key for parent in self.route_parents[key] for state, _, _ in parent.attached
            }
            for rule in route.spec.rules:
                for ref in rule.backend_refs:
                    if (ref.group, ref.kind) == ("", "Service"):
                        users.setdefault((ref.namespace or key[0], ref.name), set()).update(
                            gateways
                        )
        for key, result in self.policy_results.items():
            ancestors = sorted(
                {g for ns, name, _ in result.targets for g in users.get((ns, name), ())}
            )
            if not ancestors:
                continue  # no Gateway of ours uses it: not ours to report on
            status_key = ObjectKey("BackendTLSPolicy", key[0], key[1])
            old = self.previous(status_key)
            policy = self.resources.backend_tls_policies[key]
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
                            self.runtime.now,
                            previous,
                        ),
                    )
                )
            self.statuses[status_key] = PolicyStatus(ancestors=tuple(entries))
