"""The Kubernetes paths against hostile and malformed requests (found by review): no
private key through a JSON patch, bounded patch work, clear 400s for malformed parameters,
watches that outlive the admin read timeout, and server-side apply's edge cases."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from admin.listen import AdminLimits

from .harness import Pki, admin_gateway, gateway_yaml, secret_yaml, service_yaml

YAML = {"Content-Type": "application/yaml"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
SECRET = "/api/v1/namespaces/infra/secrets/cert"
CONFIGMAPS = "/api/v1/namespaces/apps/configmaps"


@pytest.fixture
async def setup(tmp_path: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    pki = Pki(tmp_path)
    cert = pki.ca.issue_cert("db.example.com")
    key = cert.private_key_pem.bytes().decode()
    limits = AdminLimits(read_timeout=1.0)
    async with (
        admin_gateway(None, admin_limits=limits) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=20) as http,
    ):
        manifests = gateway_yaml(18443) + service_yaml("db", 15432) + secret_yaml("cert", cert)
        answer = await http.post("/v1/apply", content=manifests, headers=YAML)
        assert answer.status_code == 200, answer.text
        yield http, key


def _key_material(key: str) -> list[str]:
    import base64

    return [key.splitlines()[1], base64.b64encode(key.encode()).decode()[:40]]


async def test_a_json_patch_never_reads_a_private_key(
    setup: tuple[httpx.AsyncClient, str],
) -> None:
    http, key = setup
    for operations in (
        [{"op": "test", "path": "/data/tls.key", "value": "x"}],
        [{"op": "add", "path": "/data/nope/x", "value": "1"}],
        [{"op": "copy", "from": "/data/tls.key", "path": "/metadata/annotations"}],
        [{"op": "move", "from": "/data/tls.key", "path": "/data/moved"}],
    ):
        answer = await http.patch(
            SECRET, content=json.dumps(operations), headers=JSON_PATCH, params={"dryRun": "All"}
        )
        assert answer.status_code == 400, answer.text
        assert all(m not in answer.text for m in _key_material(key))
    # Patching other fields keeps the key (it is carried over, never shown).
    label = [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]
    answer = await http.patch(SECRET, content=json.dumps(label), headers=JSON_PATCH)
    assert answer.status_code == 200, answer.text
    assert all(m not in answer.text for m in _key_material(key))
    stored = (await http.get(SECRET)).json()
    assert stored["metadata"]["labels"] == {"a": "b"}


async def test_patch_work_is_bounded(setup: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = setup
    created = await http.post(
        CONFIGMAPS,
        content=json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        headers={"Content-Type": "application/json"},
    )
    assert created.status_code == 201, created.text
    bomb = [{"op": "add", "path": "/data", "value": {"x": "y" * 1000}}]
    bomb += [
        {"op": "copy", "from": "/data", "path": f"/metadata/annotations~1k{i}"} for i in range(1)
    ]
    doubling = [{"op": "add", "path": "/metadata/annotations", "value": {}}]
    doubling += [{"op": "add", "path": "/metadata/labels", "value": {"x": "y" * 1000}}]
    doubling += [
        {"op": "copy", "from": "/metadata", "path": f"/metadata/labels/k{i}"} for i in range(40)
    ]
    with trio.fail_after(10):
        answer = await http.patch(
            f"{CONFIGMAPS}/c", content=json.dumps(doubling), headers=JSON_PATCH
        )
    assert answer.status_code == 400
    assert "grows past" in answer.json()["message"]
    unhashable = {"spec": {"$setElementOrder/ports": [{"port": [1]}], "ports": [{"port": [1]}]}}
    answer = await http.patch(
        "/api/v1/namespaces/apps/services/db",
        content=json.dumps(unhashable),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "²"},
        {"limit": "9" * 5000},
        {"continue": "[" * 5000},
        {"continue": "not-a-token"},
        {"labelSelector": "a=" + "+" * 5000},
        {"labelSelector": ",".join(f"k{i}" for i in range(300))},
        {"fieldSelector": "spec.x=1"},
        {"watch": "true", "resourceVersion": "²"},
        {"watch": "true", "timeoutSeconds": "9" * 30},
    ],
)
async def test_malformed_list_parameters_are_400(
    setup: tuple[httpx.AsyncClient, str], query: dict[str, str]
) -> None:
    http, _ = setup
    answer = await http.get(CONFIGMAPS, params=query)
    assert answer.status_code == 400, answer.text
    assert answer.json()["kind"] == "Status"


async def test_paths_naming_nothing(setup: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = setup
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    answer = await http.post(
        "/api/v1/namespaces//configmaps", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 404
    assert (await http.get("/openapi/v3/apis/nothing/v9")).status_code == 404


async def test_put_takes_the_namespace_from_the_path(setup: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = setup
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p"}, "data": {"a": "1"}}
    answer = await http.put(
        f"{CONFIGMAPS}/p", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["metadata"]["namespace"] == "apps"


async def test_a_watch_outlives_the_read_timeout(setup: tuple[httpx.AsyncClient, str]) -> None:
    """The admin read timeout (1 s here) is for requests that stall, not for a watch whose
    client rightly sends nothing: a change 2 s in still arrives."""
    http, _ = setup
    since = (await http.get(CONFIGMAPS)).json()["metadata"]["resourceVersion"]
    body: list[str] = []

    async def watch() -> None:
        answer = await http.get(
            CONFIGMAPS,
            params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "4"},
        )
        body.append(answer.text)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(2)  # past the read timeout, before the change
        created = await http.post(
            CONFIGMAPS,
            content=json.dumps(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}
            ),
            headers={"Content-Type": "application/json"},
        )
        assert created.status_code == 201
    [text] = body
    events = [json.loads(line) for line in text.splitlines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "late")]


async def test_server_side_apply_edge_cases(setup: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = setup
    apply = {"Content-Type": "application/apply-patch+yaml"}
    path = f"{CONFIGMAPS}/s"

    async def applied(body: dict[str, Any], manager: str = "me") -> httpx.Response:
        return await http.patch(
            path, content=json.dumps(body), headers=apply, params={"fieldManager": manager}
        )

    base = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}}
    assert (await applied({**base, "data": {}})).status_code == 201
    # Owning `data` (empty), then a key in it: the key is set, not removed.
    answer = await applied({**base, "data": {"x": "1"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"x": "1"}
    # Labels set by a plain write survive an apply of an empty labels map.
    put = {**base, "metadata": {"name": "s", "labels": {"team": "db"}}, "data": {"x": "1"}}
    answer = await http.put(
        path, content=json.dumps(put), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    answer = await applied({**base, "metadata": {"name": "s", "labels": {}}, "data": {"x": "1"}})
    assert answer.json()["metadata"]["labels"] == {"team": "db"}
    # Malformed: 400, not 500.
    assert (await applied({**base, "metadata": ["s"]})).status_code == 400
    assert (await applied(base, manager="m" * 200)).status_code == 400
