"""What the steps of one build share: the inputs, and the working state each step adds to.

Pure. Steps run in the order `translate` lists; each reads what earlier steps left here and
adds its own part. The build is thrown away once the snapshot is made.
"""

from __future__ import annotations

from attrs import define, field

from gateway.api import model
from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName
from gateway.api.status import Draft, Status
from gateway.routing.snapshot import Backend, BackendTLS
from gateway.translate.facts import Facts
from gateway.translate.listeners import ListenerState
from gateway.translate.policies import PolicyResult, Target
from gateway.translate.resources import Resources


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


@define
class Parent:
    """One managed parentRef of a route: its Accepted draft and where it attached."""

    ref: model.ParentReference
    accepted: Draft
    attached: list[tuple[GatewayState, ListenerState, tuple[str, ...]]] = field(factory=list)


@define
class RouteState:
    """One TLSRoute during a build: its parents of ours, ResolvedRefs, and backend pool."""

    parents: list[Parent]
    resolved: Draft
    backends: tuple[Backend, ...]


@define
class Build:
    resources: Resources
    facts: Facts
    statuses: dict[ObjectKey, Status] = field(factory=dict)
    #: GatewayClass name -> accepted, for the classes of our controller.
    our_classes: dict[str, bool] = field(factory=dict)
    gateways: dict[NamespacedName, GatewayState] = field(factory=dict)
    #: (address, port) -> the Gateways serving it, oldest first.
    holders: dict[tuple[str, int], list[GatewayState]] = field(factory=dict)
    policies: dict[Target, BackendTLS] = field(factory=dict)
    policy_results: dict[NamespacedName, PolicyResult] = field(factory=dict)
    routes: dict[NamespacedName, RouteState] = field(factory=dict)
    #: (gateway, listener name, effective hostname) -> route keys, the winner first.
    winners: dict[tuple[NamespacedName, str, str], list[NamespacedName]] = field(factory=dict)

    def previous(self, key: ObjectKey) -> Status | None:
        return self.facts.previous.get(key)


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
