"""No write happens on a read or a dry run, over real HTTP against a real store (issue 9,
item 3): HEAD with a body, `?dryRun=All` on every verb, DeleteOptions, and merge patches
whose resourceVersion is null."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from admin.render import CHUNK_ITEMS

from .harness import admin_gateway, db_route, free_port
from .test_admin import PATCH, assert_status, route

YAML = {"Content-Type": "application/yaml"}


async def _fingerprint(http: httpx.AsyncClient) -> tuple[Any, ...]:
    """Everything a write would change: the store revision, every document's version, the
    routing table's generation."""
    listed = (await http.get("/v1/tlsroutes")).json()
    table = (await http.get("/v1/routingtable")).json()
    versions = sorted(
        (i["metadata"]["name"], i["metadata"]["resourceVersion"], json.dumps(i["spec"]))
        for i in listed["items"]
    )
    return listed["metadata"]["resourceVersion"], versions, table["generation"]


async def test_reads_and_dry_runs_never_write(tmp_path: Path) -> None:
    bundle = db_route(free_port(), 9)
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.post("/v1/apply", content=bundle, headers=YAML)).status_code == 200
        before = await _fingerprint(http)
        current = (await http.get("/v1/tlsroutes/apps/db")).json()
        other = json.dumps(route(hostname="other.example.com")).encode()
        new = json.dumps(route(name="new")).encode()
        json_type = {"Content-Type": "application/json"}

        # HEAD is a GET without a body, whatever it carries (API.md "Errors").
        for path, body in [
            ("/v1/tlsroutes", new),
            ("/v1/tlsroutes/apps/db", other),
            ("/v1/gatewayclasses/tlsgate", b'{"spec": {}}'),
        ]:
            head = await http.request("HEAD", path, content=body, headers=json_type)
            assert head.status_code == 200
            assert head.content == b""
            assert await _fingerprint(http) == before, path

        # ?dryRun=All on every verb: the answer is what would result; nothing is stored.
        created = await http.post("/v1/tlsroutes?dryRun=All", content=new, headers=json_type)
        assert created.status_code == 201
        assert created.json()["metadata"]["name"] == "new"
        replaced = await http.put(
            "/v1/tlsroutes/apps/db?dryRun=All", content=other, headers=json_type
        )
        assert replaced.status_code == 200
        assert replaced.json()["spec"]["hostnames"] == ["other.example.com"]
        patched = await http.patch(
            "/v1/tlsroutes/apps/db?dryRun=All",
            content=json.dumps({"spec": {"hostnames": ["patched.example.com"]}}),
            headers=PATCH,
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["spec"]["hostnames"] == ["patched.example.com"]
        deleted = await http.delete("/v1/tlsroutes/apps/db?dryRun=All")
        assert deleted.status_code == 200
        assert deleted.json()["metadata"]["name"] == "db"
        options = await http.request(
            "DELETE",
            "/v1/tlsroutes/apps/db",
            content=json.dumps({"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]}),
            headers=json_type,
        )
        assert options.status_code == 200, options.text
        applied = await http.post("/v1/apply?dryRun=All", content=other, headers=json_type)
        assert applied.status_code == 200
        assert applied.json()["dryRun"] is True
        assert await _fingerprint(http) == before
        assert (await http.get("/v1/tlsroutes/apps/db")).json() == current


async def test_delete_preconditions_and_unconditional_patches(tmp_path: Path) -> None:
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        created = (await http.post("/v1/tlsroutes", json=route())).json()
        version = created["metadata"]["resourceVersion"]

        # RFC 7386: null removes the member; a patch without a version is unconditional.
        patched = await http.patch(
            "/v1/tlsroutes/apps/db",
            content=json.dumps({"metadata": {"resourceVersion": None, "labels": {"a": "b"}}}),
            headers=PATCH,
        )
        assert patched.status_code == 200, patched.text
        stale = await http.patch(
            "/v1/tlsroutes/apps/db",
            content=json.dumps({"metadata": {"resourceVersion": version, "labels": {"a": "c"}}}),
            headers=PATCH,
        )
        assert_status(stale, 409, "Conflict")

        def delete_options(**preconditions: str) -> dict[str, Any]:
            return {"content": json.dumps({"preconditions": preconditions}), "headers": PATCH}

        wrong = await http.request("DELETE", "/v1/tlsroutes/apps/db", **delete_options(uid="nope"))
        assert_status(wrong, 409, "Conflict")
        wrong = await http.request(
            "DELETE", "/v1/tlsroutes/apps/db", **delete_options(resourceVersion=version)
        )
        assert_status(wrong, 409, "Conflict")
        for malformed in (
            b'{"dryRun": ["Yes"]}',
            b'{"dryRun": ""}',
            b'{"dryRun": false}',
            b'{"dryRun": 0}',
            b'{"dryRun": {}}',
            b'{"dryRun": "All"}',
            b'{"preconditions": ""}',
            b'{"preconditions": []}',
            b'{"preconditions": {"resourceVersion": 7}}',
            b"[]",
        ):
            bad = await http.request(
                "DELETE", "/v1/tlsroutes/apps/db", content=malformed, headers=PATCH
            )
            assert_status(bad, 400, "BadRequest")
        empty_uid = await http.request("DELETE", "/v1/tlsroutes/apps/db", **delete_options(uid=""))
        assert_status(empty_uid, 409, "Conflict")
        for query in ("dryRun=All&dryRun=x", "dryRun=x&dryRun=All", "dryRun=All&dryRun=All"):
            assert_status(await http.delete(f"/v1/tlsroutes/apps/db?{query}"), 400, "BadRequest")
        assert (await http.get("/v1/tlsroutes/apps/db")).status_code == 200
        current = patched.json()["metadata"]
        right = await http.request(
            "DELETE",
            "/v1/tlsroutes/apps/db",
            **delete_options(uid=current["uid"], resourceVersion=current["resourceVersion"]),
        )
        assert right.status_code == 200
        assert_status(await http.get("/v1/tlsroutes/apps/db"), 404, "NotFound")


async def test_explain_refuses_impossible_ports_and_addresses(tmp_path: Path) -> None:
    async with (
        admin_gateway(None) as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        for query in ("port=99999&sni=a", "port=0&sni=a", "port=443&address=zz&sni=a"):
            assert_status(await http.get(f"/v1/explain?{query}"), 400, "BadRequest")
        good = await http.get("/v1/explain?port=443&address=127.0.0.1&sni=a")
        assert good.status_code == 200
        assert good.json()["result"] == "rejected"


async def test_a_malformed_private_key_is_never_echoed(tmp_path: Path) -> None:
    secret = "MHcCAQEEIKEYMATERIALNEVERTOBESHOWN"
    async with (
        admin_gateway(None) as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        for data in (
            {"stringData": {"tls.crt": "x", "tls.key": [secret]}},
            {"data": {"tls.key": {"pem": secret}}},
            {"data": {"tls.key": secret + "!"}},
        ):
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": "infra"},
                "type": "kubernetes.io/tls",
                **data,
            }
            answer = await http.put("/v1/secrets/infra/s", json=body)
            assert_status(answer, 422, "Invalid")
            assert secret not in answer.text
            assert "tls.key" in answer.text


async def test_the_namespace_of_a_create_request_is_honoured(tmp_path: Path) -> None:
    async with (
        admin_gateway(None) as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
        created = await http.post("/v1/configmaps?namespace=infra", json=config_map)
        assert created.status_code == 201
        assert created.json()["metadata"]["namespace"] == "infra"
        other = config_map | {"metadata": {"name": "d", "namespace": "other"}}
        mismatch = await http.post("/v1/configmaps?namespace=infra", json=other)
        assert_status(mismatch, 400, "BadRequest")
        assert_status(await http.get("/v1/configmaps/other/d"), 404, "NotFound")


async def test_a_document_named_twice_in_one_apply_is_one_write(tmp_path: Path) -> None:
    """A bundle that names a new object twice creates it (generation 1) and stores it; the
    later copy is what is stored. (The plan compared the second copy with the first and
    answered "unchanged", storing nothing.)"""
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        first, second = route(hostname="a.example.com"), route(hostname="b.example.com")
        for copies, hostname in (([first, first], "a.example.com"), ([first, second], "b")):
            await http.delete("/v1/tlsroutes/apps/db")
            body = {"apiVersion": "v1", "kind": "List", "items": copies}
            applied = await http.post("/v1/apply", json=body)
            assert applied.status_code == 200, applied.text
            assert [i["action"] for i in applied.json()["items"]] == ["created"]
            stored = (await http.get("/v1/tlsroutes/apps/db")).json()
            assert stored["metadata"]["generation"] == 1
            assert stored["spec"]["hostnames"][0].startswith(hostname)


async def test_a_bundle_sent_again_is_known_but_never_stale(tmp_path: Path) -> None:
    """Documents sent again exactly as before are not admitted again (admin/known.py); a
    write in between (PUT, DELETE) makes them count as new again, and errors in the rest of
    the bundle still name their place in it. Well over MANY_DOCUMENTS, so the thread paths
    run too."""
    routes = [route(name=f"r{i}", hostname=f"r{i}.example.com") for i in range(100)]
    body = {"apiVersion": "v1", "kind": "List", "items": routes}
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        first = await http.post("/v1/apply", json=body)
        assert first.status_code == 200, first.text
        assert {i["action"] for i in first.json()["items"]} == {"created"}
        again = await http.post("/v1/apply", json=body)
        assert {i["action"] for i in again.json()["items"]} == {"unchanged"}
        assert again.json()["items"][5]["status"]["parents"], "statuses are still shown"

        # Changed behind the bundle's back: the bundle's copy is a change again.
        moved = route(name="r3", hostname="moved.example.com")
        assert (await http.put("/v1/tlsroutes/apps/r3", json=moved)).status_code == 200
        assert (await http.delete("/v1/tlsroutes/apps/r7")).status_code == 200
        third = (await http.post("/v1/apply", json=body)).json()["items"]
        actions = {i["metadata"]["name"]: i["action"] for i in third}
        assert actions["r3"] == "configured"
        assert actions["r7"] == "created"
        assert {a for n, a in actions.items() if n not in ("r3", "r7")} == {"unchanged"}
        stored = (await http.get("/v1/tlsroutes/apps/r3")).json()
        assert stored["spec"]["hostnames"] == ["r3.example.com"]
        assert stored["metadata"]["generation"] == 3

        # A bad document after 100 known ones: 422, naming its own index.
        bad = route(name="bad", hostname="UPPER_CASE!")
        refused = await http.post("/v1/apply", json=body | {"items": [*routes, bad]})
        failure = assert_status(refused, 422, "Invalid")
        assert {c["field"].split(".")[0] for c in failure["details"]["causes"]} == {"items[100]"}
        assert "1 of 101 documents" in failure["message"]


async def test_lists_show_the_status_in_force_not_a_rendered_copy(tmp_path: Path) -> None:
    """Answers are rendered once per (document, status) and reused (admin/render.py): a
    status that changes because of another object (a Service created) shows at once."""
    routes = [route(name=f"r{i}", hostname=f"r{i}.example.com") for i in range(80)]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": "apps"},
        "spec": {"ports": [{"port": 443}]},
    }

    def resolved(listed: httpx.Response) -> set[str]:
        return {
            c["reason"]
            for item in listed.json()["items"]
            for c in item["status"]["parents"][0]["conditions"]
            if c["type"] == "ResolvedRefs"
        }

    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        await http.post("/v1/apply", json={"apiVersion": "v1", "kind": "List", "items": routes})
        await http.delete("/v1/services/apps/db")
        assert resolved(await http.get("/v1/tlsroutes")) == {"BackendNotFound"}
        assert (await http.post("/v1/services", json=service)).status_code == 201
        assert resolved(await http.get("/v1/tlsroutes")) == {"ResolvedRefs"}
        again = await http.post(
            "/v1/apply", json={"apiVersion": "v1", "kind": "List", "items": routes}
        )
        assert resolved(again) == {"ResolvedRefs"}
        assert {i["action"] for i in again.json()["items"]} == {"unchanged"}


async def test_long_answers_come_in_chunks_that_make_one_document(tmp_path: Path) -> None:
    """Answers over CHUNK_ITEMS documents are sent as chunks (admin/render.py), with the
    Content-Length of their sum: apply, its dry run and a list all parse as one JSON value
    holding every document, over HTTP/1.1 and HTTP/1.0 alike."""
    count = 2 * CHUNK_ITEMS + 7
    routes = [route(name=f"c{i}", hostname=f"c{i}.example.com") for i in range(count)]
    body = {"apiVersion": "v1", "kind": "List", "items": routes}
    async with (
        admin_gateway(tmp_path / "state") as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        applied = await http.post("/v1/apply", json=body)
        assert applied.status_code == 200, applied.text[:200]
        assert int(applied.headers["content-length"]) == len(applied.content)
        assert [i["metadata"]["name"] for i in applied.json()["items"]] == [
            f"c{i}" for i in range(count)
        ]
        preview = await http.post("/v1/apply", params={"dryRun": "All"}, json=body)
        assert preview.json()["dryRun"] is True
        assert {i["action"] for i in preview.json()["items"]} == {"unchanged"}
        assert preview.json()["routingTable"]["binds"] == []  # no Gateway: nothing bound
        listed = await http.get("/v1/tlsroutes")
        assert len(listed.json()["items"]) == count
        assert listed.json()["metadata"]["resourceVersion"]
    # The same list over HTTP/1.0 (no chunked transfer encoding to fall back on).
    async with admin_gateway(tmp_path / "state") as (_, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET /v1/tlsroutes HTTP/1.0\r\nHost: x\r\n\r\n")
            raw = bytearray()
            while chunk := await stream.receive_some(1 << 16):
                raw += chunk
        head, _, payload = bytes(raw).partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head[:80]
        assert len(json.loads(payload)["items"]) == count


async def test_every_committed_change_has_an_audit_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Who changed what: one `tlsgate.audit` line per document a write created, configured
    or deleted; none for a dry run or for what stayed unchanged."""
    caplog.set_level(logging.INFO, logger="tlsgate.audit")

    def audited() -> list[dict[str, Any]]:
        found = [r.fields for r in caplog.records if r.name == "tlsgate.audit"]  # type: ignore[attr-defined]
        caplog.clear()
        return found

    async with (
        admin_gateway(tmp_path, token="t0ken") as (_, url),
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": "Bearer t0ken", "User-Agent": "probe/1"}
        ) as http,
    ):
        bundle = db_route(free_port(), 9)
        assert (await http.post("/v1/apply", content=bundle, headers=YAML)).status_code == 200
        created = audited()
        assert {(e["action"], e["kind"]) for e in created} >= {
            ("created", "TLSRoute"),
            ("created", "Gateway"),
        }
        first = next(e for e in created if e["kind"] == "TLSRoute")
        assert (first["namespace"], first["name"], first["generation"]) == ("apps", "db", 1)
        assert (first["method"], first["path"], first["credential"], first["agent"]) == (
            "POST",
            "/v1/apply",
            "token",
            "probe/1",
        )
        assert first["client"] == "127.0.0.1"
        assert int(first["resource_version"]) >= 1
        assert (await http.post("/v1/apply", content=bundle, headers=YAML)).status_code == 200
        assert audited() == []  # unchanged
        dry = await http.patch(
            "/v1/tlsroutes/apps/db?dryRun=All",
            content=json.dumps({"spec": {"hostnames": ["x.example.com"]}}),
            headers=PATCH,
        )
        assert dry.status_code == 200
        assert audited() == []
        patched = await http.patch(
            "/v1/tlsroutes/apps/db",
            content=json.dumps({"spec": {"hostnames": ["x.example.com"]}}),
            headers=PATCH,
        )
        assert patched.status_code == 200
        [configured] = audited()
        assert (configured["action"], configured["generation"], configured["method"]) == (
            "configured",
            2,
            "PATCH",
        )
        assert (await http.delete("/v1/tlsroutes/apps/db")).status_code == 200
        [deleted] = audited()
        assert (deleted["action"], deleted["name"]) == ("deleted", "db")
