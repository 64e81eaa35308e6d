"""The converter: what a user writes comes back the same, plus defaults and server metadata."""

from __future__ import annotations

import base64
import copy
import functools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api import corev1
from gateway.api.convert import (
    CONVERTER,
    FAST_CONVERTER,
    Invalid,
    structure_document,
    unstructure_document,
)
from gateway.api.kinds import BY_KIND
from gateway.api.manifests import ManifestError, parse_documents
from gateway.api.model import TLSRoute
from tests.test_admission import POLICY

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
dns_names = st.lists(labels, min_size=1, max_size=4).map(".".join)
hostnames = st.one_of(
    dns_names.filter(lambda h: not h.replace(".", "").isdigit()), dns_names.map(lambda h: "*." + h)
)
ports = st.integers(1, 65535)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts holding any subset of `fields`: omitted keys must stay omitted."""
    return st.fixed_dictionaries({}, optional=fields)


parent_refs = st.builds(
    lambda required, optional: {**required, **optional},
    st.fixed_dictionaries({"name": labels}),
    _optional(
        group=st.just("gateway.networking.k8s.io"),
        kind=st.just("Gateway"),
        namespace=labels,
        port=ports,
    ),
)
backend_refs = st.builds(
    lambda required, optional: {**required, **optional},
    st.fixed_dictionaries({"name": labels, "port": ports}),
    _optional(
        group=st.just(""),
        kind=st.just("Service"),
        namespace=labels,
        weight=st.integers(0, 1_000_000),
    ),
)
routes = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["gateway.networking.k8s.io/v1"]),
        "kind": st.just("TLSRoute"),
        "metadata": st.fixed_dictionaries(
            {"name": labels, "namespace": labels},
            optional={
                "labels": st.dictionaries(labels, labels, max_size=3),
                "annotations": st.dictionaries(labels, st.text(max_size=20), max_size=3),
            },
        ),
        "spec": st.fixed_dictionaries(
            {
                "hostnames": st.lists(hostnames, min_size=1, max_size=5),
                "rules": st.lists(
                    st.fixed_dictionaries(
                        {"backendRefs": st.lists(backend_refs, min_size=1, max_size=4)},
                        optional={"name": labels},
                    ),
                    min_size=1,
                    max_size=1,
                ),
            },
            optional={"parentRefs": st.lists(parent_refs, max_size=1)},
        ),
    }
)


def _contains(outer: Any, inner: Any) -> bool:
    """Is every key and value of `inner` present, unchanged, in `outer`?"""
    if isinstance(inner, dict):
        return isinstance(outer, dict) and all(
            k in outer and _contains(outer[k], v) for k, v in inner.items()
        )
    if isinstance(inner, list):
        return (
            isinstance(outer, list)
            and len(outer) == len(inner)
            and all(_contains(o, i) for o, i in zip(outer, inner, strict=True))
        )
    return bool(outer == inner and type(outer) is type(inner))


@given(routes)
def test_round_trip_keeps_what_the_user_wrote(wire: dict[str, Any]) -> None:
    doc = structure_document(wire)
    out = unstructure_document(doc)
    assert _contains(out, wire)
    assert structure_document(out) == doc


def test_defaults_are_filled_in_before_validation() -> None:
    doc = structure_document(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw"},
            "spec": {
                "gatewayClassName": "c",
                "listeners": [
                    {
                        "name": "t",
                        "port": 443,
                        "protocol": "TLS",
                        "tls": {"certificateRefs": [{"name": "s"}]},
                    }
                ],
                "addresses": [{"value": "10.0.0.1"}],
            },
        }
    )
    out = unstructure_document(doc)
    listener = out["spec"]["listeners"][0]
    assert out["metadata"]["namespace"] == "default"
    assert listener["tls"]["mode"] == "Terminate"
    assert listener["tls"]["certificateRefs"] == [{"group": "", "kind": "Secret", "name": "s"}]
    assert listener["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    assert out["spec"]["addresses"] == [{"type": "IPAddress", "value": "10.0.0.1"}]


def test_v1alpha2_and_v1alpha3_routes_are_converted_to_v1() -> None:
    for version in ("v1alpha2", "v1alpha3"):
        doc = structure_document(
            {
                "apiVersion": f"gateway.networking.k8s.io/{version}",
                "kind": "TLSRoute",
                "metadata": {"name": "r"},
                "spec": {
                    "hostnames": ["a.example.com"],
                    "rules": [{"backendRefs": [{"name": "s", "port": 1}]}],
                },
            }
        )
        assert isinstance(doc, TLSRoute)
        assert doc.api_version == "gateway.networking.k8s.io/v1"


def test_v1alpha2_route_without_hostnames_is_rejected() -> None:
    with pytest.raises(Invalid) as caught:
        structure_document(
            {
                "apiVersion": "gateway.networking.k8s.io/v1alpha2",
                "kind": "TLSRoute",
                "metadata": {"name": "r"},
                "spec": {"rules": [{"backendRefs": [{"name": "s", "port": 1}]}]},
            }
        )
    assert [c.field for c in caught.value.causes] == ["spec.hostnames"]


def test_client_status_is_ignored_and_namespace_label_added() -> None:
    doc = structure_document(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "apps", "labels": {"team": "a"}},
            "status": {"phase": "Active"},
        }
    )
    assert unstructure_document(doc) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "apps",
            "labels": {"team": "a", "kubernetes.io/metadata.name": "apps"},
        },
    }


def test_cluster_scoped_kinds_drop_a_namespace() -> None:
    doc = structure_document(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "c", "namespace": "x"},
            "spec": {"controllerName": "a.b/c"},
        }
    )
    assert doc.metadata.namespace is None


def test_string_data_is_folded_and_private_keys_never_come_back() -> None:
    doc = structure_document(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": "CERT", "tls.key": "KEY"},
        }
    )
    assert isinstance(doc, corev1.Secret)
    assert doc.data == {
        "tls.crt": base64.b64encode(b"CERT").decode(),
        "tls.key": base64.b64encode(b"KEY").decode(),
    }
    out = unstructure_document(doc)
    assert out["data"] == {"tls.crt": base64.b64encode(b"CERT").decode()}
    assert "stringData" not in out
    assert "KEY" not in repr(out)
    assert base64.b64encode(b"KEY").decode() not in repr(out)


def test_manifests_multi_document_yaml_lists_and_json() -> None:
    yaml_text = """
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
---
# a comment-only document is skipped
---
apiVersion: v1
kind: Namespace
metadata: {name: b, creationTimestamp: 2024-01-01T00:00:00Z}
"""
    docs = parse_documents(yaml_text)
    assert [d["metadata"]["name"] for d in docs] == ["a", "b"]
    assert docs[1]["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"  # not a datetime
    assert parse_documents('[{"kind": "A"}, {"kind": "B"}]') == [{"kind": "A"}, {"kind": "B"}]


@pytest.mark.parametrize("text", ["{not json", "a: b: c", "key: [unclosed"])
def test_garbage_is_a_manifest_error(text: str) -> None:
    with pytest.raises(ManifestError):
        parse_documents(text)


def _corpus() -> list[dict[str, Any]]:
    """Every document of the translate cases and the examples: each kind, most fields."""
    root = Path(__file__).parent
    files = [*sorted((root / "data" / "translate").glob("*.in.yaml"))]
    files += sorted((root.parent / "examples").glob("*.yaml"))
    docs = [d for f in files for d in parse_documents(f.read_text())]
    docs += parse_documents(POLICY + "---\n" + CONFIG_MAP)
    return [d for d in docs if isinstance(d, dict) and d.get("kind") in BY_KIND]


CONFIG_MAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: ca, namespace: apps, labels: {team: db}}
data: {ca.crt: "-----BEGIN CERTIFICATE-----"}
"""
CORPUS = _corpus()
ODD_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", "443", [], [1], {}, {"a": 1}, [{}]]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*path, index))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(CORPUS)))
    doc.pop("status", None)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc)[1:] if p not in (("kind",), ("apiVersion",))]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = functools.reduce(lambda v, k: v[k], path[:-1], doc)
        action = draw(st.sampled_from(["replace", "delete", "unknown"]))
        if action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent["notAField"] = 1
    return doc


