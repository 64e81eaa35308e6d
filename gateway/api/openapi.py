"""OpenAPI schemas of every served kind, generated from the model (API.md "Kubernetes API
compatibility": `/openapi/v2` and `/openapi/v3`, so that kubectl validates and `kubectl
explain` works).

Pure. The model is the schema: each attrs class is an object whose properties are its fields
under their wire names (`convert.wire_name`), required when the field has no default, with
the default when it has a plain one; a class's docstring is its description. Core kinds keep
only the fields tlsgate reads, and the rest of a real Service or Secret is accepted and
dropped (as the API server prunes), so their schemas preserve unknown fields: kubectl must not
refuse a `clusterIP` that tlsgate ignores.

Documents follow the API server's: a v3 document per group version with its resource paths
(each operation carrying `x-kubernetes-group-version-kind` and `x-kubernetes-action`, and the
writes the `dryRun`, `fieldManager` and `fieldValidation` parameters that tell kubectl to let
the server validate), schemas under `components.schemas` named as Kubernetes names them; the
v2 document has the same schemas as `definitions`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, Union, get_args, get_origin

import attrs

from gateway.api import corev1, status
from gateway.api.convert import wire_name
from gateway.api.descriptions import DESCRIPTIONS
from gateway.api.discovery import SERVED, Resource, split
from gateway.api.kinds import KindInfo
from gateway.api.model import ObjectMeta

#: Each kind's status value, as `with_status` adds it to a document.
_STATUS: Final = {
    "GatewayClass": status.GatewayClassStatus,
    "Gateway": status.GatewayStatus,
    "TLSRoute": status.RouteStatus,
    "BackendTLSPolicy": status.PolicyStatus,
    "ClientTrafficPolicy": status.PolicyStatus,
    "BackendTrafficPolicy": status.PolicyStatus,
}
_OBJECT_META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _description(cls: type) -> str:
    doc = cls.__doc__
    # attrs gives undocumented classes a generated signature as their docstring.
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return inspect.cleandoc(doc).replace("\n", " ")


def _is_optional(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType) and type(None) in get_args(t)


def schema_of(t: Any) -> dict[str, Any]:
    """The schema of a field's type: primitives, arrays (tuples), string maps, int-or-string,
    attrs classes (inline, as CRD schemas are)."""
    if t is Any:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if _is_optional(t):
        rest = [a for a in get_args(t) if a is not type(None)]
        return schema_of(rest[0] if len(rest) == 1 else Union[tuple(rest)])  # noqa: UP007
    if get_origin(t) in (Union, types.UnionType) and set(get_args(t)) == {int, str}:
        return {"x-kubernetes-int-or-string": True}
    if t is str:
        return {"type": "string"}
    if t is bool:
        return {"type": "boolean"}
    if t is int:
        return {"type": "integer", "format": "int64"}
    if t is float:
        return {"type": "number"}
    origin = get_origin(t)
    if origin is tuple:
        return {"type": "array", "items": schema_of(get_args(t)[0])}
    if origin in (dict, Mapping) or t is dict:
        value = get_args(t)[1] if get_args(t) else str
        return {"type": "object", "additionalProperties": schema_of(value)}
    if attrs.has(t):
        return object_schema(t)
    raise TypeError(f"no schema for {t!r}")


def object_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for field in attrs.fields(cls):
        if not field.init:
            continue
        name = wire_name(field.name)
        schema = schema_of(hints[field.name])
        default = field.default
        if default is attrs.NOTHING:
            required.append(name)
        elif isinstance(default, str | int | bool) and default is not None:
            schema = {**schema, "default": default}
        if (text := DESCRIPTIONS.get((cls.__name__, name))) is not None:
            schema = {**schema, "description": text}
        properties[name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if description := _description(cls):
        out["description"] = description
    if cls.__module__ == corev1.__name__ or cls is ObjectMeta:
        # Consumed, not owned: what tlsgate does not read is accepted (and dropped).
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def schema_name(group_version: str, kind: str) -> str:
    """`io.k8s.networking.gateway.v1.TLSRoute`, `io.k8s.api.core.v1.Service`: the API
    server's names (the group's labels reversed)."""
    group, version = split(group_version)
    if not group:
        return f"io.k8s.api.core.{version}.{kind}"
    labels = group.split(".")
    if labels[-2:] == ["k8s", "io"]:
        prefix = "io.k8s." + ".".join(reversed(labels[:-2]))
        if group == "discovery.k8s.io":
            prefix = "io.k8s.api.discovery"
        return f"{prefix}.{version}.{kind}"
    return f"{'.'.join(reversed(labels))}.{version}.{kind}"


def _gvk(group_version: str, kind: str) -> dict[str, str]:
    group, version = split(group_version)
    return {"group": group, "version": version, "kind": kind}


def kind_schema(group_version: str, info: KindInfo) -> dict[str, Any]:
    """A document's schema: apiVersion, kind, metadata (by reference), its own fields, and
    the status that reads carry."""
    schema = object_schema(info.cls)
    properties = dict(schema["properties"])
    properties["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation.",
    }
    properties["kind"] = {
        "type": "string",
        "description": "Kind is a string value representing the REST resource.",
    }
    properties["metadata"] = {
        "allOf": [{"$ref": f"#/components/schemas/{_OBJECT_META}"}],
        "description": "Standard object's metadata.",
    }
    status_class = _STATUS.get(info.kind)
    if status_class is not None:
        properties["status"] = object_schema(status_class)
        properties["status"]["description"] = (
            "What tlsgate made of the object at its last routing-table build (read-only)."
        )
    schema["properties"] = properties
    schema["required"] = [r for r in schema.get("required", []) if r not in ("metadata",)]
    if not schema["required"]:
        del schema["required"]
    schema["x-kubernetes-group-version-kind"] = [_gvk(group_version, info.kind)]
    return schema


def _list_schema(group_version: str, resource: Resource) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"A list of {resource.kind}.",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The list's group and version."},
            "kind": {"type": "string", "description": f"{resource.kind}List."},
            "metadata": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "description": (
                    "resourceVersion (the revision listed: watch from it) and continue "
                    "(the next page, with limit)."
                ),
            },
            "items": {
                "type": "array",
                "description": f"The {resource.plural}.",
                "items": {
                    "$ref": f"#/components/schemas/{schema_name(group_version, resource.kind)}"
                },
            },
        },
        "x-kubernetes-group-version-kind": [_gvk(group_version, f"{resource.kind}List")],
    }


def _parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "uniqueItems": True},
    }


_WRITE_PARAMETERS: Final = [
    _parameter("dryRun", "When present, the write is admitted and planned, not persisted."),
    _parameter("fieldManager", "A name for the actor making the change."),
    _parameter(
        "fieldValidation",
        "Strict (the default here) refuses unknown and duplicate fields; tlsgate's admission "
        "always does for the kinds it owns.",
    ),
]


def _operation(
    group_version: str, kind: str, action: str, reference: str, *, write: bool
) -> dict[str, Any]:
    content = {
        media: {"schema": {"$ref": f"#/components/schemas/{reference}"}}
        for media in ("application/json", "application/yaml")
    }
    operation: dict[str, Any] = {
        "operationId": f"{action}{kind}",
        "responses": {"200": {"description": "OK", "content": content}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(group_version, kind),
    }
    if write:
        operation["parameters"] = list(_WRITE_PARAMETERS)
        if action in ("post", "put"):
            operation["requestBody"] = {"content": content, "required": True}
        if action == "patch":
            operation["requestBody"] = {
                "content": {
                    "application/merge-patch+json": {"schema": {"type": "object"}},
                },
                "required": True,
            }
    return operation


def _paths(group_version: str, resource: Resource) -> dict[str, Any]:
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    collection = (
        f"{base}/namespaces/{{namespace}}/{resource.plural}"
        if resource.namespaced
        else f"{base}/{resource.plural}"
    )
    kind_name = schema_name(group_version, resource.kind)
    list_name = schema_name(group_version, f"{resource.kind}List")
    kind = resource.kind
    paths: dict[str, Any] = {
        collection: {
            "get": _operation(group_version, kind, "list", list_name, write=False),
        }
    }
    if "create" in resource.verbs:
        paths[collection]["post"] = _operation(group_version, kind, "post", kind_name, write=True)
        item = f"{collection}/{{name}}"
        paths[item] = {
            "get": _operation(group_version, kind, "get", kind_name, write=False),
            "put": _operation(group_version, kind, "put", kind_name, write=True),
            "patch": _operation(group_version, kind, "patch", kind_name, write=True),
            "delete": _operation(group_version, kind, "delete", kind_name, write=True),
        }
    if resource.namespaced:
        paths[f"{base}/{resource.plural}"] = {
            "get": _operation(group_version, kind, "list", list_name, write=False),
        }
    return paths


def _object_meta() -> dict[str, Any]:
    schema = object_schema(ObjectMeta)
    schema["description"] = (
        "ObjectMeta is metadata that all persisted resources must have. tlsgate sets uid, "
        "creationTimestamp, generation and resourceVersion."
    )
    schema.pop("required", None)  # a body may leave the name to the path (create)
    return schema


def v3_document(group_version: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group version, or None if it is not served."""
    resources = SERVED.get(group_version)
    if resources is None:
        return None
    schemas: dict[str, Any] = {_OBJECT_META: _object_meta()}
    paths: dict[str, Any] = {}
    for resource in resources:
        if resource.info is None:
            continue  # events: listed, always empty; no schema of theirs is kept
        schemas[schema_name(group_version, resource.kind)] = kind_schema(
            group_version, resource.info
        )
        schemas[schema_name(group_version, f"{resource.kind}List")] = _list_schema(
            group_version, resource
        )
        paths.update(_paths(group_version, resource))
    return {
        "openapi": "3.0.0",
        "info": {"title": "tlsgate", "version": group_version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def v3_path(group_version: str) -> str:
    return "api/v1" if group_version == "v1" else f"apis/{group_version}"


def _digest(document: Any) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha512(text.encode()).hexdigest()[:64].upper()


def v3_root() -> dict[str, Any]:
    """`GET /openapi/v3`: each group version's document, with a hash of its content (the
    client caches by it)."""
    paths = {}
    for group_version in SERVED:
        document = v3_document(group_version)
        path = v3_path(group_version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={_digest(document)}"}
    return {"paths": paths}


def v2_document() -> dict[str, Any]:
    """`GET /openapi/v2`: every group version's schemas as Swagger 2.0 definitions."""
    definitions: dict[str, Any] = {}
    for group_version in SERVED:
        document = v3_document(group_version)
        assert document is not None
        for name, schema in document["components"]["schemas"].items():
            definitions[name] = _v2(schema)
    return {
        "swagger": "2.0",
        "info": {"title": "tlsgate", "version": "v1"},
        "paths": {},
        "definitions": definitions,
    }


def _v2(schema: Any) -> Any:
    """A v3 schema as v2 writes it: references under `#/definitions/`."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = value.replace("#/components/schemas/", "#/definitions/")
            else:
                out[key] = _v2(value)
        return out
    if isinstance(schema, list):
        return [_v2(item) for item in schema]
    return schema
