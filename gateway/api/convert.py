"""The one cattrs converter: wire documents (camelCase dicts) <-> model values.

Pure. `structure_document` turns a parsed JSON/YAML value into a model document, applying the
CRD defaults first and then admission (SPEC.md §0: Kubernetes defaults *before* it validates);
any problem is reported as `Invalid` with one `Cause` per field, named by its wire path
(`spec.rules[0].backendRefs[0].port`). `unstructure_document` is the inverse and omits the
fields a user left unset, so a document comes back as it was written, plus defaults and server
metadata.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import types
from collections.abc import Callable, Mapping
from typing import Any, Final, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from gateway.api import corev1
from gateway.api.admission import Cause, admit, show_value
from gateway.api.kinds import BY_KIND, CONVERTED_TO_STORED, Document, KindInfo, ObjectKey, key_of
from gateway.api.model import ObjectMeta
from gateway.api.status import Status

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
DEFAULT_NAMESPACE: Final = "default"


class Invalid(Exception):
    """A document that cannot be admitted; `causes` name each bad field (API.md "Errors")."""

    def __init__(self, kind: str, name: str, causes: list[Cause]) -> None:
        self.kind = kind
        self.name = name
        self.causes = causes
        super().__init__(self.message)

    @property
    def message(self) -> str:
        what = f"{self.kind} {self.name!r}" if self.name else (self.kind or "document")
        details = "; ".join(
            f"{c.field}: {c.message}" if c.field else c.message for c in self.causes
        )
        return f"{what} is invalid: {details}"


#: Wire names that plain camelCase would spell differently (an acronym in the spec's name).
_WIRE_EXCEPTIONS: Final = {
    "well_known_ca_certificates": "wellKnownCACertificates",
    "trusted_cidrs": "trustedCIDRs",
    "client_ips": "clientIPs",
}


def wire_name(attribute: str) -> str:
    """`section_name` -> `sectionName`; `from_` -> `from` (a Python keyword on the wire)."""
    if attribute in _WIRE_EXCEPTIONS:
        return _WIRE_EXCEPTIONS[attribute]
    head, *rest = attribute.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


# --- strict primitives: Kubernetes does not coerce "443" into 443, nor 443 into "443" -----


def _type_name(value: object) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _wrong_type(value: object, expected: str) -> TypeError:
    shown = show_value(value, 80)
    return TypeError(f"Invalid value: {shown}: expected {expected}, got {_type_name(value)}")


def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise _wrong_type(value, "a string")
    return value


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(value, "an integer")
    return value


def _structure_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type(value, "a boolean")
    return value


def _structure_int_or_string(value: object, _: type) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type(value, "an integer or a string")
    return value


def _is_optional(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType) and type(None) in get_args(t)


def _is_homogeneous_tuple(t: Any) -> bool:
    origin: Any = get_origin(t)
    return origin is tuple and get_args(t)[1:] == (Ellipsis,)


def _is_int_or_string(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType) and set(get_args(t)) == {int, str}


def _optional_hook(conv: cattrs.Converter, t: Any) -> Callable[[object, Any], Any]:
    rest = tuple(a for a in get_args(t) if a is not type(None))
    inner = rest[0] if len(rest) == 1 else Union[rest]  # noqa: UP007
    handler = conv.get_structure_hook(inner)

    def hook(value: object, _: Any) -> Any:
        return None if value is None else handler(value, inner)

    return hook


def _tuple_hook(conv: cattrs.Converter, t: Any) -> Callable[[object, Any], tuple[Any, ...]]:
    """Arrays: every bad element reported with its index, as cattrs does for lists."""
    (elem, _ellipsis) = get_args(t)
    handler = conv.get_structure_hook(elem)
    if not conv.detailed_validation:

        def fast(value: object, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise _wrong_type(value, "an array")
            return tuple([handler(item, elem) for item in value])

        return fast

    def hook(value: object, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _wrong_type(value, "an array")
        out, errors = [], []
        for index, item in enumerate(value):
            try:
                out.append(handler(item, elem))
            except Exception as exc:  # collected with its index, like cattrs does
                exc.add_note(IterableValidationNote(f"index {index}", index, elem))
                errors.append(exc)
        if errors:
            raise IterableValidationError("While structuring an array", errors, t)
        return tuple(out)

    return hook


def _string_map_hook(value: object, _: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _wrong_type(value, "an object")
    errors = []
    for key, item in value.items():
        if not isinstance(item, str) or not isinstance(key, str):
            exc = _wrong_type(item, "a string")
            exc.add_note(IterableValidationNote(f"key {key}", str(key), str))
            errors.append(exc)
    if errors:
        raise IterableValidationError("While structuring a map", errors, dict)
    return dict(value)


def _renames(cls: type) -> dict[str, Any]:
    return {a.name: override(rename=wire_name(a.name)) for a in attrs.fields(cls)}


def _class_hook(conv: cattrs.Converter, cls: type) -> Callable[[object, Any], Any]:
    # Core kinds and metadata are consumed, not owned: keys tlsgate does not model (a
    # Service's clusterIP, metadata.managedFields, ...) are dropped, as Kubernetes prunes.
    lenient = cls.__module__ == corev1.__name__ or cls is ObjectMeta
    inner: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=not lenient, **_renames(cls)
    )

    def hook(value: object, _: Any) -> Any:
        if not isinstance(value, dict):
            raise _wrong_type(value, "an object")
        return inner(value, cls)

    return hook


def _class_unstructure(conv: cattrs.Converter, cls: type) -> Callable[[Any], dict[str, Any]]:
    """camelCase keys, and unset (None) fields left out: a document comes back as written."""
    inner: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(cls, conv, **_renames(cls))

    def hook(value: Any) -> dict[str, Any]:
        return {k: v for k, v in inner(value).items() if v is not None}

    return hook


def _make_converter(*, detailed: bool = True) -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=detailed, forbid_extra_keys=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_func(_is_int_or_string, _structure_int_or_string)
    conv.register_structure_hook_factory(_is_optional, functools.partial(_optional_hook, conv))
    conv.register_structure_hook_factory(
        _is_homogeneous_tuple, functools.partial(_tuple_hook, conv)
    )
    conv.register_structure_hook_func(lambda t: t == dict[str, str], _string_map_hook)
    conv.register_structure_hook_factory(attrs.has, functools.partial(_class_hook, conv))
    conv.register_unstructure_hook_factory(attrs.has, functools.partial(_class_unstructure, conv))
    conv.register_unstructure_hook_factory(
        _is_homogeneous_tuple, lambda t: lambda v: [conv.unstructure(i) for i in v]
    )
    return conv


CONVERTER: Final = _make_converter()
#: The same rules without detailed validation: what a valid document takes (a third faster
#: than collecting every error as it goes). A document it refuses is structured again by
#: `CONVERTER`, which names every bad field; both accept exactly the same documents, and give
#: the same values (tests/test_convert.py).
FAST_CONVERTER: Final = _make_converter(detailed=False)


def _causes_from(exc: BaseException, path: str) -> list[Cause]:
    """Flatten cattrs' detailed validation errors into causes with wire paths."""
    if isinstance(exc, IterableValidationError):
        causes = []
        indexed, without = exc.group_exceptions()
        for sub, note in indexed:
            index = note.index
            causes += _causes_from(sub, f"{path}[{index}]")
        for sub in without:
            causes += _causes_from(sub, path)
        return causes
    if isinstance(exc, ClassValidationError):
        causes = []
        named, unnamed = exc.group_exceptions()
        for sub, attribute in named:
            field = wire_name(attribute.name)
            causes += _causes_from(sub, f"{path}.{field}" if path else field)
        for sub in unnamed:
            causes += _causes_from(sub, path)
        return causes
    if isinstance(exc, ForbiddenExtraKeysError):
        return [
            Cause(
                f"{path}.{key}" if path else key,
                "FieldValueNotSupported",
                f"unknown field {show_value(key, 60)}",
            )
            for key in sorted(exc.extra_fields)
        ]
    if isinstance(exc, KeyError):
        return [Cause(path, "FieldValueRequired", "Required value")]
    return [Cause(path, "FieldValueInvalid", str(exc))]


