"""ClientTrafficPolicy: which Gateways and listeners it reaches, its status, and what each
listener enforces (API.md "Traffic policies"; GEP-713 policy attachment).

Pure. A policy targets Gateways of its own namespace, optionally one listener by
`sectionName`. Its conditions, per ancestor (the targeted Gateway):
- `Accepted=False/Invalid`: a target that is not a Gateway;
- `Accepted=False/TargetNotFound`: no such Gateway, or no such listener on it;
- `Accepted=False/Conflicted`: an older policy (creationTimestamp, then namespace/name) on the
  same target already sets one of its fields. A conflicted policy applies nothing, so what is
  in force is always whole policies, each named in the access log and explain;
- else `Accepted=True/Accepted`.

Fields are compared leaf by leaf: `proxyProtocol` (one field: its CIDRs and `optional`
mean nothing apart), `clientIPs.allow`, `clientIPs.deny`, each timeout and each limit of
`connection`. A policy on a
listener and one on its whole Gateway never conflict: the listener's fields win there (the
more specific target), and the Gateway's apply to every other listener.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Final

import attrs
from attrs import frozen

from gateway import GATEWAY_GROUP
from gateway.api import model
from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName, parse_duration
from gateway.api.status import (
    ConditionType,
    Draft,
    Reason,
    Status,
)
from gateway.api.traffic import (
    ActiveHealthCheck,
    BackendTrafficPolicy,
    ClientTrafficPolicy,
    PassiveHealthCheck,
)
from gateway.routing.snapshot import (
    ActiveCheck,
    BackendTraffic,
    ClientPolicy,
    LimitKind,
    LimitRule,
    Network,
    PassiveCheck,
)
from gateway.translate.context import Build, ListenerKey, RouteResult, age
from gateway.translate.resources import Resources
from gateway.translate.statuses import policy_status

#: A policy's target: the Gateway and the listener (None: the whole Gateway).
Target = tuple[NamespacedName, str | None]


@frozen
class ClientPolicyResult:
    accepted: Draft
    #: What it names, as status.ancestors reports them: Gateways of ours or missing (with
    #: the section when one is named), and targets that are not Gateways at all.
    ancestors: tuple[model.ParentReference, ...]


def leaves(policy: ClientTrafficPolicy) -> tuple[str, ...]:
    """The fields a policy sets, as conflicts compare them."""
    spec = policy.spec
    found = []
    if spec.proxy_protocol is not None:
        found.append("proxyProtocol")
    if spec.client_ips is not None:
        if spec.client_ips.allow is not None:
            found.append("clientIPs.allow")
        if spec.client_ips.deny is not None:
            found.append("clientIPs.deny")
    found += [leaf for leaf, _ in _timeouts(policy)]
    found += [leaf for leaf, _, _ in _limits(policy)]
    return tuple(found)


def _limits(policy: ClientTrafficPolicy) -> list[tuple[str, LimitKind, int]]:
    """The `connection` limits a policy sets, as (leaf, kind, value)."""
    connection = policy.spec.connection
    if connection is None:
        return []
    per_client = connection.per_client
    values = [
        (
            "connection.connectionLimit",
            LimitKind.CONNECTIONS,
            connection.connection_limit.value if connection.connection_limit else None,
        ),
        (
            "connection.perClient.maxConnections",
            LimitKind.CLIENT_CONNECTIONS,
            per_client.max_connections if per_client else None,
        ),
        (
            "connection.perClient.connectionsPerSecond",
            LimitKind.CLIENT_RATE,
            per_client.connections_per_second if per_client else None,
        ),
    ]
    return [(leaf, kind, value) for leaf, kind, value in values if value is not None]


def _timeouts(policy: ClientTrafficPolicy) -> list[tuple[str, float]]:
    """The timeouts a policy sets, as (leaf, seconds); admission checked the durations."""
    timeout = policy.spec.timeout
    if timeout is None:
        return []
    texts = [
        ("timeout.tcp.idleTimeout", timeout.tcp.idle_timeout if timeout.tcp else None),
        ("timeout.tls.helloTimeout", timeout.tls.hello_timeout if timeout.tls else None),
        ("timeout.tls.handshakeTimeout", timeout.tls.handshake_timeout if timeout.tls else None),
    ]
    return [
        (leaf, seconds)
        for leaf, text in texts
        if text is not None and (seconds := parse_duration(text)) is not None
    ]


_TIMEOUT_FIELDS: Final = {
    "timeout.tcp.idleTimeout": "idle_timeout",
    "timeout.tls.helloTimeout": "hello_timeout",
    "timeout.tls.handshakeTimeout": "handshake_timeout",
}


def evaluate_client_policies(
    build: Build,
) -> tuple[dict[ListenerKey, ClientPolicy], dict[NamespacedName, ClientPolicyResult]]:
    """Every policy's result, and the merged policy of each listener that has one."""
    policies = build.resources.client_traffic_policies
    results: dict[NamespacedName, ClientPolicyResult] = {}
    #: (target, leaf) -> the policy that set it first.
    claimed: dict[tuple[Target, str], NamespacedName] = {}
    in_force: dict[Target, list[NamespacedName]] = {}
    for key in sorted(policies, key=lambda k: age(policies[k].metadata)):
        policy = policies[key]
        result, targets = _evaluate(build, key, policy)
        if result is None:
            continue  # targets only Gateways that are not ours: not ours to report on
        if targets:
            fields = leaves(policy)
            conflict = _conflict("ClientTrafficPolicy", targets, fields, claimed)
            if conflict is not None:
                result = ClientPolicyResult(conflict, result.ancestors)
            else:
                for target in targets:
                    for field in fields:
                        claimed[(target, field)] = key
                    in_force.setdefault(target, []).append(key)
        results[key] = result
    return _merged(build, in_force), results


