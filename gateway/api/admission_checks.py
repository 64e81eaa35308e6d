"""What every admission rule is built from: the StatusCause, the field-format patterns of
Kubernetes and the Gateway API CRDs, bounded value rendering, and the `Checker` that collects
causes at wire paths; plus the checks several kinds share (metadata, selectors, Secret refs).

Pure.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from attrs import frozen

from gateway.api import model
from gateway.api.names import SelectorOperator


@frozen
class Cause:
    """One reason a document was refused, as a Kubernetes StatusCause."""

    field: str
    reason: str
    message: str


#: An RFC 1123 label: at most 63 characters (a longer one is no DNS name: IDNA refuses it).
LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS1123_SUBDOMAIN: Final = re.compile(rf"^{LABEL}(\.{LABEL})*$")
DNS1123_LABEL: Final = re.compile(rf"^{LABEL}$")
HOSTNAME: Final = re.compile(rf"^(\*\.)?{LABEL}(\.{LABEL})*$")
GROUP: Final = re.compile(rf"^$|^{LABEL}(\.{LABEL})*$")
KIND: Final = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
CONTROLLER: Final = re.compile(rf"^{LABEL}(\.{LABEL})*/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")
PROTOCOL: Final = re.compile(
    rf"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|^{LABEL}(\.{LABEL})*/[a-zA-Z0-9]+$"
)
QUALIFIED_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ADDRESS_TYPE: Final = re.compile(
    rf"^Hostname|IPAddress|NamedAddress$|^{LABEL}(\.{LABEL})*/[a-zA-Z0-9]+$"
)
IANA_SVC_NAME: Final = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def show_value(value: object, limit: int = 120) -> str:
    """`value` as JSON for an error message, at most about `limit` characters. Rendering stops
    once the limit is reached: a value can be huge (a big body, YAML aliases), and a message
    must never cost more than its own length to build."""
    parts: list[str] = []
    budget = limit

    def emit(text: str) -> bool:
        nonlocal budget
        parts.append(text)
        budget -= len(text)
        return budget > 0

    def walk(item: object) -> bool:
        if isinstance(item, dict):
            if not emit("{"):
                return False
            for index, (key, child) in enumerate(item.items()):
                text = ("," if index else "") + json.dumps(str(key)) + ":"
                if not emit(text) or not walk(child):
                    return False
            return emit("}")
        if isinstance(item, list | tuple):
            if not emit("["):
                return False
            for index, child in enumerate(item):
                if (index and not emit(",")) or not walk(child):
                    return False
            return emit("]")
        if isinstance(item, str) and len(item) > limit:
            item = item[:limit]
        return emit(json.dumps(item, default=str))

    if walk(value):
        return "".join(parts)
    return "".join(parts)[: max(limit - 3, 0)] + "..."


class Checker:
    """Collects causes; each helper checks one rule at one wire path."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def add(self, field: str, reason: str, message: str) -> None:
        self.causes.append(Cause(field, reason, message))

    def invalid(self, field: str, value: object, detail: str) -> None:
        self.add(field, "FieldValueInvalid", f"Invalid value: {show_value(value)}: {detail}")

    def required(self, field: str, detail: str = "Required value") -> None:
        self.add(field, "FieldValueRequired", detail)

    def enum(self, field: str, value: str | None, allowed: Sequence[str]) -> None:
        if value is not None and value not in allowed:
            self.add(
                field,
                "FieldValueNotSupported",
                f"Unsupported value: {show_value(value)}: supported values: "
                + ", ".join(show_value(a) for a in allowed),
            )

    def length(self, field: str, value: str, low: int, high: int) -> bool:
        if len(value) > high:
            self.add(
                field,
                "FieldValueTooLong",
                f"Too long: {show_value(value)} has {len(value)} characters, "
                f"may not be more than {high}",
            )
            return False
        if len(value) < low:
            self.invalid(field, value, f"must be at least {low} characters long")
            return False
        return True

    def pattern(
        self, field: str, value: str | None, low: int, high: int, regex: re.Pattern[str], what: str
    ) -> None:
        if value is None or not self.length(field, value, low, high):
            return
        if not _matches(regex, value):
            self.invalid(field, value, f"must be {what}")

    def items(self, field: str, values: Sequence[object] | None, low: int, high: int) -> None:
        count = len(values or ())
        if values is None and low > 0:
            self.required(field)
        elif count > high:
            self.add(
                field, "FieldValueTooMany", f"Too many: {count}: must have at most {high} items"
            )
        elif count < low:
            self.invalid(
                field,
                list(values or ()),
                f"must have at least {low} item" + ("s" if low > 1 else ""),
            )

    def port(self, field: str, value: int | None) -> None:
        if value is not None and not 1 <= value <= 65535:
            self.invalid(field, value, "must be between 1 and 65535, inclusive")

    def unique(self, field: str, values: Iterable[object], shown: str) -> None:
        seen: set[object] = set()
        for index, value in enumerate(values):
            if value in seen:
                self.add(
                    f"{field}[{index}]",
                    "FieldValueDuplicate",
                    f"Duplicate value: {shown} {show_value(value)} must be unique",
                )
            seen.add(value)

    # --- Gateway API scalar types (SPEC.md §1) -------------------------------------------

    def hostname(self, field: str, value: str | None, *, wildcard: bool = True) -> None:
        if value is None or not self.length(field, value, 1, 253):
            return
        if not HOSTNAME.match(value):
            detail = (
                "must be a lower-case DNS name, where a wildcard may only be a leading '*.' label"
                if wildcard
                else "must be a lower-case DNS name"
            )
            self.invalid(field, value, detail)
        elif value.startswith("*.") and not wildcard:
            self.invalid(field, value, "must be a precise hostname: no wildcard is allowed")

    def group(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 0, 253, GROUP, "an API group: a lower-case DNS name or ''")

    def kind(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 1, 63, KIND, "a kind: letters, digits and '-'")

    def object_name(self, field: str, value: str | None) -> None:
        if value is not None:
            self.length(field, value, 1, 253)

    def namespace(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 1, 63, DNS1123_LABEL, "an RFC 1123 label")

    def section_name(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 1, 253, DNS1123_SUBDOMAIN, "a lower-case DNS name")

    def string_map(
        self,
        field: str,
        values: dict[str, str] | None,
        high: int,
        value_max: int,
        value_regex: re.Pattern[str] | None = None,
    ) -> None:
        if values is None:
            return
        if len(values) > high:
            self.add(
                field,
                "FieldValueTooMany",
                f"Too many: {len(values)}: must have at most {high} items",
            )
        for key, value in values.items():
            self.qualified_name(f"{field}[{key}]", key)
            if len(value) > value_max:
                self.add(
                    f"{field}[{key}]",
                    "FieldValueTooLong",
                    f"Too long: may not be more than {value_max} characters",
                )
            elif value_regex is not None and not value_regex.match(value):
                self.invalid(
                    f"{field}[{key}]",
                    value,
                    "must be empty or start and end with a letter or digit",
                )

    def qualified_name(self, field: str, key: str) -> None:
        prefix, _, name = key.rpartition("/")
        if "/" in key and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
            self.invalid(field, key, "the prefix must be a lower-case DNS name")
        elif not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
            self.invalid(
                field,
                key,
                "must be a qualified name of at most 63 characters "
                "(letters, digits, '-', '_', '.'), with an optional "
                "DNS prefix and '/'",
            )


