"""Server-side apply's field ownership (gateway/api/apply.py), case by case."""

from __future__ import annotations

from typing import Any

from gateway.api.apply import (
    Applied,
    Conflict,
    Path,
    field_paths,
    from_fields_v1,
    managed_fields,
    owners_of,
    server_side_apply,
    to_fields_v1,
)

LIVE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "c", "namespace": "a", "labels": {"x": "1", "y": "2"}},
    "data": {"one": "1", "two": "2"},
}


def test_paths_and_fields_v1_round_trip() -> None:
    paths = field_paths(LIVE)
    assert paths == {
        ("metadata", "labels", "x"),
        ("metadata", "labels", "y"),
        ("data", "one"),
        ("data", "two"),
    }
    fields = to_fields_v1(paths)
    assert fields == {
        "f:data": {"f:one": {}, "f:two": {}},
        "f:metadata": {"f:labels": {"f:x": {}, "f:y": {}}},
    }
    assert from_fields_v1(fields) == paths


def test_removing_what_only_this_manager_owned() -> None:
    owners: dict[str, set[Path]] = {
        "me": {("data", "one"), ("data", "two")},
        "you": {("metadata", "labels", "x")},
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"one": "1"},
    }
    result = server_side_apply(LIVE, config, "me", owners, force=False)
    assert isinstance(result, Applied)
    assert result.merged["data"] == {"one": "1"}
    assert result.merged["metadata"]["labels"] == {"x": "1", "y": "2"}  # not mine: kept
    assert result.owners["me"] == {("data", "one")}


def test_a_conflict_and_force() -> None:
    owners: dict[str, set[Path]] = {"me": {("data", "one")}}
    config = {"metadata": {"name": "c"}, "data": {"one": "changed"}}
    assert server_side_apply(LIVE, config, "you", owners, force=False) == [
        Conflict(("data", "one"), "me")
    ]
    forced = server_side_apply(LIVE, config, "you", owners, force=True)
    assert isinstance(forced, Applied)
    assert forced.merged["data"]["one"] == "changed"
    assert forced.owners == {"me": set(), "you": {("data", "one")}}
    # The same value is no conflict: both own it.
    same = server_side_apply(LIVE, {"data": {"one": "1"}}, "you", owners, force=False)
    assert isinstance(same, Applied)
    assert same.owners == {"me": {("data", "one")}, "you": {("data", "one")}}


def test_a_field_shared_is_kept_when_one_manager_lets_go() -> None:
    owners: dict[str, set[Path]] = {"me": {("data", "one")}, "you": {("data", "one")}}
    result = server_side_apply(LIVE, {"data": {"two": "2"}}, "me", owners, force=False)
    assert isinstance(result, Applied)
    assert result.merged["data"]["one"] == "1"


def test_managed_fields_keep_their_time_when_unchanged() -> None:
    owners: dict[str, set[Path]] = {"me": {("data", "one")}}
    first = managed_fields(owners, "v1", "2026-01-01T00:00:00Z")
    again = managed_fields(owners, "v1", "2026-02-02T00:00:00Z", first)
    assert again == first
    assert owners_of(again) == owners
    later: dict[str, set[Path]] = {"me": {("data", "two")}}
    moved = managed_fields(later, "v1", "2026-02-02T00:00:00Z", first)
    assert moved[0]["time"] == "2026-02-02T00:00:00Z"
