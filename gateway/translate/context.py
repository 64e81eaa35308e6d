"""What the steps of a build share: the Gateway side (`Build`) and the per-route results.

Pure. The Gateway-side steps run in the order `translate` lists, each reading what earlier
ones left in the `Build` and adding its own part; once they are done the `Build` is never
changed again, so the next build can keep it whole when none of its inputs changed. What a
route contributes is a frozen `RouteResult` that names listeners by key, never by object, so
it stays valid as long as the listeners it names are the same (`routes.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field, frozen

from gateway.api import model
from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName
from gateway.api.status import Draft, Status
from gateway.routing.snapshot import Backend, BackendTLS, BackendTraffic, ClientPolicy
from gateway.translate.facts import Facts
from gateway.translate.listeners import ListenerState
from gateway.translate.policies import PolicyResult, Target
from gateway.translate.resources import Resources

if TYPE_CHECKING:
    from gateway.translate.traffic import BackendPolicyResult, ClientPolicyResult


@define
class GatewayState:
    """One Gateway of ours during a build: its listeners and gateway-level findings."""

    key: NamespacedName
    doc: model.Gateway
    listeners: list[ListenerState]
    #: Addresses its listeners bind; the runtime default when spec.addresses is unset.
    addresses: tuple[str, ...]
    #: A gateway-level reason not to accept it (UnsupportedAddress, InvalidParameters).
    refusal: Draft | None = None
    #: Gateway ResolvedRefs, published when spec.tls.backend.clientCertificateRef is set.
    client_certificate: Draft | None = None
    #: The Secret of that reference once it resolves, presented to re-encrypted backends.
    client_certificate_ref: NamespacedName | None = None
    insecure_frontend: bool = False
    #: `namespace/name`, as status messages and the table write it.
    name: str = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.name = str(self.key)


#: A listener of a build: (Gateway, listener name).
ListenerKey = tuple[NamespacedName, str]
#: One effective hostname on one listener: (Gateway, listener name, hostname).
ClaimKey = tuple[NamespacedName, str, str]


@frozen
class Attachment:
    """Where a parentRef attached: one listener and the route's effective hostnames there."""

    gateway: NamespacedName
    listener: str
    hostnames: tuple[str, ...]


@frozen
class Parent:
    """One managed parentRef of a route: its Accepted draft and where it attached."""

    ref: model.ParentReference
    accepted: Draft
    attached: tuple[Attachment, ...] = ()


@frozen
class RouteResult:
    """What one TLSRoute contributes to a build: its parents of ours, ResolvedRefs, and its
    backend pool; and what it depends on, so a change elsewhere finds the routes it affects."""

    parents: tuple[Parent, ...]
    resolved: Draft
    backends: tuple[Backend, ...]
    #: The Services its backendRefs name (existing or not).
    services: frozenset[NamespacedName]
    #: The Gateways its parentRefs name.
    gateways: frozenset[NamespacedName]
    #: Whether a backendRef crosses namespaces (a ReferenceGrant may decide it).
    cross_namespace: bool

    def claims(self) -> list[ClaimKey]:
        parents = self.parents
        if len(parents) == 1 and len(parents[0].attached) == 1:  # the common case
            a = parents[0].attached[0]
            return [(a.gateway, a.listener, hostname) for hostname in a.hostnames]
        return [
            (a.gateway, a.listener, hostname)
            for parent in self.parents
            for a in parent.attached
            for hostname in a.hostnames
        ]

    def listeners(self) -> list[ListenerKey]:
        return [(a.gateway, a.listener) for parent in self.parents for a in parent.attached]


@define
class Build:
    """The Gateway side of a build: classes, Gateways and their listeners, port claims and
    BackendTLSPolicies. Filled in by the first steps, then read only."""

    resources: Resources
    facts: Facts
    #: GatewayClass statuses (the other kinds' are made once routes are known).
    statuses: dict[ObjectKey, Status] = field(factory=dict)
    #: GatewayClass name -> accepted, for the classes of our controller.
    our_classes: dict[str, bool] = field(factory=dict)
    gateways: dict[NamespacedName, GatewayState] = field(factory=dict)
    #: (address, port) -> the Gateways serving it, oldest first.
    holders: dict[tuple[str, int], list[GatewayState]] = field(factory=dict)
    policies: dict[Target, BackendTLS] = field(factory=dict)
    policy_results: dict[NamespacedName, PolicyResult] = field(factory=dict)
    #: ClientTrafficPolicies: each listener's merged policy, and each policy's result.
    client_policies: dict[ListenerKey, ClientPolicy] = field(factory=dict)
    client_policy_results: dict[NamespacedName, ClientPolicyResult] = field(factory=dict)
    #: BackendTrafficPolicies: each Service's, and each policy's result.
    backend_traffic: dict[tuple[str, str], BackendTraffic] = field(factory=dict)
    backend_traffic_results: dict[NamespacedName, BackendPolicyResult] = field(factory=dict)

    def previous(self, key: ObjectKey) -> Status | None:
        return self.facts.previous.get(key)


def attachment_view(build: Build, key: NamespacedName) -> object:
    """What a route's attachment to Gateway `key` reads of it (SPEC.md §8): whether it exists,
    whether it is ours, and its listeners' names, ports, hostnames, route kinds and
    allowedRoutes. Routes naming a Gateway whose view is unchanged keep their attachment."""
    if key not in build.resources.gateways:
        return None
    state = build.gateways.get(key)
    if state is None:
        return "not ours"
    return tuple((lst.spec, lst.supported_kinds) for lst in state.listeners)


def age(metadata: model.ObjectMeta) -> tuple[str, str, str]:
    """Conflict precedence: older creationTimestamp, then namespace/name (SPEC.md §11.2)."""
    return (metadata.creation_timestamp or "", metadata.namespace or "", metadata.name)


def listener_problem(state: GatewayState, listener: ListenerState) -> str | None:
    """Why a listener cannot serve (Programmed=False, and its connections closed), if so."""
    if state.refusal is not None:
        return f"Gateway {state.name} is not accepted: {state.refusal.message}"
    if not listener.accepted.status:
        return listener.accepted.message
    return listener.problem
