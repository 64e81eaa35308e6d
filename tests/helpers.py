"""Small builders for the pure-core tests: manifests in, admitted documents and snapshots out."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from gateway.api.bundle import admit_all
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.manifests import parse_documents
from gateway.api.status import Condition, GatewayClassStatus, GatewayStatus, RouteStatus, Status
from gateway.routing.snapshot import Snapshot
from gateway.store import metadata
from gateway.store.facts import compile_snapshot

NOW = "2026-01-01T00:00:00Z"

GATEWAY_CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tlsgate}
spec: {controllerName: tlsgate.dev/gateway-controller}
"""


class World:
    """What a store would hold: documents with server metadata, and the last snapshot, so a
    test can apply a sequence of changes exactly as the admin API will."""

    def __init__(self) -> None:
        self.docs: dict[ObjectKey, Document] = {}
        self.version = 0
        self.snapshot: Snapshot | None = None
        self.clock = 0

    def now(self) -> str:
        return f"2026-01-01T00:{self.clock // 60:02d}:{self.clock % 60:02d}Z"

    def apply(self, text: str) -> Snapshot:
        documents, rejected = admit_all(parse_documents(text))
        if rejected:
            raise rejected[0][1]
        for doc in documents:
            key = key_of(doc)
            self.version += 1
            self.clock += 1
            self.docs[key] = metadata.assign(
                doc,
                previous=self.docs.get(key),
                uid=str(key),
                now=self.now(),
                resource_version=str(self.version),
            )
        return self.build()

    def delete(self, kind: str, namespace: str, name: str) -> Snapshot:
        del self.docs[ObjectKey(kind, namespace, name)]
        return self.build()

    def build(self, **runtime: Any) -> Snapshot:
        self.clock += 1
        previous = self.snapshot.statuses if self.snapshot is not None else {}
        self.snapshot = compile_snapshot(
            self.docs.values(),
            now=self.now(),
            generation=self.version,
            previous=previous,
            **runtime,
        )
        return self.snapshot


def snapshot_of(text: str, **runtime: Any) -> Snapshot:
    world = World()
    world.apply(text)
    return world.build(**runtime) if runtime else world.snapshot  # type: ignore[return-value]


def conditions(
    snapshot: Snapshot,
    kind: str,
    namespace: str,
    name: str,
    listener: str | None = None,
    parent: int = 0,
) -> dict[str, Condition]:
    status: Status = snapshot.statuses[ObjectKey(kind, namespace, name)]
    if isinstance(status, GatewayStatus) and listener is not None:
        found = next(lst for lst in status.listeners if lst.name == listener)
        return {c.type: c for c in found.conditions}
    if isinstance(status, RouteStatus):
        return {c.type: c for c in status.parents[parent].conditions}
    assert isinstance(status, GatewayStatus | GatewayClassStatus)
    return {c.type: c for c in status.conditions}


def reasons(found: Mapping[str, Condition]) -> dict[str, tuple[str, str]]:
    return {t: (c.status, c.reason) for t, c in found.items()}


def with_changes(base: str, changes: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of a YAML document with `a.b[0].c` paths set (None deletes the key)."""
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(base))
    for path, value in changes:
        parts: list[str | int] = []
        for segment in path.split("."):
            name, *indexes = segment.replace("]", "").split("[")
            parts.append(name)
            parts += [int(i) for i in indexes]
        target: Any = doc
        for part in parts[:-1]:
            target = target[part]
        if value is None:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return doc