def structure_document(raw: object) -> Document:
    """Wire value -> admitted model document, or `Invalid` naming every bad field.

    Order as in the Kubernetes API server: identify the kind, convert the version, apply
    defaults (attrs defaults here, while structuring), then validate (`admission.admit`).
    """
    if not isinstance(raw, dict):
        raise Invalid(
            "",
            "",
            [
                Cause(
                    "", "FieldValueInvalid", f"a document must be an object, got {_type_name(raw)}"
                )
            ],
        )
    kind = raw.get("kind")
    api_version = raw.get("apiVersion")
    name = _name_of(raw)
    info = BY_KIND.get(kind) if isinstance(kind, str) else None
    if info is None:
        known = ", ".join(sorted(BY_KIND))
        raise Invalid(
            show_value(kind, 60) if kind else "",
            name,
            [
                Cause(
                    "kind",
                    "FieldValueNotSupported",
                    f"unknown kind {show_value(kind, 60)}; supported kinds: {known}",
                )
            ],
        )
    if api_version not in info.api_versions:
        raise Invalid(
            info.kind,
            name,
            [
                Cause(
                    "apiVersion",
                    "FieldValueNotSupported",
                    f"apiVersion {show_value(api_version, 60)} is not served for {info.kind}; "
                    f"supported: {', '.join(info.api_versions)}",
                )
            ],
        )
    # Client-sent status is ignored (API.md "Server-set metadata").
    body = {k: v for k, v in raw.items() if k != "status"}
    if info.kind in CONVERTED_TO_STORED:
        body["apiVersion"] = info.api_versions[0]
    try:
        doc: Document = _structure_hook(info, FAST_CONVERTER)(body, info.cls)
    except Exception:  # whatever it is, the detailed pass says what was wrong
        try:
            doc = _structure_hook(info, CONVERTER)(body, info.cls)
        except (ClassValidationError, IterableValidationError) as exc:
            raise Invalid(info.kind, name, _redact(_causes_from(exc, ""))) from None
    doc = _default(doc, info.namespaced)
    causes = admit(doc)
    if causes:
        raise Invalid(info.kind, name, _redact(causes))
    return doc


