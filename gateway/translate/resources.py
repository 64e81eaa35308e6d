"""The desired state as one immutable, indexed value: what `translate` reads.

Pure. Built from admitted documents (the store's contents, or the files given to
`tlsgate translate`). Also answers the two cross-object questions every part of the build asks:
a namespace's labels, and whether a ReferenceGrant permits a cross-namespace reference (SPEC.md §6).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from attrs import field, frozen

from gateway.api import corev1, model
from gateway.api.convert import NAMESPACE_NAME_LABEL
from gateway.api.kinds import Document

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

NamespacedName = tuple[str, str]

T = TypeVar("T")


def _index(docs: Iterable[Document], cls: type[T]) -> dict[NamespacedName, T]:
    out: dict[NamespacedName, T] = {}
    for doc in docs:
        if isinstance(doc, cls):
            out[(doc.metadata.namespace or "", doc.metadata.name)] = doc
    return dict(sorted(out.items()))


@frozen
class Resources:
    gateway_classes: Mapping[str, model.GatewayClass]
    gateways: Mapping[NamespacedName, model.Gateway]
    tls_routes: Mapping[NamespacedName, model.TLSRoute]
    reference_grants: Mapping[NamespacedName, model.ReferenceGrant]
    backend_tls_policies: Mapping[NamespacedName, model.BackendTLSPolicy]
    services: Mapping[NamespacedName, corev1.Service]
    endpoint_slices: Mapping[NamespacedName, corev1.EndpointSlice]
    secrets: Mapping[NamespacedName, corev1.Secret]
    config_maps: Mapping[NamespacedName, corev1.ConfigMap]
    namespaces: Mapping[str, corev1.Namespace]
    _slices_by_service: Mapping[NamespacedName, tuple[corev1.EndpointSlice, ...]] = field(
        init=False
    )

    def __attrs_post_init__(self) -> None:
        by_service: dict[NamespacedName, list[corev1.EndpointSlice]] = {}
        for (namespace, _), eps in self.endpoint_slices.items():
            service = (eps.metadata.labels or {}).get(SERVICE_NAME_LABEL)
            if service:
                by_service.setdefault((namespace, service), []).append(eps)
        object.__setattr__(self, "_slices_by_service", {k: tuple(v) for k, v in by_service.items()})

    @classmethod
    def of(cls, docs: Iterable[Document]) -> Resources:
        docs = list(docs)
        return cls(
            gateway_classes={n: d for (_, n), d in _index(docs, model.GatewayClass).items()},
            gateways=_index(docs, model.Gateway),
            tls_routes=_index(docs, model.TLSRoute),
            reference_grants=_index(docs, model.ReferenceGrant),
            backend_tls_policies=_index(docs, model.BackendTLSPolicy),
            services=_index(docs, corev1.Service),
            endpoint_slices=_index(docs, corev1.EndpointSlice),
            secrets=_index(docs, corev1.Secret),
            config_maps=_index(docs, corev1.ConfigMap),
            namespaces={n: d for (_, n), d in _index(docs, corev1.Namespace).items()},
        )

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """Labels of a namespace; one never created still has its implicit name label."""
        doc = self.namespaces.get(namespace)
        labels = dict(doc.metadata.labels or {}) if doc is not None else {}
        labels[NAMESPACE_NAME_LABEL] = namespace
        return labels

    def slices_of(self, namespace: str, service: str) -> tuple[corev1.EndpointSlice, ...]:
        return self._slices_by_service.get((namespace, service), ())

    def grant_allows(
        self,
        *,
        from_group: str,
        from_kind: str,
        from_namespace: str,
        to_group: str,
        to_kind: str,
        to_namespace: str,
        to_name: str,
    ) -> bool:
        """May an object in `from_namespace` refer to one in `to_namespace` (SPEC.md §6)?

        Same-namespace references need no grant. A grant counts only in the target's
        namespace; `from` and `to` entries are each ORed, and comparisons are exact.
        """
        if from_namespace == to_namespace:
            return True
        for (namespace, _), grant in self.reference_grants.items():
            if namespace != to_namespace:
                continue
            if not any(
                f.group == from_group and f.kind == from_kind and f.namespace == from_namespace
                for f in grant.spec.from_
            ):
                continue
            if any(
                t.group == to_group and t.kind == to_kind and (not t.name or t.name == to_name)
                for t in grant.spec.to
            ):
                return True
        return False


def selector_matches(selector: model.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels pair and every expression
    must hold; an empty selector matches everything."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or ():
        values = req.values or ()
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True