def _structured(converter: Any, doc: dict[str, Any]) -> object:
    info = BY_KIND[doc["kind"]]
    try:
        return converter.get_structure_hook(info.cls)(doc, info.cls)
    except Exception as exc:  # which one is not the point: whether both fail
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_the_fast_converter_accepts_exactly_what_the_detailed_one_does(doc: dict[str, Any]) -> None:
    # structure_document takes the fast pass first and the detailed one only on failure: a
    # document the fast one took that the detailed one refuses would skip validation.
    fast, detailed = _structured(FAST_CONVERTER, doc), _structured(CONVERTER, doc)
    if isinstance(detailed, type):
        assert isinstance(fast, type), f"only the detailed converter refuses {doc}"
    else:
        assert fast == detailed


def _shape(doc: dict[str, Any]) -> frozenset[tuple[Any, ...]]:
    return frozenset(tuple("#" if isinstance(k, int) else k for k in p) for p in _paths(doc))


def _single_mutations() -> list[dict[str, Any]]:
    """Every single change to every differently shaped document of the corpus: each field
    replaced by each odd value, deleted, or given an unknown sibling."""
    shapes: dict[tuple[str, frozenset[tuple[Any, ...]]], dict[str, Any]] = {}
    for doc in CORPUS:
        shapes.setdefault((doc["kind"], _shape(doc)), doc)
    out = []
    for doc in shapes.values():
        for path in _paths(doc)[1:]:
            if path in (("kind",), ("apiVersion",), ("status",)):
                continue
            for value in [*ODD_VALUES, "delete", "unknown"]:
                changed = copy.deepcopy(doc)
                parent = functools.reduce(lambda v, k: v[k], path[:-1], changed)
                if value == "delete":
                    if not isinstance(parent, dict):
                        continue
                    del parent[path[-1]]
                elif value == "unknown":
                    if not isinstance(parent, dict):
                        continue
                    parent["notAField"] = 1
                else:
                    parent[path[-1]] = copy.deepcopy(value)
                out.append(changed)
    return out


def test_the_fast_converter_refuses_every_single_change_the_detailed_one_refuses() -> None:
    refused = 0
    for doc in _single_mutations():
        fast, detailed = _structured(FAST_CONVERTER, doc), _structured(CONVERTER, doc)
        if isinstance(detailed, type):
            refused += 1
            assert isinstance(fast, type), f"only the detailed converter refuses {doc}"
        else:
            assert fast == detailed
    assert refused > 1000  # the mutations do reach the checks


def test_the_corpus_covers_every_kind() -> None:
    assert {d["kind"] for d in CORPUS} == set(BY_KIND)
