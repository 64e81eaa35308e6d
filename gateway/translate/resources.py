"""The desired state as one immutable, indexed value: what `translate` reads.

Pure. Built from admitted documents (the store's contents, or the files given to
`tlsgate translate`). Indexes what the build looks up: objects by namespace and name, the
EndpointSlices of each Service, a namespace's labels. Whether a ReferenceGrant permits a
reference is `references.grant_allows`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from attrs import field, frozen

from gateway.api import corev1, model
from gateway.api.convert import NAMESPACE_NAME_LABEL
from gateway.api.kinds import Document
from gateway.api.names import NamespacedName

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

T = TypeVar("T")


def _index(docs: Iterable[Document], cls: type[T]) -> dict[NamespacedName, T]:
    out: dict[NamespacedName, T] = {}
    for doc in docs:
        if isinstance(doc, cls):
            out[NamespacedName(doc.metadata.namespace or "", doc.metadata.name)] = doc
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
                by_service.setdefault(NamespacedName(namespace, service), []).append(eps)
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
        return self._slices_by_service.get(NamespacedName(namespace, service), ())
