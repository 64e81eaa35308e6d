"""The columns a list of documents is shown with: by `tlsgate get`, and as the Kubernetes
`Table` that `kubectl get` asks for (API.md "Kubernetes API compatibility": the columns are
the ones `tlsgate get` prints).

Pure: the time comes in as a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.api.kinds import KindInfo
from gateway.api.names import RFC3339


def age(timestamp: str | None, now: datetime) -> str:
    """`5m`, `3h`, `2d`, as kubectl prints ages; `-` without a valid timestamp."""
    if not timestamp:
        return "-"
    try:
        then = datetime.strptime(timestamp, RFC3339).replace(tzinfo=UTC)
    except ValueError:
        return "-"
    seconds = int((now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def condition(conditions: Sequence[dict[str, Any]], kind: str) -> str:
    """`True`, or `False/Reason`, of the condition of that type; `-` without one."""
    for found in conditions:
        if found.get("type") == kind:
            status = found.get("status", "")
            return status if status == "True" else f"{status}/{found.get('reason', '')}"
    return "-"


def columns(info: KindInfo, item: dict[str, Any]) -> list[tuple[str, str]]:
    """The kind's own columns (between NAME and AGE) for one document's wire form."""
    spec, status = item.get("spec") or {}, item.get("status") or {}
    if info.kind == "GatewayClass":
        return [
            ("CONTROLLER", spec.get("controllerName", "")),
            ("ACCEPTED", condition(status.get("conditions", []), "Accepted")),
        ]
    if info.kind == "Gateway":
        addresses = ",".join(a["value"] for a in status.get("addresses", []))
        return [
            ("CLASS", spec.get("gatewayClassName", "")),
            ("ADDRESS", addresses or "-"),
            ("PROGRAMMED", condition(status.get("conditions", []), "Programmed")),
        ]
    if info.kind == "TLSRoute":
        parents = status.get("parents", [])
        accepted = ",".join(condition(p["conditions"], "Accepted") for p in parents) or "-"
        resolved = ",".join(condition(p["conditions"], "ResolvedRefs") for p in parents) or "-"
        return [
            ("HOSTNAMES", ",".join(spec.get("hostnames", []))),
            ("ACCEPTED", accepted),
            ("RESOLVED", resolved),
        ]
    if info.kind == "Namespace":
        return [("STATUS", status.get("phase", "Active"))]
    if info.kind in ("BackendTLSPolicy", "ClientTrafficPolicy", "BackendTrafficPolicy"):
        ancestors = status.get("ancestors", [])
        accepted = ",".join(condition(a["conditions"], "Accepted") for a in ancestors) or "-"
        return [("ACCEPTED", accepted)]
    return []


def wide_columns(info: KindInfo, item: dict[str, Any]) -> list[tuple[str, str]]:
    """The columns `-o wide` adds after the kind's own (priority 1 in a Table)."""
    spec, status = item.get("spec") or {}, item.get("status") or {}
    namespace = (item.get("metadata") or {}).get("namespace", "")
    if info.kind == "Gateway":
        attached = sum(int(entry.get("attachedRoutes", 0)) for entry in status.get("listeners", []))
        return [("LISTENERS", str(len(spec.get("listeners", [])))), ("ATTACHED", str(attached))]
    if info.kind == "TLSRoute":
        parents = [
            f"{ref.get('namespace', namespace)}/{ref.get('name', '')}"
            + (f"/{ref['sectionName']}" if ref.get("sectionName") else "")
            for ref in spec.get("parentRefs", [])
        ]
        backends = [
            f"{ref.get('namespace', namespace)}/{ref.get('name', '')}:{ref.get('port', '')}"
            for rule in spec.get("rules", [])
            for ref in rule.get("backendRefs", [])
        ]
        return [("PARENTS", ",".join(parents) or "-"), ("BACKENDS", ",".join(backends) or "-")]
    if info.kind in ("BackendTLSPolicy", "ClientTrafficPolicy", "BackendTrafficPolicy"):
        targets = [
            f"{ref.get('kind', '')}/{ref.get('name', '')}" for ref in spec.get("targetRefs", [])
        ]
        return [("TARGETS", ",".join(targets) or "-")]
    if info.kind == "Service":
        ports = [f"{p.get('port', '')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", [])]
        return [("PORTS", ",".join(ports) or "-")]
    return []


#: The Table's column descriptions (kubectl shows them with `--show-kind`, `explain`...).
_DESCRIPTIONS = {
    "NAME": "Name must be unique within a namespace.",
    "AGE": "Time since the object was created.",
    "CONTROLLER": "The controller that manages Gateways of this class.",
    "CLASS": "The GatewayClass of the Gateway.",
    "ADDRESS": "The addresses the Gateway is reachable at.",
    "PROGRAMMED": "The Gateway's Programmed condition.",
    "HOSTNAMES": "The hostnames the route matches.",
    "ACCEPTED": "The Accepted condition, per parent or ancestor.",
    "RESOLVED": "The ResolvedRefs condition, per parent.",
    "STATUS": "The phase of the namespace.",
    "LISTENERS": "How many listeners the Gateway has.",
    "ATTACHED": "Routes attached, over the Gateway's listeners.",
    "PARENTS": "The Gateways (and listeners) the route names.",
    "BACKENDS": "The Services (and ports) the route sends to.",
    "TARGETS": "What the policy targets.",
    "PORTS": "The Service's ports.",
}


def table(
    info: KindInfo,
    items: Sequence[dict[str, Any]],
    now: datetime,
    resource_version: str,
    continue_token: str | None = None,
    include: str = "Metadata",
) -> dict[str, Any]:
    """A `meta.k8s.io/v1` Table of the items: NAME, the kind's columns, AGE; each row with
    the object as `include` says (`includeObject`): its metadata (the default: kubectl adds
    the NAMESPACE column from it), the whole object (`Object`: `kubectl get --sort-by`
    sorts on it), or nothing (`None`)."""
    example = items[0] if items else {}
    own = [h for h, _ in columns(info, example)]
    wide = [h for h, _ in wide_columns(info, example)]
    # kubectl shows priority 1 only with -o wide; it keeps the order given.
    headers = [("NAME", 0), *((h, 0) for h in own), ("AGE", 0), *((h, 1) for h in wide)]
    definitions = [
        {
            "name": header.title() if header != "NAME" else "Name",
            "type": "string",
            "format": "name" if header == "NAME" else "",
            "description": _DESCRIPTIONS.get(header, ""),
            "priority": priority,
        }
        for header, priority in headers
    ]
    rows = []
    for item in items:
        meta = item.get("metadata") or {}
        cells = [
            meta.get("name", ""),
            *(v for _, v in columns(info, item)),
            age(meta.get("creationTimestamp"), now),
            *(v for _, v in wide_columns(info, item)),
        ]
        row: dict[str, Any] = {"cells": cells}
        if include == "Object":
            row["object"] = item
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }
        rows.append(row)
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }
