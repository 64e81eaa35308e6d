"""The admin API through real HTTP (httpx against the bound port) and the in-process test
client: every endpoint and error code of API.md, bundles, concurrency, tokens, dry runs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from admin.app import create_app
from gateway.store.state import State
from gateway.store.writes import WritePath

from .harness import admin_gateway, free_port, gateway_yaml, route_yaml, service_yaml

YAML = {"Content-Type": "application/yaml"}
JSON = {"Content-Type": "application/json"}
PATCH = {"Content-Type": "application/merge-patch+json"}
CERTS = Path(__file__).parent / "data" / "certs"


def route(name: str = "db", hostname: str = "db.example.com", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "TLSRoute",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "infra"}],
            "hostnames": [hostname],
            "rules": [{"backendRefs": [{"name": "db", "port": 443}]}],
            **spec,
        },
    }


def assert_status(response: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body: dict[str, Any] = response.json()
    assert (body["kind"], body["status"], body["code"], body["reason"]) == (
        "Status",
        "Failure",
        code,
        reason,
    ), body
    return body


async def test_crud_of_one_document_and_its_errors(tmp_path: Path) -> None:
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        created = await http.post("/v1/tlsroutes", json=route())
        assert created.status_code == 201, created.text
        body = created.json()
        meta = body["metadata"]
        assert meta["generation"] == 1
        assert meta["uid"]
        assert meta["creationTimestamp"].endswith("Z")
        assert body["spec"]["parentRefs"][0] == {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "namespace": "infra",
            "name": "gw",
        }
        # Status is live: the parent does not exist yet.
        parent = body["status"]["parents"][0]
        assert parent["conditions"][0]["reason"] == "NoMatchingParent"
        assert_status(await http.post("/v1/tlsroutes", json=route()), 409, "AlreadyExists")

        got = await http.get("/v1/tlsroutes/apps/db")
        assert got.status_code == 200
        assert got.json()["metadata"] == meta
        listed = (await http.get("/v1/tlsroutes", params={"namespace": "apps"})).json()
        assert (listed["kind"], [i["metadata"]["name"] for i in listed["items"]]) == (
            "List",
            ["db"],
        )
        assert (await http.get("/v1/tlsroutes", params={"namespace": "x"})).json()["items"] == []

        # Replace: a spec change bumps the generation; a stale resourceVersion is refused.
        changed = route(hostname="db2.example.com")
        changed["metadata"]["resourceVersion"] = meta["resourceVersion"]
        replaced = await http.put("/v1/tlsroutes/apps/db", json=changed)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["metadata"]["generation"] == 2
        assert replaced.json()["metadata"]["uid"] == meta["uid"]
        stale = await http.put("/v1/tlsroutes/apps/db", json=changed | {"spec": route()["spec"]})
        assert_status(stale, 409, "Conflict")
        assert (await http.get("/v1/tlsroutes/apps/db")).json()["spec"]["hostnames"] == [
            "db2.example.com"
        ]

        # Merge patch: a label only is a metadata change (no generation bump).
        patched = await http.patch(
            "/v1/tlsroutes/apps/db",
            headers=PATCH,
            content=json.dumps({"metadata": {"labels": {"team": "a"}}}),
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["metadata"]["labels"] == {"team": "a"}
        assert patched.json()["metadata"]["generation"] == 2
        assert_status(
            await http.patch("/v1/tlsroutes/apps/db", json={"x": 1}), 415, "UnsupportedMediaType"
        )
        bad_patch = await http.patch(
            "/v1/tlsroutes/apps/db",
            headers=PATCH,
            content=json.dumps({"spec": {"hostnames": None}}),
        )
        invalid = assert_status(bad_patch, 422, "Invalid")
        assert invalid["details"]["causes"][0]["field"] == "spec.hostnames"

        deleted = await http.delete("/v1/tlsroutes/apps/db")
        assert deleted.status_code == 200
        assert deleted.json()["metadata"]["name"] == "db"
        assert_status(await http.delete("/v1/tlsroutes/apps/db"), 404, "NotFound")
        assert_status(await http.get("/v1/tlsroutes/apps/db"), 404, "NotFound")


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "code", "reason"),
    [
        ("GET", "/v1/widgets", {}, None, 404, "NotFound"),
        ("POST", "/v1/tlsroutes", JSON, b"{not json", 400, "BadRequest"),
        ("POST", "/v1/tlsroutes", JSON, b"[1, 2]", 400, "BadRequest"),
        ("POST", "/v1/tlsroutes", {"Content-Type": "text/plain"}, b"{}", 400, "BadRequest"),
        ("POST", "/v1/tlsroutes", YAML, b"a: [unclosed", 400, "BadRequest"),
        (
            "POST",
            "/v1/tlsroutes",
            JSON,
            json.dumps(route() | {"kind": "Gateway"}).encode(),
            400,
            "BadRequest",
        ),
        ("PUT", "/v1/tlsroutes/apps/other", JSON, json.dumps(route()).encode(), 400, "BadRequest"),
        (
            "POST",
            "/v1/apply",
            JSON,
            json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}).encode(),
            422,
            "Invalid",
        ),
        (
            "POST",
            "/v1/apply",
            JSON,
            json.dumps(route() | {"apiVersion": "gateway.networking.k8s.io/v9"}).encode(),
            422,
            "Invalid",
        ),
        ("GET", "/v1/gatewayclasses/a/b", {}, None, 404, "NotFound"),
        ("GET", "/v1/explain", {}, None, 400, "BadRequest"),
        ("POST", "/v1/apply?dryRun=Yes", JSON, b"{}", 400, "BadRequest"),
    ],
)
async def test_error_codes(
    method: str, path: str, headers: dict[str, str], body: bytes | None, code: int, reason: str
) -> None:
    app = create_app(WritePath(State(), None))
    client = app.test_client()
    response = await client.open(path, method=method, headers=headers, data=body)  # type: ignore[call-arg]
    assert response.status_code == code, await response.get_data()
    payload = json.loads(await response.get_data())
    assert (payload["kind"], payload["code"], payload["reason"]) == ("Status", code, reason)


async def test_invalid_document_reports_every_cause_with_wire_paths() -> None:
    app = create_app(WritePath(State(), None))
    bad = route()
    bad["spec"]["hostnames"] = ["10.0.0.1", "*.ok.example.com"]
    del bad["spec"]["rules"][0]["backendRefs"][0]["port"]
    response = await app.test_client().post("/v1/tlsroutes", json=bad)
    assert response.status_code == 422
    body = json.loads(await response.get_data())
    assert body["details"]["kind"] == "TLSRoute"
    assert body["details"]["name"] == "db"
    assert [(c["field"], c["reason"]) for c in body["details"]["causes"]] == [
        ("spec.hostnames[0]", "FieldValueInvalid"),
        ("spec.rules[0].backendRefs[0].port", "FieldValueRequired"),
    ]
    assert '"10.0.0.1"' in body["details"]["causes"][0]["message"]


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async with (
        admin_gateway(None, body_limit=1024) as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.post("/v1/apply", headers=YAML, content=b"# " + b"x" * 4096)
        assert_status(response, 413, "RequestEntityTooLarge")


UPSTREAM = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: tlsgate
spec:
  controllerName: tlsgate.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: gateway-tlsroute
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: tlsgate
  listeners:
    - name: https
      port: {port}
      protocol: TLS
      hostname: "*.example.com"
      allowedRoutes:
        namespaces:
          from: Same
        kinds:
          - kind: TLSRoute
      tls:
        mode: Passthrough
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata:
  name: gateway-conformance-infra-test
  namespace: gateway-conformance-infra
spec:
  parentRefs:
    - name: gateway-tlsroute
  hostnames:
    - abc.example.com
  rules:
    - backendRefs:
        - name: tls-backend
          port: 443
---
apiVersion: v1
kind: Service
metadata:
  name: tls-backend
  namespace: gateway-conformance-infra
spec:
  selector:
    app: tls-backend
  ports:
  - protocol: TCP
    port: 443
    targetPort: 8443
"""