# --- metadata ---------------------------------------------------------------------------


def metadata(c: Checker, meta: model.ObjectMeta, *, label_name: bool) -> None:
    if label_name:
        c.pattern("metadata.name", meta.name, 1, 63, DNS1123_LABEL, "an RFC 1123 label")
    else:
        c.pattern(
            "metadata.name",
            meta.name,
            1,
            253,
            DNS1123_SUBDOMAIN,
            "a lower-case RFC 1123 subdomain",
        )
    c.namespace("metadata.namespace", meta.namespace)
    c.string_map("metadata.labels", meta.labels, 10_000, 63, LABEL_VALUE)
    c.string_map("metadata.annotations", meta.annotations, 10_000, 262_144)


def selector(c: Checker, field: str, selector: model.LabelSelector | None) -> None:
    if selector is None:
        return
    c.string_map(f"{field}.matchLabels", selector.match_labels, 10_000, 63, LABEL_VALUE)
    for i, req in enumerate(selector.match_expressions or ()):
        path = f"{field}.matchExpressions[{i}]"
        c.qualified_name(f"{path}.key", req.key)
        c.enum(f"{path}.operator", req.operator, tuple(SelectorOperator))
        if req.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not req.values:
            c.required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        if (
            req.operator in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST)
            and req.values
        ):
            c.invalid(
                f"{path}.values",
                list(req.values),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )


def secret_ref(c: Checker, field: str, ref: model.SecretObjectReference) -> None:
    c.group(f"{field}.group", ref.group)
    c.kind(f"{field}.kind", ref.kind)
    c.object_name(f"{field}.name", ref.name)
    c.namespace(f"{field}.namespace", ref.namespace)


# --- GatewayClass (SPEC.md §2) ----------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _matches(regex: re.Pattern[str], value: str) -> bool:
    """Cached: a bundle repeats its groups, kinds, namespaces and label values thousands of
    times."""
    return regex.match(value) is not None


def target_refs(c: Checker, refs: Sequence[Any]) -> None:
    """`spec.targetRefs` of a policy (GEP-713): 1 to 16 local references, each a group,
    kind, name and optional sectionName. Whether they name the right kind is the policy's
    status, not admission."""
    c.items("spec.targetRefs", refs, 1, 16)
    for i, ref in enumerate(refs):
        c.group(f"spec.targetRefs[{i}].group", ref.group)
        c.kind(f"spec.targetRefs[{i}].kind", ref.kind)
        c.object_name(f"spec.targetRefs[{i}].name", ref.name)
        c.section_name(f"spec.targetRefs[{i}].sectionName", ref.section_name)
