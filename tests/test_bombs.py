"""YAML and JSON built to hurt: alias bombs, recursive aliases, deep nesting, duplicate keys
(issue 9, item 2). Unit tables for the parser, then a real server with a memory bound."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.api import manifests
from gateway.api.admission import show_value
from gateway.api.convert import Invalid, structure_document
from gateway.api.manifests import MAX_DEPTH, ManifestError, load_json, parse_documents

from .harness import free_port, serve_process


def billion_laughs(levels: int = 9) -> str:
    """~400 bytes that expand to 9^levels strings; the ConfigMap's `data` is the bomb, so a
    message that renders the wrong value in full expands it."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{','.join([previous] * 9)}]")
    body = "\n".join("  " + line for line in lines)
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\n"
        f"anchors:\n{body}\ndata: *a{levels - 1}\n"
    )


def test_alias_bombs_and_recursive_aliases_are_refused() -> None:
    with pytest.raises(ManifestError, match="excessive aliasing"):
        parse_documents(billion_laughs())
    with pytest.raises(ManifestError, match="recursive alias"):
        parse_documents("a: &a [1, *a]\n")
    with pytest.raises(ManifestError, match="recursive alias"):
        parse_documents("a: &a {b: *a}\n")


def test_modest_aliases_and_merge_keys_still_work() -> None:
    text = "base: &base {x: 1, y: 2}\nuse: {<<: *base, y: 3}\nagain: *base\n"
    (document,) = parse_documents(text)
    assert document == {
        "base": {"x": 1, "y": 2},
        "use": {"x": 1, "y": 3},
        "again": {"x": 1, "y": 2},
    }
    # A few thousand nodes through aliases (a shared block reused by many routes) is fine.
    shared = "shared: &s [" + ",".join(["x"] * 50) + "]\n"
    uses = "".join(f"u{i}: *s\n" for i in range(1000))
    assert len(parse_documents(shared + uses)[0]) == 1001


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: 2\na: 3\n",
        "spec:\n  hostnames: [a]\n  hostnames: [b]\n",
        "x: {a: 1, a: 2}\n",
        '{"a": 1, "a": 2}',
        '[{"kind": "x", "kind": "y"}]',
    ],
)
def test_duplicate_keys_are_an_error(text: str) -> None:
    with pytest.raises(ManifestError, match="duplicate key"):
        parse_documents(text)


def test_nesting_is_bounded_for_json_and_yaml() -> None:
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_documents(at_limit) == []  # parses; an empty nest of arrays flattens away
    load_json(at_limit)
    for text in (
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
    ):
        with pytest.raises(ManifestError, match="nests deeper"):
            load_json(text)
    for text in (
        "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        "a: " + "[" * 100_000 + "]" * 100_000,
        "".join(" " * i + "a:\n" for i in range(5_000)),
    ):
        with pytest.raises(ManifestError):
            parse_documents(text)


def test_libyaml_is_used_when_installed() -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML was built without LibYAML on this machine")
    assert issubclass(manifests._Loader, yaml.CSafeLoader)


def test_error_messages_never_render_a_huge_value() -> None:
    huge = [["x" * 1000] * 1000] * 1000  # 10^9 characters if rendered in full
    shown = show_value(huge, 80)
    assert len(shown) <= 80
    assert shown.endswith("...")
    with pytest.raises(Invalid) as caught:
        structure_document(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": huge}
        )
    assert all(len(c.message) < 300 for c in caught.value.causes)
    with pytest.raises(Invalid) as caught:
        structure_document({"apiVersion": "v1", "kind": huge})
    assert all(len(c.message) < 500 for c in caught.value.causes)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_real_server_refuses_bombs_within_a_memory_bound(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve_process("--state-dir", "", "--admin", f"127.0.0.1:{port}", admin_url=url) as process:
        with httpx.Client(base_url=url, timeout=15) as http:
            bodies = [
                ("application/yaml", billion_laughs().encode()),
                ("application/yaml", b"a: &a [1, *a]\n"),
                ("application/yaml", b"a: " + b"[" * 100_000 + b"]" * 100_000),
                ("application/json", b"[" * 100_000 + b"]" * 100_000),
                ("application/json", b'{"kind": "ConfigMap", "kind": "Secret"}'),
            ]
            for content_type, body in bodies:
                for path in ("/v1/apply", "/v1/configmaps"):
                    answer = http.post(path, content=body, headers={"Content-Type": content_type})
                    assert answer.status_code == 400, (path, answer.text[:300])
                    assert answer.json()["reason"] == "BadRequest"
            assert http.get("/healthz").status_code == 200
        assert _peak_rss_kib(process.pid) < 300 * 1024


def test_json_documents_round_trip_unchanged() -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]}
    assert parse_documents(json.dumps(doc)) == [{"kind": "A"}, {"kind": "B"}]
