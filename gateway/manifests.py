"""Manifest text -> raw documents: JSON, a JSON array, a `kind: List`, or multi-document YAML.

Pure. YAML is read with the safe loader, with one change: timestamps stay strings, as they are
on the Kubernetes wire (`creationTimestamp: 2024-01-01T00:00:00Z` is not a datetime).
"""

from __future__ import annotations

import json
from typing import Any

import yaml


class ManifestError(ValueError):
    """The text is not JSON or YAML; the message says where."""


class _Loader(yaml.SafeLoader):
    pass


# Drop the implicit timestamp resolver: every other scalar keeps YAML 1.1 meaning, as kubectl's.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_documents(text: str) -> list[Any]:
    """Every document in `text`, with Lists and arrays flattened and empty documents dropped."""
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            loaded: list[Any] = [json.loads(text)]
        else:
            loaded = list(yaml.load_all(text, Loader=_Loader))  # _Loader is a SafeLoader
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}") from None
    out: list[Any] = []
    for document in loaded:
        out += _flatten(document)
    return out


def _flatten(document: Any) -> list[Any]:
    if document is None:
        return []
    if isinstance(document, list):
        return [d for item in document for d in _flatten(item)]
    if (
        isinstance(document, dict)
        and document.get("kind") == "List"
        and isinstance(document.get("items"), list)
    ):
        return [d for item in document["items"] for d in _flatten(item)]
    return [document]
