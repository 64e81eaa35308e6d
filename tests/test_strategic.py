"""Strategic merge patch for the core kinds (gateway/api/strategic.py), case by case as
Kubernetes documents it (sig-api-machinery/strategic-merge-patch.md)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.strategic import PatchError, strategic_merge

SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "db", "labels": {"app": "db"}, "finalizers": ["a"]},
    "spec": {
        "ports": [
            {"name": "pg", "port": 5432, "targetPort": 5432},
            {"name": "metrics", "port": 9187},
        ]
    },
}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        # A list with a merge key merges element by element...
        (
            {"spec": {"ports": [{"port": 5432, "targetPort": 6432}]}},
            [{"name": "pg", "port": 5432, "targetPort": 6432}, {"name": "metrics", "port": 9187}],
        ),
        # ...adds what is new...
        (
            {"spec": {"ports": [{"port": 8443, "name": "tls"}]}},
            [
                {"name": "pg", "port": 5432, "targetPort": 5432},
                {"name": "metrics", "port": 9187},
                {"port": 8443, "name": "tls"},
            ],
        ),
        # ...deletes by $patch...
        ({"spec": {"ports": [{"port": 9187, "$patch": "delete"}]}}, [SERVICE["spec"]["ports"][0]]),
        # ...replaces whole with $patch: replace...
        (
            {"spec": {"ports": [{"port": 1}, {"$patch": "replace"}]}},
            [{"port": 1}],
        ),
        # ...orders by $setElementOrder, and removes a field of an element with null.
        (
            {
                "spec": {
                    "$setElementOrder/ports": [{"port": 9187}, {"port": 5432}],
                    "ports": [{"port": 5432, "targetPort": None}],
                }
            },
            [{"name": "metrics", "port": 9187}, {"name": "pg", "port": 5432}],
        ),
    ],
)
def test_lists_with_a_merge_key(patch: dict[str, Any], expected: list[Any]) -> None:
    assert strategic_merge("Service", SERVICE, patch)["spec"]["ports"] == expected


def test_maps_merge_and_null_removes() -> None:
    patched = strategic_merge(
        "Service", SERVICE, {"metadata": {"labels": {"tier": "back", "app": None}}}
    )
    assert patched["metadata"]["labels"] == {"tier": "back"}
    assert SERVICE["metadata"]["labels"] == {"app": "db"}  # the original is not changed
    replaced = strategic_merge(
        "Service", SERVICE, {"metadata": {"labels": {"x": "y", "$patch": "replace"}}}
    )
    assert replaced["metadata"]["labels"] == {"x": "y"}
    removed = strategic_merge("Service", SERVICE, {"metadata": {"labels": {"$patch": "delete"}}})
    assert "labels" not in removed["metadata"]


def test_sets_of_primitives() -> None:
    added = strategic_merge("Service", SERVICE, {"metadata": {"finalizers": ["b", "a"]}})
    assert added["metadata"]["finalizers"] == ["a", "b"]
    taken = strategic_merge(
        "Service", SERVICE, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    )
    assert taken["metadata"]["finalizers"] == []


def test_lists_without_a_merge_key_are_replaced() -> None:
    slice_ = {"kind": "EndpointSlice", "endpoints": [{"addresses": ["10.0.0.1"]}]}
    patched = strategic_merge("EndpointSlice", slice_, {"endpoints": [{"addresses": ["10.0.0.2"]}]})
    assert patched["endpoints"] == [{"addresses": ["10.0.0.2"]}]


def test_retain_keys() -> None:
    patched = strategic_merge(
        "Service", SERVICE, {"spec": {"$retainKeys": ["ports", "type"], "type": "ClusterIP"}}
    )
    assert set(patched["spec"]) == {"ports", "type"}


@pytest.mark.parametrize(
    "patch",
    [
        [],
        {"spec": {"ports": [{"name": "no-key"}]}},
        {"$patch": "merge-everything"},
        {"spec": {"$unknown": 1}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
    ],
)
def test_bad_patches_are_refused(patch: Any) -> None:
    with pytest.raises(PatchError):
        strategic_merge("Service", SERVICE, patch)