def _evaluate(
    build: Build, key: NamespacedName, policy: ClientTrafficPolicy
) -> tuple[ClientPolicyResult | None, tuple[Target, ...]]:
    ancestors: list[model.ParentReference] = []
    targets: list[Target] = []
    invalid: list[str] = []
    missing: list[str] = []
    for i, ref in enumerate(policy.spec.target_refs):
        named = model.ParentReference(
            group=ref.group,
            kind=ref.kind,
            namespace=key.namespace,
            name=ref.name,
            section_name=ref.section_name,
        )
        if (ref.group, ref.kind) != (GATEWAY_GROUP, "Gateway"):
            # Reported under what it names: there is no Gateway to report it under.
            ancestors.append(named)
            invalid.append(f"targetRefs[{i}]: {ref.group or 'core'}/{ref.kind}")
            continue
        gateway = NamespacedName(key.namespace, ref.name)
        if gateway not in build.resources.gateways:
            ancestors.append(named)
            missing.append(f"Gateway {gateway}")
            continue
        state = build.gateways.get(gateway)
        if state is None:
            continue  # another controller's Gateway
        ancestors.append(named)
        if ref.section_name is not None and ref.section_name not in {
            listener.spec.name for listener in state.listeners
        }:
            missing.append(f"listener {ref.section_name} of Gateway {gateway}")
            continue
        targets.append((gateway, ref.section_name))
    if not ancestors:
        return None, ()
    accepted = _targets_verdict("Gateways (gateway.networking.k8s.io)", invalid, missing)
    return ClientPolicyResult(accepted, tuple(ancestors)), (
        tuple(targets) if accepted.status else ()
    )


def _targets_verdict(what: str, invalid: list[str], missing: list[str]) -> Draft:
    """Accepted, unless a target is of the wrong kind (Invalid) or does not exist
    (TargetNotFound): then the policy applies nothing."""
    if invalid:
        return Draft(
            ConditionType.ACCEPTED,
            False,
            Reason.INVALID,
            f"only {what} can be targeted: " + ", ".join(invalid),
        )
    if missing:
        return Draft(
            ConditionType.ACCEPTED,
            False,
            Reason.TARGET_NOT_FOUND,
            "no " + ", no ".join(missing) + "; this policy applies nothing until it exists",
        )
    return Draft(ConditionType.ACCEPTED, True, Reason.ACCEPTED, "Policy is accepted")


def _conflict(
    kind: str,
    targets: Iterable[Hashable],
    fields: Iterable[str],
    claimed: Mapping[tuple[Any, str], NamespacedName],
    on: str = "target",
) -> Draft | None:
    """Conflicted, when an older policy already set one of these fields on one of these
    targets (a conflicted policy applies nothing); else None."""
    clashes = {(t, f): claimed[(t, f)] for t in targets for f in fields if (t, f) in claimed}
    if not clashes:
        return None
    older = min(clashes.values())
    return Draft(
        ConditionType.ACCEPTED,
        False,
        Reason.CONFLICTED,
        f"the older {kind} {older} already sets "
        + ", ".join(sorted({f for _, f in clashes}))
        + f" on the same {on}; this policy applies nothing",
    )


def _networks(texts: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def _merged(
    build: Build, in_force: Mapping[Target, list[NamespacedName]]
) -> dict[ListenerKey, ClientPolicy]:
    """Per listener: the Gateway's policies, then the listener's own over them."""
    policies = build.resources.client_traffic_policies
    merged: dict[ListenerKey, ClientPolicy] = {}
    for gateway, state in build.gateways.items():
        for listener in state.listeners:
            own = in_force.get((gateway, listener.spec.name), ())
            names = [*in_force.get((gateway, None), ()), *own]
            if not names:
                continue
            fields: dict[str, object] = {}
            limits: dict[LimitKind, LimitRule] = {}
            for name in names:  # the listener's come last: they win
                # A limit counts over its policy's target: a whole Gateway's counts the
                # connections of all its listeners together.
                scope = f"{gateway}/{listener.spec.name}" if name in own else str(gateway)
                for _, kind, value in _limits(policies[name]):
                    limits[kind] = LimitRule(kind, scope, value)
                spec = policies[name].spec
                if spec.proxy_protocol is not None:
                    fields["proxy_trusted"] = _networks(spec.proxy_protocol.trusted_cidrs)
                    fields["proxy_optional"] = bool(spec.proxy_protocol.optional)
                if spec.client_ips is not None and spec.client_ips.allow is not None:
                    fields["allow"] = _networks(spec.client_ips.allow)
                if spec.client_ips is not None and spec.client_ips.deny is not None:
                    fields["deny"] = _networks(spec.client_ips.deny)
                for leaf, seconds in _timeouts(policies[name]):
                    fields[_TIMEOUT_FIELDS[leaf]] = seconds
            if limits:
                fields["limits"] = tuple(limits[kind] for kind in LimitKind if kind in limits)
            merged[(gateway, listener.spec.name)] = ClientPolicy(
                policies=tuple(str(name) for name in names),
                **fields,  # type: ignore[arg-type]
            )
    return merged


def client_policy_statuses(
    build: Build, results: Mapping[NamespacedName, ClientPolicyResult]
) -> dict[ObjectKey, Status]:
    """`status.ancestors` of every ClientTrafficPolicy of ours: one entry per targeted
    Gateway (and section), with the policy's generation."""
    statuses: dict[ObjectKey, Status] = {}
    policies = build.resources.client_traffic_policies
    for key, result in results.items():
        status_key = ObjectKey("ClientTrafficPolicy", *key)
        ordered = sorted(
            set(result.ancestors),
            key=lambda a: (a.group, a.kind, a.name, a.section_name or ""),
        )
        generation = policies[key].metadata.generation or 1
        statuses[status_key] = policy_status(
            build, status_key, ordered, [result.accepted], generation
        )
    return statuses


# --- BackendTrafficPolicy ------------------------------------------------------------------

#: A BackendTrafficPolicy's target: a Service (namespace, name).
ServiceTarget = tuple[str, str]


@frozen
class BackendPolicyResult:
    accepted: Draft
    #: The Services it names: its ancestors are the Gateways whose routes reach them.
    services: tuple[ServiceTarget, ...]


def backend_leaves(policy: BackendTrafficPolicy) -> tuple[str, ...]:
    spec = policy.spec
    found = []
    if spec.proxy_protocol is not None:
        found.append("proxyProtocol")
    tcp = spec.timeout.tcp if spec.timeout is not None else None
    if tcp is not None and tcp.connect_timeout is not None:
        found.append("timeout.tcp.connectTimeout")
    if spec.retry is not None and spec.retry.num_attempts is not None:
        found.append("retry.numAttempts")
    if spec.load_balancer is not None:
        found.append("loadBalancer")
    health = spec.health_check
    for block, name in (
        (health.passive if health else None, "passive"),
        (health.active if health else None, "active"),
    ):
        if block is None:
            continue
        # Leaf by leaf (API.md): two policies may each set a different field of a check.
        for attribute in attrs.fields(type(block)):
            if getattr(block, attribute.name) is not None:
                found.append(f"healthCheck.{name}.{_camel(attribute.name)}")
    return tuple(found)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _passive(check: PassiveHealthCheck, before: PassiveCheck | None) -> PassiveCheck:
    """The passive check: this policy's fields over the older policies' (which set other
    fields), over API.md's defaults (admission checked the values)."""
    base = parse_duration(check.base_ejection_time) if check.base_ejection_time else None
    default = before or PassiveCheck()
    return PassiveCheck(
        consecutive_failures=check.consecutive_connect_failures or default.consecutive_failures,
        base_ejection=base or default.base_ejection,
        max_ejection_percent=(
            check.max_ejection_percent
            if check.max_ejection_percent is not None
            else default.max_ejection_percent
        ),
    )


def _active(check: ActiveHealthCheck) -> ActiveCheck:
    """The active check with API.md's defaults (`type` is required: two policies with an
    active check always conflict, so there is nothing to merge)."""
    default = ActiveCheck(type=check.type)
    interval = parse_duration(check.interval) if check.interval else None
    timeout = parse_duration(check.timeout) if check.timeout else None
    return ActiveCheck(
        type=check.type,
        interval=interval or default.interval,
        timeout=timeout or default.timeout,
        healthy_threshold=check.healthy_threshold or default.healthy_threshold,
        unhealthy_threshold=check.unhealthy_threshold or default.unhealthy_threshold,
    )


def _backend_traffic(
    key: NamespacedName,
    policy: BackendTrafficPolicy,
    before: BackendTraffic | None,
) -> BackendTraffic:
    """`before` (the older accepted policies' settings on the Service) with this policy's
    fields added: accepted policies set disjoint fields, so each keeps its own."""
    spec = policy.spec
    proxy = spec.proxy_protocol
    tcp = spec.timeout.tcp if spec.timeout is not None else None
    connect = tcp.connect_timeout if tcp is not None else None
    balancer = spec.load_balancer
    health = spec.health_check
    merged = before or BackendTraffic(policies=())
    return BackendTraffic(
        passive=(
            _passive(health.passive, merged.passive)
            if health and health.passive
            else merged.passive
        ),
        active=_active(health.active) if health and health.active else merged.active,
        policies=(*merged.policies, str(key)),
        proxy_version=(2 if proxy.version == "V2" else 1) if proxy else merged.proxy_version,
        connect_timeout=parse_duration(connect) if connect is not None else merged.connect_timeout,
        attempts=(
            spec.retry.num_attempts
            if spec.retry is not None and spec.retry.num_attempts is not None
            else merged.attempts
        ),
        balance=(
            (balancer.type if balancer.type != "RoundRobin" else None)
            if balancer is not None
            else merged.balance
        ),
    )


def evaluate_backend_policies(
    resources: Resources,
) -> tuple[dict[ServiceTarget, BackendTraffic], dict[NamespacedName, BackendPolicyResult]]:
    """Each Service's BackendTraffic from its accepted policies, and every policy's result:
    Invalid (a target that is not a core Service, or names a port), TargetNotFound (no
    such Service), Conflicted (an older policy on the Service sets one of its fields)."""
    policies = resources.backend_traffic_policies
    results: dict[NamespacedName, BackendPolicyResult] = {}
    claimed: dict[tuple[ServiceTarget, str], NamespacedName] = {}
    chosen: dict[ServiceTarget, BackendTraffic] = {}
    for key in sorted(policies, key=lambda k: age(policies[k].metadata)):
        policy = policies[key]
        services: list[ServiceTarget] = []
        invalid: list[str] = []
        missing: list[str] = []
        for i, ref in enumerate(policy.spec.target_refs):
            if (ref.group, ref.kind) != ("", "Service") or ref.section_name is not None:
                what = f"{ref.group or 'core'}/{ref.kind}"
                if ref.section_name is not None:
                    what += f" sectionName {ref.section_name} (a whole Service only)"
                invalid.append(f"targetRefs[{i}]: {what}")
                continue
            services.append((key.namespace, ref.name))
            if NamespacedName(key.namespace, ref.name) not in resources.services:
                missing.append(f"Service {key.namespace}/{ref.name}")
        fields = backend_leaves(policy)
        accepted = _targets_verdict("core Services", invalid, missing)
        if accepted.status:
            conflict = _conflict("BackendTrafficPolicy", services, fields, claimed, "Service")
            accepted = conflict or accepted
        if accepted.status:
            for service in services:
                for field in fields:
                    claimed[(service, field)] = key
                chosen[service] = _backend_traffic(key, policy, chosen.get(service))
        results[key] = BackendPolicyResult(accepted, tuple(services))
    return chosen, results


def backend_policy_statuses(
    build: Build,
    results: Mapping[NamespacedName, BackendPolicyResult],
    route_results: Mapping[NamespacedName, RouteResult],
    users: Mapping[NamespacedName, Iterable[NamespacedName]],
) -> dict[ObjectKey, Status]:
    """`status.ancestors` of every BackendTrafficPolicy: one entry per Gateway of ours
    whose routes reach a targeted Service (as for BackendTLSPolicy, SPEC.md §7)."""
    statuses: dict[ObjectKey, Status] = {}
    policies = build.resources.backend_traffic_policies
    for key, result in results.items():
        gateways = sorted(
            {
                a.gateway
                for namespace, name in result.services
                for route in users.get(NamespacedName(namespace, name), ())
                for parent in route_results[route].parents
                for a in parent.attached
            }
        )
        if not gateways:
            continue  # no Gateway of ours reaches its Services: not ours to report on
        status_key = ObjectKey("BackendTrafficPolicy", *key)
        statuses[status_key] = policy_status(
            build,
            status_key,
            [model.ParentReference(namespace=g.namespace, name=g.name) for g in gateways],
            [result.accepted],
            policies[key].metadata.generation or 1,
        )
    return statuses
