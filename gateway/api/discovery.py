"""What the Kubernetes API discovery documents say of tlsgate (API.md "Kubernetes API
compatibility"): the groups, versions and resources served, as kubectl and client libraries
read them from `/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]` and the aggregated
discovery documents (`apidiscovery.k8s.io/v2`, which kubectl 1.27 and later ask for first).

Pure: documents from the kinds table. A resource lists only the verbs tlsgate serves, so a
client never tries one that would fail (kubectl checks `watch` before `get -w`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from attrs import frozen

from gateway import GATEWAY_GROUP, POLICY_GROUP
from gateway.api.kinds import KINDS, KindInfo

#: The Kubernetes API level the served paths follow (`/version`; kubectl warns when its own
#: minor version is more than one away).
KUBERNETES_MAJOR, KUBERNETES_MINOR = "1", "32"

#: kubectl's short names (`kubectl get gw`), as the upstream CRDs and core kinds define them,
#: and tlsgate's own for its policy kinds.
SHORT_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "GatewayClass": ("gc", "gwc"),
    "Gateway": ("gtw", "gw"),
    "ReferenceGrant": ("refgrant",),
    "Service": ("svc",),
    "Namespace": ("ns",),
    "ConfigMap": ("cm",),
    "BackendTLSPolicy": ("btlspolicy",),
    "ClientTrafficPolicy": ("ctp",),
    "BackendTrafficPolicy": ("btp",),
}

#: The verbs every stored kind serves.
VERBS: Final = ("create", "delete", "get", "list", "patch", "update", "watch")


@frozen
class Resource:
    """One REST resource of one group version."""

    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: The stored kind behind it (None: served but holds nothing, as events).
    info: KindInfo | None = None

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _resource(info: KindInfo) -> Resource:
    categories = ("gateway-api",) if info.group == GATEWAY_GROUP else ()
    if info.group == POLICY_GROUP:
        categories = ("tlsgate",)
    return Resource(
        info.plural,
        info.kind,
        info.namespaced,
        VERBS,
        SHORT_NAMES.get(info.kind, ()),
        categories,
        info,
    )


#: An always-empty events list, so that `kubectl describe` works (it lists the object's),
#: and `kubectl get events -w` (a watch with no events).
_EVENTS = Resource("events", "Event", True, ("list", "watch"), ("ev",))


def _served() -> dict[str, tuple[Resource, ...]]:
    """group/version ('v1' for the core group) -> its resources, in the kinds' order. Each
    kind is served at every version it is accepted in (API.md's kinds table: v1beta1 of
    Gateway, v1alpha2 of TLSRoute): the versions share one schema and one stored object, so
    `kubectl apply` of an older manifest finds its kind, and an answer says the version
    its path names. A group's versions come in the kinds' order, v1 first (preferred)."""
    served: dict[str, list[Resource]] = {}
    for info in KINDS:
        for api_version in info.api_versions:
            served.setdefault(api_version, []).append(_resource(info))
    served["v1"].append(_EVENTS)
    served["events.k8s.io/v1"] = [_EVENTS]
    return {gv: tuple(resources) for gv, resources in served.items()}


SERVED: Final = _served()


def split(group_version: str) -> tuple[str, str]:
    """(group, version); the core group is ''."""
    group, _, version = group_version.rpartition("/")
    return group, version


def find(group_version: str, plural: str) -> Resource | None:
    for resource in SERVED.get(group_version, ()):
        if resource.plural == plural:
            return resource
    return None


def _groups() -> dict[str, list[str]]:
    """Named groups (not the core one) -> their versions, preferred first."""
    groups: dict[str, list[str]] = {}
    for group_version in SERVED:
        group, version = split(group_version)
        if group:
            groups.setdefault(group, []).append(version)
    return groups


def version_info(tlsgate_version: str) -> dict[str, Any]:
    """`GET /version`."""
    return {
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": f"v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+tlsgate.{tlsgate_version}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    }


def api_versions() -> dict[str, Any]:
    """`GET /api`."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def _group(name: str, versions: Iterable[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def group_list() -> dict[str, Any]:
    """`GET /apis`."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name, versions) for name, versions in _groups().items()],
    }


def group(name: str) -> dict[str, Any] | None:
    """`GET /apis/{group}`, or None for a group not served."""
    versions = _groups().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(group_version: str) -> dict[str, Any] | None:
    """`GET /api/v1`, `GET /apis/{group}/{version}`, or None for a version not served."""
    resources = SERVED.get(group_version)
    if resources is None:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
                **({"categories": list(r.categories)} if r.categories else {}),
            }
            for r in resources
        ],
    }


#: The media type of aggregated discovery, as kubectl asks for it and needs it answered.
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def aggregated(core: bool) -> dict[str, Any]:
    """The aggregated discovery document of `/api` (`core`) or of `/apis`."""
    items = []
    groups = {"": ["v1"]} if core else _groups()
    for name, versions in groups.items():
        entries = []
        for version in versions:
            group_version = f"{name}/{version}" if name else version
            entries.append(
                {
                    "version": version,
                    "resources": [
                        {
                            "resource": r.plural,
                            "responseKind": {"group": name, "version": version, "kind": r.kind},
                            "scope": "Namespaced" if r.namespaced else "Cluster",
                            "singularResource": r.singular,
                            "verbs": list(r.verbs),
                            **({"shortNames": list(r.short_names)} if r.short_names else {}),
                            **({"categories": list(r.categories)} if r.categories else {}),
                        }
                        for r in SERVED[group_version]
                    ],
                    "freshness": "Current",
                }
            )
        items.append({"metadata": {"name": name} if name else {}, "versions": entries})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


@frozen
class Target:
    """What a Kubernetes resource path names: a resource of a group version, a namespace
    (None: all, or a cluster-scoped kind) and a name (None: the collection)."""

    group_version: str
    resource: Resource
    namespace: str | None = None
    name: str | None = None


class PathError(Exception):
    """A path that names nothing served (answered 404)."""


def parse_path(segments: list[str]) -> Target:
    """`api/v1/...` or `apis/{group}/{version}/...`, after the discovery paths: the resource
    a request is for. PathError says why not."""
    if segments[:2] == ["api", "v1"]:
        group_version, rest = "v1", segments[2:]
    elif segments[0] == "apis" and len(segments) >= 4:
        group_version, rest = f"{segments[1]}/{segments[2]}", segments[3:]
    else:
        raise PathError(f"the server could not find the requested resource ({'/'.join(segments)})")
    if group_version not in SERVED:
        raise PathError(f"the server does not serve {group_version}")
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
        if not namespace:
            raise PathError("an empty namespace names nothing")
    if any(not segment for segment in rest):
        raise PathError(f"the server could not find the requested resource ({'/'.join(segments)})")
    if not rest or len(rest) > 2:
        raise PathError(f"the server could not find the requested resource ({'/'.join(segments)})")
    resource = find(group_version, rest[0])
    if resource is None:
        raise PathError(f"the server does not serve {rest[0]} in {group_version}")
    name = rest[1] if len(rest) == 2 else None
    if namespace is not None and not resource.namespaced:
        raise PathError(f"{resource.kind} is cluster-scoped: it has no namespace")
    if namespace is None and name is not None and resource.namespaced:
        raise PathError(f"{resource.kind} is namespaced: name it under namespaces/{{namespace}}")
    return Target(group_version, resource, namespace, name)
