"""Watches on the Kubernetes paths (admin/watch.py), read as a client library reads them:
WatchEvents as JSON lines, a status change as MODIFIED, bookmarks, resuming from a
resourceVersion, 410 for one too old, an object leaving a label selector, timeoutSeconds.

Each watch here resumes from a resourceVersion taken before the changes and ends after
`timeoutSeconds`: its whole answer is read, so nothing depends on when the request arrived.
(tests/test_kubectl.py watches live, with kubectl get -w.)"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel

from admin import watch
from gateway.api.kinds import ObjectKey

from .harness import admin_gateway, free_port, gateway_yaml, route_yaml, service_yaml

YAML = {"Content-Type": "application/yaml"}
ROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/apps/tlsroutes"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        admin_gateway(None) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        answer = await client.post(
            "/v1/apply", content=gateway_yaml(18443) + service_yaml("db", 15432), headers=YAML
        )
        assert answer.status_code == 200, answer.text
        yield client


async def _apply(http: httpx.AsyncClient, manifests: str) -> None:
    answer = await http.post("/v1/apply", content=manifests, headers=YAML)
    assert answer.status_code == 200, answer.text


async def _since(http: httpx.AsyncClient) -> str:
    """The revision of a list (the first Kubernetes list also starts following changes)."""
    listed = (await http.get(ROUTES)).json()
    assert listed["kind"] == "TLSRouteList"
    return str(listed["metadata"]["resourceVersion"])


async def _watch(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    """Every event of a watch that ends after one second."""
    with trio.fail_after(10):
        answer = await http.get(ROUTES, params={"watch": "true", "timeoutSeconds": "1", **params})
    assert answer.status_code == 200, answer.text
    return [json.loads(line) for line in answer.text.splitlines() if line.strip()]


def _resolved(event: dict[str, Any]) -> str:
    [parent] = event["object"]["status"]["parents"]
    return str(next(c["status"] for c in parent["conditions"] if c["type"] == "ResolvedRefs"))


def _summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


async def test_a_status_change_is_modified_and_a_delete_deleted(http: httpx.AsyncClient) -> None:
    since = await _since(http)
    await _apply(http, route_yaml("late", ["late.example.com"], [("later", 1)]))
    # The Service arrives: the route's spec is the same, its status is not.
    await _apply(http, service_yaml("later", 15433))
    assert (await http.delete("/v1/tlsroutes/apps/late")).status_code == 200
    events = await _watch(http, resourceVersion=since)
    assert _summary(events) == [("ADDED", "late"), ("MODIFIED", "late"), ("DELETED", "late")]
    assert _resolved(events[0]) == "False"  # its Service did not exist yet
    assert _resolved(events[1]) == "True"
    assert events[0]["object"]["spec"] == events[1]["object"]["spec"]


async def test_without_a_revision_what_is_in_force_comes_first(http: httpx.AsyncClient) -> None:
    await _since(http)
    await _apply(http, route_yaml("one", ["one.example.com"], [("db", 1)]))
    await _apply(http, route_yaml("two", ["two.example.com"], [("db", 1)]))
    assert _summary(await _watch(http)) == [("ADDED", "one"), ("ADDED", "two")]
    assert _summary(await _watch(http, resourceVersion="0")) == [("ADDED", "one"), ("ADDED", "two")]


async def test_a_watch_at_an_older_version_answers_in_it(http: httpx.AsyncClient) -> None:
    since = await _since(http)
    await _apply(http, route_yaml("one", ["one.example.com"], [("db", 1)]))
    older = ROUTES.replace("/v1/", "/v1alpha2/")
    with trio.fail_after(10):
        answer = await http.get(
            older, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": since}
        )
    [event] = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
    assert event["type"] == "ADDED"
    assert event["object"]["apiVersion"] == "gateway.networking.k8s.io/v1alpha2"
    listed = (await http.get(older)).json()
    assert listed["kind"] == "TLSRouteList"
    assert listed["apiVersion"] == "gateway.networking.k8s.io/v1alpha2"
    assert [item["apiVersion"] for item in listed["items"]] == [listed["apiVersion"]]


async def test_a_revision_before_the_hub_is_gone(http: httpx.AsyncClient) -> None:
    await _since(http)
    answer = await http.get(ROUTES, params={"watch": "true", "resourceVersion": "1"})
    assert answer.status_code == 410
    assert answer.json()["reason"] == "Expired"
    malformed = await http.get(ROUTES, params={"watch": "true", "resourceVersion": "x"})
    assert malformed.status_code == 400


async def test_bookmarks_and_leaving_a_selector(http: httpx.AsyncClient) -> None:
    plain = route_yaml("web", ["web.example.com"], [("db", 1)])
    await _apply(http, plain)
    since = await _since(http)
    labelled = plain.replace(
        "metadata: {name: web, namespace: apps}",
        "metadata: {name: web, namespace: apps, labels: {tier: front}}",
    )
    assert labelled != plain
    selector = {"labelSelector": "tier=front", "allowWatchBookmarks": "true"}
    await _apply(http, labelled)
    entered = await _watch(http, resourceVersion=since, **selector)
    assert _summary(entered) == [("ADDED", "web")]
    assert entered[0]["object"]["metadata"]["labels"] == {"tier": "front"}
    # A change elsewhere only: a bookmark with the new resourceVersion.
    middle = await _since(http)
    await _apply(http, service_yaml("other", 15434))
    [bookmark] = await _watch(http, resourceVersion=middle, **selector)
    assert bookmark["type"] == "BOOKMARK"
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) > int(middle)
    # Without bookmarks asked for, the change elsewhere says nothing.
    assert await _watch(http, resourceVersion=middle, labelSelector="tier=front") == []
    # The label goes: the route leaves the selection, as DELETED.
    before = await _since(http)
    await _apply(http, plain)
    [left] = await _watch(http, resourceVersion=before, **selector)
    assert _summary([left]) == [("DELETED", "web")]
    # As the API server does: the object as the watch last selected it, at the new version.
    assert left["object"]["metadata"]["labels"] == {"tier": "front"}
    assert int(left["object"]["metadata"]["resourceVersion"]) > int(before)


# --- with a store: the revision moves with writes only ----------------------------------------

GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/infra/gateways"


def _programmed(wire: dict[str, Any]) -> str:
    return str(next(c["status"] for c in wire["status"]["conditions"] if c["type"] == "Programmed"))


@pytest.mark.parametrize("stopped", [False, True])
async def test_a_status_change_without_a_write_reaches_a_watch_from_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped: bool
) -> None:
    """A listener whose port is taken, then freed: its Gateway's Programmed changes with no
    write, so the store revision stays. A watch from a list taken before still gets it, as
    kubectl wait --for=condition=Programmed needs; also when the change came while the hub
    had stopped following (nobody watched for IDLE_SECONDS)."""
    monkeypatch.setattr(watch, "IDLE_SECONDS", 0.3)
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    async with (
        admin_gateway(tmp_path, bind_retry=0.1) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        try:
            await _apply(http, gateway_yaml(port))
            with trio.fail_after(10):
                while True:
                    listed = (await http.get(GATEWAYS)).json()
                    if _programmed(listed["items"][0]) == "False":
                        break
                    await trio.sleep(0.05)
            if stopped:
                await trio.sleep(1)  # idle: the hub stops following
        finally:
            held.close()
        since = listed["metadata"]["resourceVersion"]
        with trio.fail_after(10):
            while _programmed((await http.get("/v1/gateways/infra/gw")).json()) != "True":  # noqa: ASYNC110 (polled over HTTP)
                await trio.sleep(0.05)
        assert (await http.get(GATEWAYS)).json()["metadata"]["resourceVersion"] == since
        answer = await http.get(
            GATEWAYS, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": since}
        )
        events = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
        assert [(e["type"], _programmed(e["object"])) for e in events][-1] == ("MODIFIED", "True")


async def test_a_list_never_says_a_revision_ahead_of_its_items(tmp_path: Path) -> None:
    """A big write: between its commit and its swap (the build runs on a thread), what a
    list reads must still be the revision before; the new one comes with its documents."""
    many = "".join(route_yaml(f"r{i}", [f"r{i}.example.com"], [("db", 1)]) for i in range(300))
    async with (
        admin_gateway(tmp_path) as (server, url),
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        await _apply(http, gateway_yaml(free_port()) + service_yaml("db", 15432))
        writes = server.writes
        before = writes.revision
        last = ObjectKey("TLSRoute", "apps", "r299")
        looks: list[tuple[str, bool]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_apply, http, many)
            with trio.fail_after(30):
                while last not in writes.documents:
                    looks.append((writes.revision, last in writes.documents))
                    await trio.lowlevel.checkpoint()
        assert {revision for revision, _ in looks} == {before}, "a revision ahead of its items"
        assert int(writes.revision) == int(before) + 1
