"""`tlsgate translate` as a user runs it: a real process, real files (API.md "Command line")."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .harness import run_tlsgate

DATA = Path(__file__).parent / "data" / "translate"


def test_translate_prints_documents_with_status_and_the_table() -> None:
    result = run_tlsgate("translate", "-f", str(DATA / "passthrough-simple.in.yaml"), "-o", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["apiVersion"], out["kind"]) == ("v1", "List")
    route = next(i for i in out["items"] if i["kind"] == "TLSRoute")
    assert {c["type"]: c["status"] for c in route["status"]["parents"][0]["conditions"]} == {
        "Accepted": "True",
        "ResolvedRefs": "True",
    }
    bind = out["routingTable"]["binds"][0]
    assert (bind["address"], bind["port"]) == ("0.0.0.0", 443)
    assert bind["listeners"][0]["routes"][0]["route"] == "apps/db"


def test_creation_timestamps_follow_file_order_and_yaml_is_the_default() -> None:
    result = run_tlsgate(
        "translate", "-f", str(DATA / "passthrough-simple.in.yaml"), "--now", "2030-05-01T00:00:00Z"
    )
    assert result.returncode == 0, result.stderr
    items = yaml.safe_load(result.stdout)["items"]
    stamps = [i["metadata"]["creationTimestamp"] for i in items]
    assert stamps == sorted(stamps)
    assert stamps[0] == "2030-05-01T00:00:00Z"
    assert len(set(stamps)) == len(stamps)


def test_inadmissible_documents_are_reported_and_the_rest_translated(tmp_path: Path) -> None:
    bad = tmp_path / "mixed.yaml"
    bad.write_text(
        (DATA / "passthrough-simple.in.yaml").read_text()
        + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: broken, namespace: apps}
spec:
  hostnames: ["10.0.0.1"]
  rules: [{backendRefs: [{name: db}]}]
"""
    )
    result = run_tlsgate("translate", "-f", str(bad), "-o", "json")
    assert result.returncode == 1
    assert "TLSRoute 'broken' is invalid" in result.stderr
    assert 'spec.hostnames[0]: Invalid value: "10.0.0.1"' in result.stderr
    assert "spec.rules[0].backendRefs[0].port: Required value" in result.stderr
    out = json.loads(result.stdout)
    assert "broken" not in [i["metadata"]["name"] for i in out["items"]]
    assert any(i["kind"] == "Gateway" for i in out["items"])


def test_unreadable_and_garbage_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\x00\xff not: [yaml")
    result = run_tlsgate("translate", "-f", str(garbage), "-f", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "garbage.yaml" in result.stderr
    assert "missing.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert yaml.safe_load(result.stdout)["items"] == []


def test_reads_standard_input() -> None:
    result = run_tlsgate(
        "translate",
        "-f",
        "-",
        "-o",
        "json",
        stdin=(DATA / "passthrough-simple.in.yaml").read_text(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["routingTable"]["binds"]


def test_private_keys_are_never_printed() -> None:
    key_line = (
        (Path(__file__).parent / "data" / "certs" / "example.key").read_text().splitlines()[1]
    )
    result = run_tlsgate("translate", "-f", str(DATA / "terminate-simple.in.yaml"), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert key_line not in result.stdout
    secret = next(i for i in json.loads(result.stdout)["items"] if i["kind"] == "Secret")
    assert set(secret["data"]) == {"tls.crt"}
