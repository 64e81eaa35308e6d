"""Server-side apply (`application/apply-patch+yaml`, `kubectl apply --server-side`): field
ownership by manager, as `metadata.managedFields` records it (API.md "Kubernetes API
compatibility": the fields a manager applied and no longer names are removed; a field another
manager owns is a 409 Conflict unless `force=true`).

Pure. A manager owns the fields its last applied configuration set: each leaf (a scalar, a
list, an empty object) by its path. Lists are owned whole, as the Gateway API CRDs declare
most of theirs (`x-kubernetes-list-type: atomic`). An apply:
- conflicts where it sets a field that another applier owns to another value (with `force`,
  it takes the field over);
- sets every field of its configuration (the others stay as they are);
- removes the fields it owned before and no longer names, unless another manager owns them
  too;
- leaves the manager owning exactly what it named.
Only appliers own fields here: a PUT or a merge patch (kubectl's client-side apply, `/v1`)
changes values without taking ownership, so it never makes a later apply conflict. Ownership
is recorded as Kubernetes writes it (`fieldsType: FieldsV1`, `f:`-prefixed keys), so
`kubectl get --show-managed-fields` reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen

Path = tuple[str, ...]
#: Fields no manager owns: the object's identity and what the server sets.
_UNOWNED = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
}


def field_paths(config: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    """The leaves a configuration sets."""
    found: set[Path] = set()
    for key, value in config.items():
        path = (*prefix, key)
        if path in _UNOWNED or path == ("status",):
            continue
        if isinstance(value, Mapping) and value:
            found |= field_paths(value, path)
        else:
            found.add(path)
    return found


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(paths):
        node = out
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return out


def from_fields_v1(fields: Any, prefix: Path = ()) -> set[Path]:
    found: set[Path] = set()
    if not isinstance(fields, Mapping):
        return found
    for key, value in fields.items():
        if not isinstance(key, str) or not key.startswith("f:"):
            continue  # `.` and `k:`/`v:` entries: list elements, owned whole here
        path = (*prefix, key[2:])
        inner = from_fields_v1(value, path)
        found |= inner or {path}
    return found


def _get(obj: Any, path: Path) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            child = obj[key] = {}
        obj = child
    obj[path[-1]] = copy.deepcopy(value)


def _delete(obj: dict[str, Any], path: Path) -> None:
    parents = []
    for key in path[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            return
        parents.append((obj, key))
        obj = child
    obj.pop(path[-1], None)
    # A map left empty by the removal goes too (what the manager set inside it is gone).
    for parent, key in reversed(parents):
        if parent[key] == {}:
            del parent[key]
        else:
            break


def _overlaps(a: Path, b: Path) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


@frozen
class Conflict:
    path: Path
    manager: str

    @property
    def field(self) -> str:
        return "." + ".".join(self.path)


@frozen
class Applied:
    """The object after the apply, and who owns what then."""

    merged: dict[str, Any]
    owners: dict[str, set[Path]]


def owners_of(managed: Sequence[Mapping[str, Any]] | None) -> dict[str, set[Path]]:
    """Each applier's fields, from `metadata.managedFields`."""
    out: dict[str, set[Path]] = {}
    for entry in managed or ():
        if entry.get("operation") == "Apply" and isinstance(entry.get("manager"), str):
            out.setdefault(entry["manager"], set()).update(from_fields_v1(entry.get("fieldsV1")))
    return out


def managed_fields(
    owners: Mapping[str, set[Path]],
    api_version: str,
    now: str,
    previous: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """`metadata.managedFields` for the owners. A manager whose fields did not change keeps
    its entry's time, so an apply that changes nothing writes nothing."""
    before = {
        entry.get("manager"): entry for entry in previous or () if entry.get("operation") == "Apply"
    }
    out = []
    for manager, paths in sorted(owners.items()):
        if not paths:
            continue
        fields = to_fields_v1(paths)
        old = before.get(manager)
        same = old is not None and old.get("fieldsV1") == fields
        out.append(
            {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": api_version,
                "time": old.get("time", now) if same and old is not None else now,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            }
        )
    return out


def _prefixes(paths: Iterable[Path]) -> set[Path]:
    """Every path and every path above it: a set to look an overlap up in, in O(depth)."""
    out: set[Path] = set()
    for path in paths:
        out.update(path[:i] for i in range(1, len(path) + 1))
    return out


def _identity(merged: dict[str, Any], config: Mapping[str, Any]) -> None:
    """The object's apiVersion, kind, name and namespace, as the configuration says."""
    for key in ("apiVersion", "kind"):
        if key in config:
            merged[key] = config[key]
    meta = merged.setdefault("metadata", {})
    for key in ("name", "namespace"):
        if key in config.get("metadata", {}):
            meta[key] = config["metadata"][key]


def server_side_apply(
    live: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    manager: str,
    owners: Mapping[str, set[Path]],
    *,
    force: bool,
    normalize: Callable[[dict[str, Any]], dict[str, Any]] = lambda wire: wire,
) -> Applied | list[Conflict]:
    """`config` applied by `manager` over `live` (None: a new object); the conflicts
    instead, when the result changes a field another applier owns and not `force`.
    `normalize` is what admission makes of a document (defaults filled in): a field the
    apply leaves at its live value after defaulting is no conflict, as in Kubernetes."""
    merged: dict[str, Any] = copy.deepcopy(dict(live)) if live is not None else {}
    wanted = field_paths(config)
    others = {m: set(p) for m, p in owners.items() if m != manager}
    for path in sorted(wanted):
        present, value = _get(config, path)
        if not present:
            continue
        if value == {} and isinstance(_get(merged, path)[1], dict):
            continue  # an empty map sets nothing in it: what others put there stays
        _set(merged, path, value)
    kept = _prefixes(wanted) | _prefixes(set().union(*others.values()) if others else set())
    for path in owners.get(manager, set()) - wanted:
        # Still named (now deeper, or shallower), or owned by another: not removed.
        if path in kept or any(path[:i] in wanted for i in range(1, len(path))):
            continue
        _delete(merged, path)
    _identity(merged, config)
    after = normalize(merged)
    before = live if live is not None else {}  # stored: admitted, defaults filled in already
    conflicts = []
    # Per other manager, every owned path and those above them: an overlap is a lookup.
    above = {other: _prefixes(paths) for other, paths in others.items()}
    for path in sorted(wanted):
        for other, paths in others.items():
            overlaps = path in above[other] or any(path[:i] in paths for i in range(1, len(path)))
            if not overlaps:
                continue
            taken = [p for p in paths if _overlaps(p, path)]
            if all(_get(after, p) == _get(before, p) for p in taken):
                continue  # unchanged: both own it (shared, as in Kubernetes)
            if force:
                paths.difference_update(taken)
            else:
                conflicts.append(Conflict(path, other))
    if conflicts:
        return conflicts
    return Applied(merged, {**others, manager: wanted})
