"""The OpenAPI documents (gateway/api/openapi.py) as kubectl reads them: every served kind
with its schema and group-version-kind, and every PATCH offering fieldValidation (without
it kubectl validates on its own, against a v2 document it asks for as protobuf)."""

from __future__ import annotations

from typing import Any

import attrs

from gateway.api import corev1, model, status, traffic
from gateway.api.convert import wire_name
from gateway.api.descriptions import DESCRIPTIONS
from gateway.api.discovery import SERVED
from gateway.api.openapi import v3_document, v3_path, v3_root


def test_every_description_names_a_field() -> None:
    classes = {
        c.__name__: c
        for module in (model, traffic, corev1, status)
        for c in vars(module).values()
        if isinstance(c, type) and attrs.has(c)
    }
    for cls, field in DESCRIPTIONS:
        assert cls in classes, cls
        assert field in [wire_name(f.name) for f in attrs.fields(classes[cls])], (cls, field)


def _undescribed(schema: Any, path: str) -> list[str]:
    """The properties under `schema` that say nothing of themselves."""
    found: list[str] = []
    if isinstance(schema, dict):
        for name, value in schema.get("properties", {}).items():
            if not value.get("description"):
                found.append(f"{path}.{name}")
            found += _undescribed(value, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            found += _undescribed(schema.get(key), f"{path}[]")
    return found


def test_kubectl_explain_has_something_to_say_of_every_field() -> None:
    for group_version in SERVED:
        document = v3_document(group_version)
        assert document is not None
        for name, schema in document["components"]["schemas"].items():
            assert _undescribed(schema, name) == [], group_version


def test_every_kind_has_a_schema_and_every_patch_takes_field_validation() -> None:
    root = v3_root()["paths"]
    for group_version, resources in SERVED.items():
        assert v3_path(group_version) in root
        document = v3_document(group_version)
        assert document is not None
        schemas = document["components"]["schemas"]
        kinds = {
            gvk["kind"]
            for schema in schemas.values()
            for gvk in schema.get("x-kubernetes-group-version-kind", [])
        }
        for resource in resources:
            if resource.info is not None:
                assert resource.kind in kinds
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                assert "x-kubernetes-group-version-kind" in operation, (path, method)
                if method == "patch":
                    names = [p["name"] for p in operation["parameters"] if p["in"] == "query"]
                    assert "fieldValidation" in names, path
                    # No strategic merge offered: kubectl would build one from the schema.
                    assert (
                        "application/strategic-merge-patch+json"
                        not in operation["requestBody"]["content"]
                    )


def test_described_fields_reach_the_schema() -> None:
    document = v3_document("gateway.networking.k8s.io/v1")
    assert document is not None
    route = document["components"]["schemas"]["io.k8s.networking.gateway.v1.TLSRoute"]
    hostnames = route["properties"]["spec"]["properties"]["hostnames"]
    assert hostnames["description"].startswith("SNI names the route serves")
