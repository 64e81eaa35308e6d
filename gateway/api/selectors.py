"""Label and field selectors of Kubernetes list requests (`?labelSelector=`,
`?fieldSelector=`), parsed into predicates (API.md "Kubernetes API compatibility").

Pure. The label selector grammar is Kubernetes' (k8s.io/apimachinery labels.Parse):
comma-separated requirements, each `key`, `!key`, `key=value`, `key==value`, `key!=value`,
`key in (a,b)`, `key notin (a,b)`, `key>N` or `key<N` (N an integer; the label must be
one that is greater, or less); all must hold. `key in ()` is `key in ("")`, as there.
Field selectors take `metadata.name` and `metadata.namespace` with `=`, `==` or `!=`, as
the API server does for every kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

Labels = Mapping[str, str]
LabelPredicate = Callable[[Labels], bool]
#: (namespace, name) -> whether the object is selected.
FieldPredicate = Callable[[str, str], bool]

#: A label key: an optional DNS-subdomain prefix and `/`, then a name of up to 63 characters.
_KEY: Final = (
    r"(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_VALUE: Final = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_SET: Final = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EQUALS: Final = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS: Final = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_COMPARE: Final = re.compile(rf"^\s*({_KEY})\s*([<>])\s*(\S*)\s*$")
_VALUE_ONLY: Final = re.compile(rf"^{_VALUE}$")


def _requirements(text: str) -> list[str]:
    """Split on the commas that are not inside `( )`."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _requirement(text: str) -> LabelPredicate:
    if (found := _SET.match(text)) is not None:
        key, operator = found.group(1), found.group(4)
        values = frozenset(v.strip() for v in found.group(5).split(","))
        if not all(_VALUE_ONLY.match(v) for v in values):
            raise ValueError(f"invalid label value in {text.strip()!r}")
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if (found := _EQUALS.match(text)) is not None:
        key, operator, value = found.group(1), found.group(4), found.group(5)
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if (found := _COMPARE.match(text)) is not None:
        key, operator, bound = found.group(1), found.group(4), found.group(5)
        if re.fullmatch(r"[-+]?[0-9]{1,18}", bound) is None:
            raise ValueError(f"for {operator!r}, the value must be an integer: {text.strip()!r}")
        limit, greater = int(bound), operator == ">"
        return lambda labels: _compares(labels.get(key), limit, greater)
    if (found := _EXISTS.match(text)) is not None:
        negated, key = found.group(1) == "!", found.group(2)
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ValueError(f"unable to parse requirement {text.strip()!r}")


def _compares(value: str | None, limit: int, greater: bool) -> bool:
    """`key>N` and `key<N`: a label that is not an integer is not selected."""
    if value is None or re.fullmatch(r"[-+]?[0-9]{1,18}", value) is None:
        return False
    return int(value) > limit if greater else int(value) < limit


#: Requirements of one selector, at most: each costs every object listed a test.
MAX_REQUIREMENTS = 256


def label_selector(text: str) -> LabelPredicate:
    """A predicate over an object's labels; ValueError says what is wrong with `text`."""
    if not text.strip():
        return lambda labels: True
    parts = _requirements(text)
    if len(parts) > MAX_REQUIREMENTS:
        raise ValueError(f"more than {MAX_REQUIREMENTS} requirements")
    checks = [_requirement(part) for part in parts]
    return lambda labels: all(check(labels) for check in checks)


_FIELD: Final = re.compile(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*([^,]*?)\s*$")
FIELDS: Final = ("metadata.name", "metadata.namespace")


def field_selector(text: str) -> FieldPredicate:
    """A predicate over an object's namespace and name; ValueError for a field other than
    `metadata.name` and `metadata.namespace` (the API server's answer is the same)."""
    checks: list[FieldPredicate] = []
    for part in text.split(",") if text.strip() else []:
        found = _FIELD.match(part)
        if found is None:
            raise ValueError(f"invalid field selector {part.strip()!r}")
        field, operator, value = found.groups()
        if field not in FIELDS:
            raise ValueError(f'field label not supported: "{field}"')
        checks.append(_field_check(field == "metadata.name", value, operator != "!="))
    return lambda namespace, name: all(check(namespace, name) for check in checks)


def _field_check(by_name: bool, value: str, equal: bool) -> FieldPredicate:
    if by_name:
        return lambda namespace, name: (name == value) == equal
    return lambda namespace, name: (namespace == value) == equal
