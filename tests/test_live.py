"""Durability and live reconfiguration with real processes and real traffic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from .harness import (
    Pki,
    admin_gateway,
    backends,
    free_port,
    gateway_yaml,
    handshake_outcome,
    route_yaml,
    serve_process,
    service_yaml,
    tls_client,
)

YAML = {"Content-Type": "application/yaml"}


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    state_dir, port = tmp_path / "state", free_port()
    url = f"http://127.0.0.1:{port}"
    with serve_process(
        "--state-dir", str(state_dir), "--admin", f"127.0.0.1:{port}", admin_url=url
    ) as process:
        acknowledged: dict[str, dict[str, object]] = {}
        with httpx.Client(base_url=url, timeout=10) as http:
            for i in range(40):
                body = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{i}", "namespace": "apps"},
                    "data": {"n": str(i)},
                }
                response = http.put(f"/v1/configmaps/apps/cm-{i}", json=body)
                assert response.status_code in (200, 201), response.text
                acknowledged[f"cm-{i}"] = response.json()["metadata"]
            # An update too: generation and resourceVersion must survive as acknowledged.
            patched = http.patch(
                "/v1/configmaps/apps/cm-0",
                headers={"Content-Type": "application/merge-patch+json"},
                content=json.dumps({"data": {"n": "changed"}}),
            )
            acknowledged["cm-0"] = patched.json()["metadata"]
        os.kill(process.pid, signal.SIGKILL)  # right after the last acknowledged write
        process.wait()
    with serve_process(
        "--state-dir", str(state_dir), "--admin", f"127.0.0.1:{port}", admin_url=url
    ):
        with httpx.Client(base_url=url, timeout=10) as http:
            items = http.get("/v1/configmaps", params={"namespace": "apps"}).json()["items"]
        found = {item["metadata"]["name"]: item for item in items}
        assert set(found) == set(acknowledged)
        for name, meta in acknowledged.items():
            assert found[name]["metadata"] == meta
        assert found["cm-0"]["data"] == {"n": "changed"}


async def test_live_changes_never_touch_a_spliced_connection(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("one", ["db.example.com"]), ("two", ["db.example.com"])) as (one, two):
        base = gateway_yaml(port) + service_yaml("one", one.port) + service_yaml("two", two.port)
        async with (
            admin_gateway(None) as (server, url),
            httpx.AsyncClient(base_url=url, timeout=10) as http,
        ):
            applied = await http.post(
                "/v1/apply",
                headers=YAML,
                content=base + route_yaml("db", ["db.example.com"], [("one", 1)]),
            )
            assert applied.status_code == 200, applied.text
            context = pki.client_context()
            with trio.fail_after(120):
                async with tls_client(port, "db.example.com", context) as held:
                    assert (await held.test())["backend"] == "one"
                    for i in range(100):
                        target = "two" if i % 2 == 0 else "one"
                        response = await http.post(
                            "/v1/apply",
                            headers=YAML,
                            content=route_yaml("db", ["db.example.com"], [(target, 1)]),
                        )
                        assert response.status_code == 200, response.text
                        # A connection made right after the response follows the new table.
                        async with tls_client(port, "db.example.com", context) as fresh:
                            assert (await fresh.test())["backend"] == target
                        # The held connection is untouched and still exchanging data.
                        assert await held.call(f"ECHO change {i}") == f"change {i}"
                    # Delete its route: new connections are refused, the held one goes on.
                    deleted = await http.delete("/v1/tlsroutes/apps/db")
                    assert deleted.status_code == 200
                    assert await handshake_outcome(port, "db.example.com", context) in (
                        "eof",
                        "reset",
                    )
                    assert await held.call("PING") == "PONG"
                    # Delete its Gateway: the listener closes, the held one goes on.
                    assert (await http.delete("/v1/gateways/infra/gw")).status_code == 200
                    assert server.state.snapshot.binds == {}
                    with pytest.raises(OSError, match="connect"):
                        await trio.open_tcp_stream("127.0.0.1", port)
                    assert (await held.test())["backend"] == "one"
                    assert await held.call("ECHO still here") == "still here"


def test_non_loopback_admin_without_token_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--admin",
            "0.0.0.0:0",
            "--state-dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "TLSGATE_ADMIN_TOKEN"},
    )
    assert result.returncode == 2
    assert "without a token" in result.stderr


def test_readme_walkthrough_works_as_written(tmp_path: Path) -> None:
    """Run the README's curl walk-through, command by command, against `tlsgate serve`. The
    only substitutions are ports: free ones instead of 9901 (admin) and 18444 (the listener),
    so the test passes beside a running demo or walk-through."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme.split("```sh walkthrough\n", 1)[1].split("```", 1)[0]
    port, listener = free_port(), free_port()
    manifests = tmp_path / "walkthrough.yaml"
    text = (root / "examples" / "walkthrough.yaml").read_text()
    assert "port: 18444" in text
    manifests.write_text(text.replace("port: 18444", f"port: {listener}"))
    with serve_process(
        "--state-dir",
        str(tmp_path / "state"),
        "--admin",
        f"127.0.0.1:{port}",
        admin_url=f"http://127.0.0.1:{port}",
    ):
        script = (
            block.replace("127.0.0.1:9901", f"127.0.0.1:{port}")
            .replace("@examples/walkthrough.yaml", f"@{manifests}")
            .replace("port=18444", f"port={listener}")
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        applied, route, explained, table, patched, deleted = outputs
        assert [i["action"] for i in applied["items"]] == ["created"] * 5
        assert [c["reason"] for c in route["status"]["parents"][0]["conditions"]] == [
            "Accepted",
            "ResolvedRefs",
        ]
        assert (explained["result"], explained["route"]) == ("routed", "data/postgres")
        assert explained["backends"][0]["endpoints"] == ["127.0.0.1:15432"]
        assert table["binds"][0]["port"] == listener
        assert patched["metadata"]["labels"] == {"tier": "db"}
        assert deleted["metadata"]["name"] == "postgres"
