"""Manifest text -> raw documents: JSON, a JSON array, a `kind: List`, or multi-document YAML.

Pure. YAML is read with the safe loader (LibYAML's when installed: the pure-Python one takes
seconds for a 4 MiB body), with one change: timestamps stay strings, as they are on the
Kubernetes wire (`creationTimestamp: 2024-01-01T00:00:00Z` is not a datetime).

Text from the network is hostile until shown otherwise, so before anything is built from it:
- aliases may add at most MAX_ALIASED_NODES nodes to a document (a 400-byte "billion laughs"
  document expands to 10^9), and may not be recursive; Kubernetes refuses "excessive aliasing"
  too (sigs.k8s.io/yaml);
- nesting deeper than MAX_DEPTH is refused (Gateway API documents are about 10 deep);
- a key repeated in one mapping or object is an error, as kubectl's strict decoding says, not
  "the last one wins".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

import yaml

MAX_DEPTH: Final = 100
MAX_ALIASED_NODES: Final = 100_000


class ManifestError(ValueError):
    """The text is not JSON or YAML, or is refused as hostile; the message says where."""


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges are meant to be overridden
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if duplicate:
                raise ManifestError(f"duplicate key {key!r} at {_where(key_node)}")
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


# Drop the implicit timestamp resolver: every other scalar keeps YAML 1.1 meaning, as kubectl's.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _where(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1} column {mark.column + 1}"


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def check_node(root: yaml.Node) -> None:
    """Refuse a composed YAML document whose aliases expand it by more than
    MAX_ALIASED_NODES nodes, refer to themselves, or that nests deeper than MAX_DEPTH.
    An alias is the same node object reached twice, so sizes are memoised per node: the
    check costs one visit per distinct node, whatever the expansion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            children = list(_children(node))
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise ManifestError(f"a recursive alias at {_where(child)}")
            if id(child) not in size:
                stack.append((child, False))
    if depth[id(root)] > MAX_DEPTH:
        raise ManifestError(f"the document nests deeper than {MAX_DEPTH} levels")
    if size[id(root)] - len(size) > MAX_ALIASED_NODES:
        raise ManifestError(
            f"excessive aliasing: aliases expand the document by {size[id(root)] - len(size)} "
            f"nodes (at most {MAX_ALIASED_NODES})"
        )


def check_depth(value: Any) -> None:
    """Refuse a parsed JSON value nested deeper than MAX_DEPTH (iteratively: a deep value
    must not be able to exhaust the stack here either). Only containers are visited: an
    8 MB bundle is some 300,000 values, most of them strings."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, level = pop()
        if level > MAX_DEPTH:
            raise ManifestError(f"the document nests deeper than {MAX_DEPTH} levels")
        kind = type(item)
        if kind is not dict and kind is not list:
            continue
        for child in item.values() if kind is dict else item:
            if type(child) is dict or type(child) is list:
                push((child, level + 1))


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # built in C; a duplicate shows as fewer keys than pairs
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ManifestError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def load_json(text: str | bytes) -> Any:
    """One JSON value, refusing duplicate keys and deep nesting (ManifestError); a value that
    is not JSON raises json.JSONDecodeError (or UnicodeDecodeError for bytes)."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_object)
    except RecursionError:
        raise ManifestError(f"the document nests deeper than {MAX_DEPTH} levels") from None
    check_depth(value)
    return value


def _load_yaml(text: str) -> list[Any]:
    loader = _Loader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            check_node(node)
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


def parse_documents(text: str) -> list[Any]:
    """Every document in `text`, with Lists and arrays flattened and empty documents dropped."""
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            loaded: list[Any] = [load_json(text)]
        else:
            loaded = _load_yaml(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}") from None
    except RecursionError:  # the pure-Python loader, when LibYAML is absent
        raise ManifestError(f"the document nests deeper than {MAX_DEPTH} levels") from None
    out: list[Any] = []
    for document in loaded:
        out += flatten(document)
    return out


def flatten(document: Any) -> list[Any]:
    """The documents in one parsed value: arrays and `kind: List` items, recursively."""
    if document is None:
        return []
    if isinstance(document, list):
        return [d for item in document for d in flatten(item)]
    if (
        isinstance(document, dict)
        and document.get("kind") == "List"
        and isinstance(document.get("items"), list)
    ):
        return [d for item in document["items"] for d in flatten(item)]
    return [document]
