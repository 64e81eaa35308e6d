"""`tlsgate describe`: one document as a person reads it, the way `kubectl describe` lays it
out: its metadata, its spec as YAML, and every condition of its status as a table, under
the part of the status it belongs to (the Gateway, a listener, a route's parent, a policy's
ancestor).

Pure: a document's wire form in, lines out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml


def describe_lines(item: dict[str, Any]) -> list[str]:
    meta = item.get("metadata") or {}
    lines = [
        f"Name:              {meta.get('name', '')}",
    ]
    if meta.get("namespace"):
        lines.append(f"Namespace:         {meta['namespace']}")
    lines += [
        f"Kind:              {item.get('kind', '')} ({item.get('apiVersion', '')})",
        f"Labels:            {_pairs(meta.get('labels'))}",
        f"Annotations:       {_pairs(meta.get('annotations'), skip_long=True)}",
        f"Created:           {meta.get('creationTimestamp', '-')}",
        f"Generation:        {meta.get('generation', '-')}",
        f"Resource version:  {meta.get('resourceVersion', '-')}",
    ]
    body = {k: v for k, v in item.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    for key, value in body.items():
        title = f"{key[:1].upper()}{key[1:]}:"
        if not isinstance(value, dict | list):
            lines.append(f"{title:<19}{value}")
            continue
        if key == "data" and item.get("kind") == "Secret" and isinstance(value, dict):
            # As kubectl describe does: the keys and their sizes, never the values.
            shown: Any = {name: f"{len(str(v)) * 3 // 4} bytes" for name, v in value.items()}
        else:
            shown = value
        lines.append(title)
        text = yaml.safe_dump(shown, sort_keys=False, default_flow_style=False)
        lines += [f"  {line}" for line in text.splitlines()]
    status = item.get("status")
    if status:
        lines.append("Status:")
        for where, conditions in placed_conditions(status):
            lines.append(f"  {where or 'Conditions'}:")
            lines += _condition_table(conditions)
    return lines


def _pairs(values: dict[str, str] | None, *, skip_long: bool = False) -> str:
    if not values:
        return "<none>"
    shown = []
    for key, value in sorted(values.items()):
        # last-applied-configuration and the like: too long to read here.
        text = f"({len(value)} characters)" if skip_long and len(value) > 80 else value
        shown.append(f"{key}={text}")
    return ", ".join(shown)


def placed_conditions(status: dict[str, Any], where: str = "") -> Iterator[tuple[str, list[Any]]]:
    """Each `conditions` list of a status, with a name for where it is ("" for the
    object's own; `Listener tls (2 routes)`, `Parent Gateway infra/gw`...)."""
    if isinstance(status.get("conditions"), list) and status["conditions"]:
        yield where, status["conditions"]
    for key, value in status.items():
        if not isinstance(value, list):
            continue
        for entry in value:
            if isinstance(entry, dict) and key != "conditions":
                yield from placed_conditions(entry, _entry_name(key, entry))


def _entry_name(key: str, entry: dict[str, Any]) -> str:
    if key == "listeners":
        return f"Listener {entry.get('name', '')} ({entry.get('attachedRoutes', 0)} routes)"
    ref = entry.get("parentRef") or entry.get("ancestorRef")
    if isinstance(ref, dict):
        name = f"{ref.get('namespace', '')}/{ref.get('name', '')}".lstrip("/")
        if ref.get("sectionName"):
            name += f" listener {ref['sectionName']}"
        return f"{'Parent' if key == 'parents' else 'Ancestor'} {ref.get('kind', '')} {name}"
    return key


def _condition_table(conditions: list[Any]) -> list[str]:
    rows = [("Type", "Status", "Reason", "Since", "Message")]
    for condition in conditions:
        if isinstance(condition, dict):
            rows.append(
                (
                    str(condition.get("type", "")),
                    str(condition.get("status", "")),
                    str(condition.get("reason", "")),
                    str(condition.get("lastTransitionTime", "")),
                    str(condition.get("message", "")),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "    "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[4]
        for row in rows
    ]
