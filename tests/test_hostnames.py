"""Hostname intersection (SPEC.md §8.1) and matching (§10.1, §14.5) as tables."""

from __future__ import annotations

import pytest

from gateway.routing.hostnames import (
    intersect,
    matches,
    normalize_sni,
    specificity,
    wildcard_suffixes,
)


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, "a.example.com", "a.example.com"),
        (None, "*.example.com", "*.example.com"),
        ("a.example.com", "a.example.com", "a.example.com"),
        ("a.example.com", "b.example.com", None),
        ("www.example.com", "*.example.com", "www.example.com"),
        ("*.example.com", "sub.domain.example.com", "sub.domain.example.com"),
        ("*.com", "*.example.com", "*.example.com"),
        ("*.example.com", "*.com", "*.example.com"),
        ("*.example.com", "*.example.com", "*.example.com"),
        ("abc.example.com", "*.example.com", "abc.example.com"),
        ("*.example.com", "example.com", None),
        ("*.example.com", "test.example.net", None),
        ("*.example.com", "*.example.net", None),
        ("*.a.example.com", "*.b.example.com", None),
        ("example.com", "*.example.com", None),
        ("*.xample.com", "*.example.com", None),  # suffix on a label boundary only
        ("*.xample.com", "example.com", None),
    ],
)
def test_intersection_table(listener: str | None, route: str, expected: str | None) -> None:
    assert intersect(listener, route) == expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),  # one or more labels (SPEC.md §14.5)
        ("*.com", "other.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "aexample.com", False),
        ("a.example.com", "a.example.com", True),
        ("a.example.com", "b.example.com", False),
        (None, "anything.at.all", True),
    ],
)
def test_matches(pattern: str | None, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_sni_normalization() -> None:
    assert normalize_sni("DB.Example.COM.") == "db.example.com"
    assert normalize_sni("db.example.com") == "db.example.com"


def test_wildcard_suffixes_most_specific_first() -> None:
    assert wildcard_suffixes("a.b.example.com") == ["*.b.example.com", "*.example.com", "*.com"]
    assert wildcard_suffixes("localhost") == []


def test_specificity_orders_exact_then_longer_wildcards_then_none() -> None:
    names = [None, "*.com", "a.example.com", "*.example.com"]
    assert sorted(names, key=specificity) == ["a.example.com", "*.example.com", "*.com", None]