_HOOKS: dict[tuple[str, bool], Callable[[Any, Any], Document]] = {}


def _structure_hook(info: KindInfo, converter: cattrs.Converter) -> Callable[[Any, Any], Document]:
    """A converter's hook for a kind, looked up once (`structure` dispatches per call)."""
    key = (info.kind, converter.detailed_validation)
    hook = _HOOKS.get(key)
    if hook is None:
        hook = _HOOKS[key] = converter.get_structure_hook(info.cls)
    return hook


def _redact(causes: list[Cause]) -> list[Cause]:
    """Private keys are write-only (API.md): a cause about one never shows its value, even
    when the value is malformed (a list, an object) and would otherwise be echoed back."""
    out = []
    for cause in causes:
        if any(f"[{key}]" in cause.field for key in PRIVATE_KEYS):
            detail = cause.message.rsplit(": ", 1)[-1] if ": " in cause.message else ""
            message = "Invalid value: (a private key, not shown)" + (
                f": {detail}" if detail and detail != cause.message else ""
            )
            out.append(Cause(cause.field, cause.reason, message))
        else:
            out.append(cause)
    return out


def _name_of(raw: dict[str, Any]) -> str:
    meta = raw.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


#: kubectl's client-side apply keeps the whole manifest here (API.md "Kubernetes API").
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"


def _digest(value: object) -> str:
    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()


def _sealed(meta: ObjectMeta) -> ObjectMeta:
    """A Secret's last-applied manifest with its private keys as digests: the annotation is
    returned by every read, so it must not carry them; the digest of an unchanged key is
    the same, so applying an unchanged Secret again changes nothing."""
    text = (meta.annotations or {}).get(LAST_APPLIED)
    if text is None:
        return meta
    try:
        applied = json.loads(text)
    except ValueError:
        return meta  # not kubectl's: kept as it came (it names no field tlsgate reads)
    if not isinstance(applied, dict):
        return meta
    changed = False
    for field in ("data", "stringData"):
        values = applied.get(field)
        if isinstance(values, dict):
            for key in PRIVATE_KEYS & set(values):
                if not str(values[key]).startswith("sha256:"):
                    values[key] = _digest(values[key])
                    changed = True
    if not changed:
        return meta
    sealed = json.dumps(applied, separators=(",", ":"), sort_keys=False) + "\n"
    return attrs.evolve(meta, annotations={**(meta.annotations or {}), LAST_APPLIED: sealed})


def _default(doc: Document, namespaced: bool) -> Document:
    """Defaults that are not plain attrs defaults (API.md "Documents")."""
    meta = doc.metadata
    if namespaced and not meta.namespace:
        meta = attrs.evolve(meta, namespace=DEFAULT_NAMESPACE)
    elif not namespaced and meta.namespace is not None:
        meta = attrs.evolve(meta, namespace=None)
    if isinstance(doc, corev1.Namespace):
        # Every namespace carries its own name as a label (SPEC.md §0; conformance needs it).
        meta = attrs.evolve(meta, labels={**(meta.labels or {}), NAMESPACE_NAME_LABEL: meta.name})
    if isinstance(doc, corev1.Secret):
        meta = _sealed(meta)
    if isinstance(doc, corev1.Secret) and doc.string_data is not None:
        # Kubernetes folds stringData into data on write and never returns stringData.
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in doc.string_data.items()}
        doc = attrs.evolve(doc, data={**(doc.data or {}), **encoded}, string_data=None)
    if meta is not doc.metadata:
        doc = attrs.evolve(doc, metadata=meta)
    return doc


#: Secret keys that are write-only: no response ever contains them (API.md "Documents").
PRIVATE_KEYS: Final = frozenset({"tls.key"})


#: The compact JSON text of a wire value: answers and store rows alike (`json.dumps` with
#: options makes a new encoder at every call; this is one, reused).
encode_json: Final = json.JSONEncoder(separators=(",", ":")).encode


def unstructure_document(doc: Document, *, redact: bool = True) -> dict[str, Any]:
    """Model document -> wire dict, fields the user left unset omitted, private keys removed
    (kept only with `redact=False`, for the store)."""
    out: dict[str, Any] = CONVERTER.unstructure(doc)
    if redact and isinstance(doc, corev1.Secret) and "data" in out:
        out["data"] = {k: v for k, v in out["data"].items() if k not in PRIVATE_KEYS}
    return out


def with_status(doc: Document, statuses: Mapping[ObjectKey, Status]) -> dict[str, Any]:
    """A document's wire form with the status the last build computed for it, if any: what
    every read of the admin API and `tlsgate translate` show."""
    wire = unstructure_document(doc)
    status = statuses.get(key_of(doc))
    if status is not None:
        wire["status"] = CONVERTER.unstructure(status)
    return wire
