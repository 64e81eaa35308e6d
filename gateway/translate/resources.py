"""The desired state as one immutable, indexed value: what `translate` reads.

Pure. Built from admitted documents (the store's contents, or the files given to
`tlsgate translate`). Indexes what the build looks up: objects by namespace and name, the
EndpointSlices of each Service, a namespace's labels. Whether a ReferenceGrant permits a
reference is `references.grant_allows`.

`updated` makes the next value from a few changed documents: the maps of kinds no change
touches are the very same objects, which is how `translate` tells what it may keep from the
previous build (an identity check, no comparison of 10,000 documents).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from attrs import field, frozen

from gateway.api import corev1, model, traffic
from gateway.api.convert import NAMESPACE_NAME_LABEL
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.names import NamespacedName, new_tuple

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@frozen
class Resources:
    gateway_classes: Mapping[str, model.GatewayClass]
    gateways: Mapping[NamespacedName, model.Gateway]
    tls_routes: Mapping[NamespacedName, model.TLSRoute]
    reference_grants: Mapping[NamespacedName, model.ReferenceGrant]
    backend_tls_policies: Mapping[NamespacedName, model.BackendTLSPolicy]
    client_traffic_policies: Mapping[NamespacedName, traffic.ClientTrafficPolicy]
    backend_traffic_policies: Mapping[NamespacedName, traffic.BackendTrafficPolicy]
    services: Mapping[NamespacedName, corev1.Service]
    endpoint_slices: Mapping[NamespacedName, corev1.EndpointSlice]
    secrets: Mapping[NamespacedName, corev1.Secret]
    config_maps: Mapping[NamespacedName, corev1.ConfigMap]
    namespaces: Mapping[str, corev1.Namespace]
    #: Service -> its EndpointSlices (by the service-name label); derived when not given.
    _slices_by_service: Mapping[NamespacedName, tuple[corev1.EndpointSlice, ...]] | None = field(
        default=None, eq=False
    )
    #: Made by `updated`: the value it was made from (weakly: no chain of old values is
    #: kept alive), and the keys changed per attribute, so a build need not compare maps.
    _base: weakref.ref[Resources] | None = field(default=None, eq=False, repr=False)
    _changes: Mapping[str, frozenset[Any]] = field(factory=dict, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self._slices_by_service is not None:
            return
        by_service: dict[NamespacedName, list[corev1.EndpointSlice]] = {}
        for eps in self.endpoint_slices.values():
            service = service_of(eps)
            if service is not None:
                by_service.setdefault(service, []).append(eps)
        object.__setattr__(self, "_slices_by_service", {k: tuple(v) for k, v in by_service.items()})

    @classmethod
    def of(cls, docs: Iterable[Document]) -> Resources:
        # One pass, each document into its kind's map, in the documents' order (a build
        # sorts where order matters: precedence, by age), so that a full build and one from
        # `updated` (which appends) agree.
        maps: dict[str, dict[Any, Any]] = {attr: {} for attr in _ATTRIBUTE.values()}
        by_kind = {kind: maps[attr] for kind, attr in _ATTRIBUTE.items()}
        key = new_tuple
        for doc in docs:
            meta = doc.metadata
            kind = doc.kind
            if kind in _CLUSTER_SCOPED:
                by_kind[kind][meta.name] = doc
            else:
                by_kind[kind][key(NamespacedName, (meta.namespace or "", meta.name))] = doc
        return cls(
            gateway_classes=maps["gateway_classes"],
            gateways=maps["gateways"],
            tls_routes=maps["tls_routes"],
            reference_grants=maps["reference_grants"],
            backend_tls_policies=maps["backend_tls_policies"],
            client_traffic_policies=maps["client_traffic_policies"],
            backend_traffic_policies=maps["backend_traffic_policies"],
            services=maps["services"],
            endpoint_slices=maps["endpoint_slices"],
            secrets=maps["secrets"],
            config_maps=maps["config_maps"],
            namespaces=maps["namespaces"],
        )

    def updated(self, documents: Iterable[Document], deleted: Iterable[ObjectKey]) -> Resources:
        """These resources with `documents` put and `deleted` removed. Only the maps of the
        kinds touched are copied; the rest are shared with this value."""
        maps: dict[str, dict[Any, Any]] = {}
        changed: dict[str, set[Any]] = {}
        slices = self._slices_by_service
        assert slices is not None

        def writable(kind: str) -> dict[Any, Any]:
            attr = _ATTRIBUTE[kind]
            if attr not in maps:
                maps[attr] = dict(getattr(self, attr))
            return maps[attr]

        changed_slices: list[tuple[corev1.EndpointSlice | None, corev1.EndpointSlice | None]] = []
        puts = [(key_of(doc), doc) for doc in documents]
        for key, new in [*puts, *((key, None) for key in deleted)]:
            target = writable(key.kind)
            name = (
                key.name if key.kind in _CLUSTER_SCOPED else NamespacedName(key.namespace, key.name)
            )
            old = target.pop(name, None)
            if new is not None:
                target[name] = new
            changed.setdefault(_ATTRIBUTE[key.kind], set()).add(name)
            if key.kind == "EndpointSlice":
                changed_slices.append((old, new))  # type: ignore[arg-type]
        if changed_slices:
            slices = _reindexed(slices, changed_slices)
        changes = {attr: frozenset(keys) for attr, keys in changed.items()}
        return attrs.evolve(
            self, **maps, slices_by_service=slices, base=weakref.ref(self), changes=changes
        )

    def changed_since(self, before: Resources, attr: str) -> frozenset[Any] | None:
        """The keys of map `attr` that differ from `before`'s, when this value was made from
        `before` by `updated` (None: unknown, compare the maps)."""
        if getattr(self, attr) is getattr(before, attr):
            return frozenset()
        if self._base is None or self._base() is not before:
            return None
        return self._changes.get(attr, frozenset())

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """Labels of a namespace; one never created still has its implicit name label."""
        doc = self.namespaces.get(namespace)
        labels = dict(doc.metadata.labels or {}) if doc is not None else {}
        labels[NAMESPACE_NAME_LABEL] = namespace
        return labels

    def slices_of(self, service: NamespacedName) -> tuple[corev1.EndpointSlice, ...]:
        assert self._slices_by_service is not None
        return self._slices_by_service.get(service, ())


#: Kind -> the `Resources` attribute holding it.
_ATTRIBUTE = {
    "GatewayClass": "gateway_classes",
    "Gateway": "gateways",
    "TLSRoute": "tls_routes",
    "ReferenceGrant": "reference_grants",
    "BackendTLSPolicy": "backend_tls_policies",
    "ClientTrafficPolicy": "client_traffic_policies",
    "BackendTrafficPolicy": "backend_traffic_policies",
    "Service": "services",
    "EndpointSlice": "endpoint_slices",
    "Secret": "secrets",
    "ConfigMap": "config_maps",
    "Namespace": "namespaces",
}
_CLUSTER_SCOPED = frozenset({"GatewayClass", "Namespace"})


def service_of(eps: corev1.EndpointSlice) -> NamespacedName | None:
    """The Service an EndpointSlice belongs to (its kubernetes.io/service-name label)."""
    service = (eps.metadata.labels or {}).get(SERVICE_NAME_LABEL)
    return new_tuple(NamespacedName, (eps.metadata.namespace or "", service)) if service else None


def _reindexed(
    index: Mapping[NamespacedName, tuple[corev1.EndpointSlice, ...]],
    changes: Iterable[tuple[corev1.EndpointSlice | None, corev1.EndpointSlice | None]],
) -> dict[NamespacedName, tuple[corev1.EndpointSlice, ...]]:
    out = dict(index)
    for old, new in changes:
        if old is not None and (service := service_of(old)) is not None:
            kept = tuple(e for e in out.get(service, ()) if e is not old)
            if kept:
                out[service] = kept
            else:
                out.pop(service, None)
        if new is not None and (service := service_of(new)) is not None:
            out[service] = (*out.get(service, ()), new)
    return out
