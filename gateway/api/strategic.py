"""Strategic merge patch (`application/strategic-merge-patch+json`) for the core kinds
tlsgate stores, as kubectl sends it for Services, Secrets, ConfigMaps, Namespaces and
EndpointSlices (API.md "Kubernetes API compatibility": core kinds, with their Kubernetes
merge keys).

Pure. A strategic merge patch is a JSON merge patch (RFC 7386) with three differences, as
Kubernetes documents them (sig-api-machinery strategic-merge-patch.md, and
k8s.io/apimachinery/pkg/util/strategicpatch):
- a list whose field has a merge key (a Service's `spec.ports`, by `port`) is merged element
  by element: an element of the patch replaces the fields it names of the element with the
  same key, or is added; `{"port": 80, "$patch": "delete"}` removes that element;
  `$setElementOrder/ports` gives the order of the merged list; `$patch: replace` as an
  element replaces the whole list;
- a list of primitives with the merge strategy (`metadata.finalizers`) is a set: the patch's
  values are added, and `$deleteFromPrimitiveList/finalizers` removes values;
- `$patch: replace` in a map replaces the map, `$patch: delete` removes it, and `$retainKeys`
  keeps only the keys it lists.
Every other list is replaced whole, as in a merge patch; `null` removes a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: (kind or "*", dotted path of a list field) -> its merge key ("" for a set of
#: primitives): the fields of the served core kinds that Kubernetes merges by key.
MERGE_KEYS: Final[Mapping[tuple[str, str], str]] = {
    ("Service", "spec.ports"): "port",
    ("*", "metadata.finalizers"): "",
    ("*", "metadata.ownerReferences"): "uid",
}

#: Kinds a strategic merge patch may name: the core kinds (the API server refuses it for
#: custom resources, and so does tlsgate for the Gateway API and policy kinds).
KINDS: Final = frozenset({"Service", "Secret", "ConfigMap", "Namespace", "EndpointSlice"})


class PatchError(ValueError):
    """A patch that cannot be applied (a bad directive, a wrong type)."""


def _merge_key(kind: str, path: str) -> str | None:
    return MERGE_KEYS.get((kind, path), MERGE_KEYS.get(("*", path)))


def strategic_merge(kind: str, original: Any, patch: Any) -> Any:
    """`original` (a document's wire form) with the strategic merge `patch` applied."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    try:
        return _merge_map(kind, "", original if isinstance(original, dict) else {}, patch)
    except TypeError:  # a merge key or a set member that is an object or a list
        raise PatchError("a merge key or a list value is not a string or a number") from None


def _merge_map(kind: str, path: str, original: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f"{path or 'the patch'}: unknown $patch directive {directive!r}")
    out = dict(original)
    orders: dict[str, Any] = {}
    deletions: dict[str, Any] = {}
    for key, value in patch.items():
        if key == "$retainKeys":
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.removeprefix("$setElementOrder/")] = value
        elif key.startswith("$deleteFromPrimitiveList/"):
            deletions[key.removeprefix("$deleteFromPrimitiveList/")] = value
        elif key.startswith("$"):
            raise PatchError(f"{path or 'the patch'}: unknown directive {key!r}")
        else:
            _merge_field(kind, f"{path}.{key}" if path else key, out, key, value)
    return _finish(kind, path, out, orders, deletions, patch.get("$retainKeys"))


def _merge_field(kind: str, field: str, out: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        out.pop(key, None)
    elif isinstance(value, dict):
        before = out.get(key)
        merged = _merge_map(kind, field, before if isinstance(before, dict) else {}, value)
        if merged is None:
            out.pop(key, None)
        else:
            out[key] = merged
    elif isinstance(value, list):
        out[key] = _merge_list(kind, field, out.get(key), value)
    else:
        out[key] = value


def _finish(
    kind: str,
    path: str,
    out: dict[str, Any],
    orders: dict[str, Any],
    deletions: dict[str, Any],
    retain: Any,
) -> dict[str, Any]:
    """The map's directives, once its fields are merged."""
    for key, values in deletions.items():
        if not isinstance(values, list) or not isinstance(out.get(key, []), list):
            raise PatchError(f"$deleteFromPrimitiveList/{key} takes a list")
        out[key] = [v for v in out.get(key, []) if v not in values]
    for key, order in orders.items():
        if isinstance(out.get(key), list) and isinstance(order, list):
            out[key] = _ordered(kind, f"{path}.{key}" if path else key, out[key], order)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("$retainKeys takes a list of field names")
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(kind: str, path: str, original: Any, patch: list[Any]) -> list[Any]:
    key = _merge_key(kind, path)
    if key is None:
        return [item for item in patch if not _is_directive(item)]  # replaced whole
    current = list(original) if isinstance(original, list) else []
    if any(_is_directive(item) and item.get("$patch") == "replace" for item in patch):
        # A bare {"$patch": "replace"} element: the patch's elements replace the list.
        return [item for item in patch if not _is_directive(item)]
    if key == "":  # a set of primitives
        seen = set(current)
        added = []
        for item in patch:
            if item not in seen:
                seen.add(item)
                added.append(item)
        return current + added
    # By merge key: one index, not a scan per element (lists of thousands stay linear).
    index = {
        old.get(key): i for i, old in enumerate(current) if isinstance(old, dict) and key in old
    }
    deleted: set[int] = set()
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{path}: every element needs its merge key {key!r}")
        at = index.get(item[key])
        if item.get("$patch") == "delete":
            if at is not None:
                deleted.add(at)
            continue
        if at is None:
            index[item[key]] = len(current)
            current.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            current[at] = _merge_map(kind, path, current[at], item)
    return [item for i, item in enumerate(current) if i not in deleted]


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and set(item) <= {"$patch"}


def _ordered(kind: str, path: str, items: list[Any], order: list[Any]) -> list[Any]:
    """The merged list in `$setElementOrder`'s order; elements it does not name last."""
    key = _merge_key(kind, path)
    if not key:
        present, wanted = set(items), set(order)
        return [v for v in order if v in present] + [v for v in items if v not in wanted]
    names = [o.get(key) for o in order if isinstance(o, dict)]
    named = set(names)
    by_key = {item.get(key): item for item in items if isinstance(item, dict)}
    first = [by_key[name] for name in names if name in by_key]
    return first + [
        item for item in items if not isinstance(item, dict) or item.get(key) not in named
    ]