async def test_upstream_yaml_applies_in_one_request_and_reapplying_changes_nothing(
    tmp_path: Path,
) -> None:
    text = UPSTREAM.format(port=free_port())
    async with (
        admin_gateway(tmp_path / "state") as (server, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        first = await http.post("/v1/apply", headers=YAML, content=text)
        assert first.status_code == 200, first.text
        items = first.json()["items"]
        assert [i["action"] for i in items] == ["created"] * 4
        assert items[2]["apiVersion"] == "gateway.networking.k8s.io/v1"  # converted
        route_status = items[2]["status"]["parents"][0]["conditions"]
        assert [(c["type"], c["status"]) for c in route_status] == [
            ("Accepted", "True"),
            ("ResolvedRefs", "True"),
        ]
        generation = server.state.generation
        again = await http.post("/v1/apply", headers=YAML, content=text)
        assert [i["action"] for i in again.json()["items"]] == ["unchanged"] * 4
        assert [i["metadata"]["resourceVersion"] for i in again.json()["items"]] == [
            i["metadata"]["resourceVersion"] for i in items
        ]
        assert server.state.generation == generation  # no swap


async def test_a_bundle_with_one_invalid_document_stores_nothing(tmp_path: Path) -> None:
    documents = [route(f"r{i}", f"h{i}.example.com") for i in range(10)]
    documents[6]["spec"]["hostnames"] = ["*"]
    async with (
        admin_gateway(tmp_path / "state") as (server, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.post("/v1/apply", json=documents)
        body = assert_status(response, 422, "Invalid")
        assert [c["field"] for c in body["details"]["causes"]] == ["items[6].spec.hostnames[0]"]
        assert (await http.get("/v1/tlsroutes")).json()["items"] == []
        assert server.store is not None
        assert server.store.load() == []


async def test_two_writers_racing_with_one_resource_version(tmp_path: Path) -> None:
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        version = (await http.post("/v1/tlsroutes", json=route())).json()["metadata"][
            "resourceVersion"
        ]
        codes: list[int] = []

        async def writer(hostname: str) -> None:
            body = route(hostname=hostname)
            body["metadata"]["resourceVersion"] = version
            codes.append((await http.put("/v1/tlsroutes/apps/db", json=body)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, "a.example.com")
            nursery.start_soon(writer, "b.example.com")
        assert sorted(codes) == [200, 409]
        final = (await http.get("/v1/tlsroutes/apps/db")).json()
        assert final["spec"]["hostnames"] in (["a.example.com"], ["b.example.com"])
        assert final["metadata"]["generation"] == 2


async def test_token_is_required_except_for_probes(tmp_path: Path) -> None:
    async with (
        admin_gateway(None, token="s3cret") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert_status(await http.get("/v1/tlsroutes"), 401, "Unauthorized")
        assert_status(
            await http.get("/v1/tlsroutes", headers={"Authorization": "Bearer nope"}),
            401,
            "Unauthorized",
        )
        ok = await http.get("/v1/tlsroutes", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200


async def test_dry_run_shows_status_and_table_and_stores_nothing(tmp_path: Path) -> None:
    port = free_port()
    bundle = (
        gateway_yaml(port)
        + service_yaml("db", 9)
        + route_yaml("db", ["db.example.com"], [("db", 1)])
    )
    async with (
        admin_gateway(tmp_path / "state") as (server, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.post(
            "/v1/apply", params={"dryRun": "All"}, headers=YAML, content=bundle
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["dryRun"] is True
        gateway = next(i for i in body["items"] if i["kind"] == "Gateway")
        assert gateway["status"]["conditions"][0]["reason"] == "Accepted"
        assert body["routingTable"]["binds"][0]["port"] == port
        assert server.state.documents == {}
        assert server.store is not None
        assert server.store.load() == []
        assert (await http.get("/v1/routingtable")).json()["binds"] == []


async def test_routing_table_and_explain(tmp_path: Path) -> None:
    port = free_port()
    bundle = (
        gateway_yaml(port)
        + service_yaml("db", 9)
        + route_yaml("db", ["db.example.com"], [("db", 1)])
    )
    async with admin_gateway(None) as (_, url), httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/v1/apply", headers=YAML, content=bundle)).status_code == 200
        table = (await http.get("/v1/routingtable")).json()
        assert table["binds"][0]["listeners"][0]["routes"][0]["route"] == "apps/db"
        routed = (
            await http.get("/v1/explain", params={"port": port, "sni": "DB.example.com"})
        ).json()
        assert (routed["result"], routed["route"], routed["hostname"]) == (
            "routed",
            "apps/db",
            "db.example.com",
        )
        assert routed["backends"][0]["endpoints"] == ["127.0.0.1:9"]
        rejected = (
            await http.get(
                "/v1/explain", params={"port": port, "sni": "x.example.org", "address": "127.0.0.1"}
            )
        ).json()
        assert (rejected["result"], rejected["reason"]) == ("rejected", "no-route")


def _tls_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "cert", "namespace": "infra"},
        "stringData": {
            "tls.crt": (CERTS / "example.crt").read_text(),
            "tls.key": (CERTS / "example.key").read_text(),
        },
    }


async def test_private_keys_are_write_only_and_the_state_dir_is_private(tmp_path: Path) -> None:
    key_line = (CERTS / "example.key").read_text().splitlines()[1]
    state_dir = tmp_path / "state"
    async with admin_gateway(state_dir) as (server, url), httpx.AsyncClient(base_url=url) as http:
        created = await http.post("/v1/secrets", json=_tls_secret())
        assert created.status_code == 201, created.text
        assert set(created.json()["data"]) == {"tls.crt"}
        got = (await http.get("/v1/secrets/infra/cert")).json()
        listed = (await http.get("/v1/secrets")).text
        for text in (created.text, json.dumps(got), listed):
            assert key_line not in text
            assert "tls.key" not in text
        # Writing back what was read keeps the key (it is write-only, not deleted).
        got["metadata"]["labels"] = {"rotated": "no"}
        assert (await http.put("/v1/secrets/infra/cert", json=got)).status_code == 200
        assert server.store is not None
        stored = server.store.load()[0]
        assert "tls.key" in stored["data"]
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state_dir / "tlsgate.db").st_mode) == 0o600


async def test_readyz_reports_unbound_listeners(tmp_path: Path) -> None:
    port = free_port()
    import socket

    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        async with admin_gateway(None) as (_, url), httpx.AsyncClient(base_url=url) as http:
            assert (
                await http.post("/v1/apply", headers=YAML, content=gateway_yaml(port))
            ).status_code == 200
            body = assert_status(await http.get("/readyz"), 503, "ServiceUnavailable")
            assert f"127.0.0.1:{port}" in body["message"]
    finally:
        blocker.close()


async def test_a_failing_commit_is_a_500_status_and_changes_nothing(tmp_path: Path) -> None:
    async with (
        admin_gateway(tmp_path / "state") as (server, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.post("/v1/tlsroutes", json=route())).status_code == 201
        assert server.store is not None
        server.store.close()  # every later commit fails, as on a broken disk
        generation = server.state.generation
        response = await http.put("/v1/tlsroutes/apps/db", json=route(hostname="new.example.com"))
        body = assert_status(response, 500, "InternalError")
        assert "ProgrammingError" in body["message"]
        assert server.state.generation == generation
        kept = (await http.get("/v1/tlsroutes/apps/db")).json()
        assert kept["spec"]["hostnames"] == ["db.example.com"]


async def test_cluster_scoped_kinds_use_name_only_paths(tmp_path: Path) -> None:
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "team-a", "labels": {"team": "a"}},
        }
        created = await http.put("/v1/namespaces/team-a", json=namespace)
        assert created.status_code == 201, created.text
        assert created.json()["metadata"]["labels"] == {
            "team": "a",
            "kubernetes.io/metadata.name": "team-a",
        }
        gateway_class = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "tlsgate"},
            "spec": {"controllerName": "tlsgate.dev/gateway-controller"},
        }
        assert (await http.post("/v1/gatewayclasses", json=gateway_class)).status_code == 201
        got = (await http.get("/v1/gatewayclasses/tlsgate")).json()
        assert got["status"]["conditions"][0]["reason"] == "Accepted"
        assert_status(await http.get("/v1/gatewayclasses/x/tlsgate"), 404, "NotFound")
        assert_status(await http.get("/v1/tlsroutes/only-a-name"), 404, "NotFound")
        assert (await http.delete("/v1/namespaces/team-a")).status_code == 200
        assert (await http.get("/v1/namespaces")).json()["items"] == []
