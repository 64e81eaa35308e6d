"""The kinds tlsgate accepts, their apiVersions, scope and REST plural (API.md "Documents").

Pure.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from attrs import frozen

from gateway import GATEWAY_GROUP, POLICY_GROUP
from gateway.api.corev1 import ConfigMap, EndpointSlice, Namespace, Secret, Service
from gateway.api.model import (
    BackendTLSPolicy,
    Gateway,
    GatewayClass,
    ReferenceGrant,
    TLSRoute,
)
from gateway.api.traffic import BackendTrafficPolicy, ClientTrafficPolicy

Document = (
    GatewayClass
    | Gateway
    | TLSRoute
    | ReferenceGrant
    | BackendTLSPolicy
    | ClientTrafficPolicy
    | BackendTrafficPolicy
    | Service
    | EndpointSlice
    | Secret
    | ConfigMap
    | Namespace
)


@frozen
class KindInfo:
    kind: str
    plural: str
    group: str
    #: apiVersions accepted on the wire; the first is the one stored.
    api_versions: tuple[str, ...]
    namespaced: bool
    cls: type[Document]


def _gw(version: str) -> str:
    return f"{GATEWAY_GROUP}/{version}"


KINDS: Final[tuple[KindInfo, ...]] = (
    KindInfo(
        "GatewayClass",
        "gatewayclasses",
        GATEWAY_GROUP,
        (_gw("v1"), _gw("v1beta1")),
        False,
        GatewayClass,
    ),
    KindInfo("Gateway", "gateways", GATEWAY_GROUP, (_gw("v1"), _gw("v1beta1")), True, Gateway),
    # v1alpha2/v1alpha3 are converted to v1 on write (API.md; SPEC.md §1).
    KindInfo(
        "TLSRoute",
        "tlsroutes",
        GATEWAY_GROUP,
        (_gw("v1"), _gw("v1alpha3"), _gw("v1alpha2")),
        True,
        TLSRoute,
    ),
    KindInfo(
        "ReferenceGrant",
        "referencegrants",
        GATEWAY_GROUP,
        (_gw("v1"), _gw("v1beta1")),
        True,
        ReferenceGrant,
    ),
    KindInfo(
        "BackendTLSPolicy",
        "backendtlspolicies",
        GATEWAY_GROUP,
        (_gw("v1"),),
        True,
        BackendTLSPolicy,
    ),
    KindInfo(
        "ClientTrafficPolicy",
        "clienttrafficpolicies",
        POLICY_GROUP,
        (f"{POLICY_GROUP}/v1alpha1",),
        True,
        ClientTrafficPolicy,
    ),
    KindInfo(
        "BackendTrafficPolicy",
        "backendtrafficpolicies",
        POLICY_GROUP,
        (f"{POLICY_GROUP}/v1alpha1",),
        True,
        BackendTrafficPolicy,
    ),
    KindInfo("Service", "services", "", ("v1",), True, Service),
    KindInfo(
        "EndpointSlice",
        "endpointslices",
        "discovery.k8s.io",
        ("discovery.k8s.io/v1",),
        True,
        EndpointSlice,
    ),
    KindInfo("Secret", "secrets", "", ("v1",), True, Secret),
    KindInfo("ConfigMap", "configmaps", "", ("v1",), True, ConfigMap),
    KindInfo("Namespace", "namespaces", "", ("v1",), False, Namespace),
)

BY_KIND: Final = {k.kind: k for k in KINDS}
BY_PLURAL: Final = {k.plural: k for k in KINDS}

#: Kinds whose apiVersion is rewritten on write: only TLSRoute changes schema between versions.
CONVERTED_TO_STORED: Final = frozenset({"TLSRoute"})


class ObjectKey(NamedTuple):
    """How every document is identified: kind, namespace ('' when cluster-scoped), name.

    A NamedTuple (like `NamespacedName`): it keys every map of documents and statuses, and a
    tuple hashes and compares in C (an attrs class did both in Python, ~1 µs a lookup)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


def key_of(doc: Document) -> ObjectKey:
    return ObjectKey(doc.kind, doc.metadata.namespace or "", doc.metadata.name)
