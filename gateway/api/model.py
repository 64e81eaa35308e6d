"""The Gateway API kinds as frozen attrs values (SPEC.md §2-§7).

Pure. Field names are the spec's in snake_case; `convert` maps them to camelCase on the wire.
Optional fields default to ``None`` rather than an empty value so that what a user wrote
(including an explicit empty list) comes back exactly as written. Defaults that Kubernetes'
CRDs apply on admission (SPEC.md §0) are attrs defaults, so they exist before validation runs.
"""

from __future__ import annotations

from typing import Any

from attrs import Factory, frozen

from gateway import GATEWAY_GROUP


@frozen(kw_only=True)
class ManagedFieldsEntry:
    """Which fields a manager owns (server-side apply), as Kubernetes records it."""

    manager: str | None = None
    operation: str | None = None
    api_version: str | None = None
    time: str | None = None
    fields_type: str | None = None
    #: `f:`-prefixed keys down to each owned field (FieldsV1).
    fields_v1: dict[str, Any] | None = None


@frozen(kw_only=True)
class ObjectMeta:
    """The part of Kubernetes' ObjectMeta that tlsgate keeps; the server-set fields are
    overwritten by the store (API.md "Server-set metadata")."""

    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    creation_timestamp: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    #: Set by server-side apply only: other writes keep what is stored (store/plan.py).
    managed_fields: tuple[ManagedFieldsEntry, ...] | None = None


# --- references (apis/v1/object_reference.go, shared_types.go) ---------------------------


@frozen(kw_only=True)
class ParentReference:
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: int | None = None


@frozen(kw_only=True)
class BackendRef:
    group: str = ""
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int = 1


@frozen(kw_only=True)
class SecretObjectReference:
    group: str = ""
    kind: str = "Secret"
    name: str
    namespace: str | None = None


@frozen(kw_only=True)
class ObjectReference:
    """Frontend CA references: group and kind are required on the wire (no CRD default)."""

    group: str
    kind: str
    name: str
    namespace: str | None = None


@frozen(kw_only=True)
class LocalObjectReference:
    group: str
    kind: str
    name: str


@frozen(kw_only=True)
class ParametersReference:
    group: str
    kind: str
    name: str
    namespace: str | None = None


@frozen(kw_only=True)
class RouteGroupKind:
    group: str = GATEWAY_GROUP
    kind: str


# --- label selectors (k8s.io/apimachinery metav1.LabelSelector) -----------------------------


@frozen(kw_only=True)
class LabelSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] | None = None


@frozen(kw_only=True)
class LabelSelector:
    match_labels: dict[str, str] | None = None
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = None


# --- GatewayClass (SPEC.md §2) -------------------------------------------------------------


@frozen(kw_only=True)
class GatewayClassSpec:
    controller_name: str
    parameters_ref: ParametersReference | None = None
    description: str | None = None


@frozen(kw_only=True)
class GatewayClass:
    api_version: str
    kind: str = "GatewayClass"
    metadata: ObjectMeta
    spec: GatewayClassSpec


# --- Gateway (SPEC.md §3) ------------------------------------------------------------------


@frozen(kw_only=True)
class RouteNamespaces:
    from_: str = "Same"
    selector: LabelSelector | None = None


@frozen(kw_only=True)
class AllowedRoutes:
    namespaces: RouteNamespaces = Factory(RouteNamespaces)
    kinds: tuple[RouteGroupKind, ...] | None = None


@frozen(kw_only=True)
class ListenerTLSConfig:
    # The CRD default, applied whenever a tls block is present (SPEC.md §3.1 rule 3).
    mode: str = "Terminate"
    certificate_refs: tuple[SecretObjectReference, ...] | None = None
    options: dict[str, str] | None = None


@frozen(kw_only=True)
class Listener:
    name: str
    hostname: str | None = None
    port: int
    protocol: str
    tls: ListenerTLSConfig | None = None
    allowed_routes: AllowedRoutes = Factory(AllowedRoutes)


@frozen(kw_only=True)
class GatewaySpecAddress:
    type: str = "IPAddress"
    value: str | None = None


@frozen(kw_only=True)
class GatewayInfrastructure:
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    parameters_ref: LocalObjectReference | None = None


@frozen(kw_only=True)
class ListenerNamespaces:
    from_: str = "None"
    selector: LabelSelector | None = None


@frozen(kw_only=True)
class AllowedListeners:
    namespaces: ListenerNamespaces = Factory(ListenerNamespaces)


@frozen(kw_only=True)
class FrontendTLSValidation:
    ca_certificate_refs: tuple[ObjectReference, ...]
    mode: str = "AllowValidOnly"


@frozen(kw_only=True)
class TLSConfig:
    validation: FrontendTLSValidation | None = None


@frozen(kw_only=True)
class TLSPortConfig:
    port: int
    tls: TLSConfig


@frozen(kw_only=True)
class FrontendTLSConfig:
    default: TLSConfig
    per_port: tuple[TLSPortConfig, ...] | None = None


@frozen(kw_only=True)
class GatewayBackendTLS:
    client_certificate_ref: SecretObjectReference | None = None


@frozen(kw_only=True)
class GatewayTLSConfig:
    backend: GatewayBackendTLS | None = None
    frontend: FrontendTLSConfig | None = None


@frozen(kw_only=True)
class GatewaySpec:
    gateway_class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[GatewaySpecAddress, ...] | None = None
    infrastructure: GatewayInfrastructure | None = None
    allowed_listeners: AllowedListeners | None = None
    tls: GatewayTLSConfig | None = None
    default_scope: str | None = None


@frozen(kw_only=True)
class Gateway:
    api_version: str
    kind: str = "Gateway"
    metadata: ObjectMeta
    spec: GatewaySpec


# --- TLSRoute (SPEC.md §5) -----------------------------------------------------------------


@frozen(kw_only=True)
class TLSRouteRule:
    name: str | None = None
    backend_refs: tuple[BackendRef, ...]


@frozen(kw_only=True)
class TLSRouteSpec:
    parent_refs: tuple[ParentReference, ...] | None = None
    # Required in v1 (SPEC.md §5.1); optional only in v1alpha2, which `convert` maps to v1.
    hostnames: tuple[str, ...] | None = None
    rules: tuple[TLSRouteRule, ...]
    use_default_gateways: str | None = None


@frozen(kw_only=True)
class TLSRoute:
    api_version: str
    kind: str = "TLSRoute"
    metadata: ObjectMeta
    spec: TLSRouteSpec


# --- ReferenceGrant (SPEC.md §6) -----------------------------------------------------------


@frozen(kw_only=True)
class ReferenceGrantFrom:
    group: str
    kind: str
    namespace: str


@frozen(kw_only=True)
class ReferenceGrantTo:
    group: str
    kind: str
    name: str | None = None


@frozen(kw_only=True)
class ReferenceGrantSpec:
    from_: tuple[ReferenceGrantFrom, ...]
    to: tuple[ReferenceGrantTo, ...]


@frozen(kw_only=True)
class ReferenceGrant:
    api_version: str
    kind: str = "ReferenceGrant"
    metadata: ObjectMeta
    spec: ReferenceGrantSpec


# --- BackendTLSPolicy (SPEC.md §7; behaviour arrives with re-encryption, §10.7) ------------


@frozen(kw_only=True)
class LocalPolicyTargetReferenceWithSectionName:
    group: str
    kind: str
    name: str
    section_name: str | None = None


@frozen(kw_only=True)
class SubjectAltName:
    type: str
    hostname: str | None = None
    uri: str | None = None


@frozen(kw_only=True)
class BackendTLSPolicyValidation:
    ca_certificate_refs: tuple[LocalObjectReference, ...] | None = None
    well_known_ca_certificates: str | None = None
    hostname: str
    subject_alt_names: tuple[SubjectAltName, ...] | None = None


@frozen(kw_only=True)
class BackendTLSPolicySpec:
    target_refs: tuple[LocalPolicyTargetReferenceWithSectionName, ...]
    validation: BackendTLSPolicyValidation
    options: dict[str, str] | None = None


@frozen(kw_only=True)
class BackendTLSPolicy:
    api_version: str
    kind: str = "BackendTLSPolicy"
    metadata: ObjectMeta
    spec: BackendTLSPolicySpec
