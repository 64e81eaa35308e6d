"""The command line's kubectl-shaped verbs against a live gateway, each in a real `tlsgate`
process (API.md "Command line"; issue 16): `--version`, `apply -f DIR/` (and `-R`),
`--dry-run=server`, `get -l` and `-o wide|name`, `describe`, `diff`, `delete -f` and `-l`,
`translate --strict`, and help that names every option's environment variable."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import trio

from gateway import tlsgate_version

from .harness import admin_gateway, free_port, gateway_yaml, route_yaml, run_tlsgate, service_yaml


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: run_tlsgate(*args))


def _labelled(name: str, tier: str) -> str:
    return route_yaml(name, [f"{name}.example.com"], [("db", 1)]).replace(
        f"metadata: {{name: {name}, namespace: apps}}",
        f"metadata: {{name: {name}, namespace: apps, labels: {{tier: {tier}}}}}",
    )


def test_version() -> None:
    done = run_tlsgate("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"tlsgate {tlsgate_version()}"


async def test_the_verbs_against_a_live_server(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    (manifests / "routes").mkdir(parents=True)
    (manifests / "gateway.yaml").write_text(gateway_yaml(free_port()) + service_yaml("db", 9))
    (manifests / "routes" / "front.yaml").write_text(_labelled("front", "web"))
    (manifests / "routes" / "back.yml").write_text(_labelled("back", "data"))
    (manifests / "README.txt").write_text("not a manifest: never read")
    async with admin_gateway(tmp_path / "state") as (_, url):
        server = ["--server", url]
        # A directory: its manifest files, not those below it (without -R).
        flat = await _cli("apply", "-f", f"{manifests}/", *server)
        assert flat.returncode == 0, flat.stderr
        assert "gateway/infra/gw created" in flat.stdout
        assert "tlsroute" not in flat.stdout
        # --dry-run=server: says what would happen, stores nothing.
        dry = await _cli("apply", "-R", "-f", str(manifests), "--dry-run=server", *server)
        assert dry.returncode == 0, dry.stderr
        assert "tlsroute/apps/front created (server dry run)" in dry.stdout
        assert "No tlsroutes found." in (await _cli("get", "tlsroutes", *server)).stdout
        deep = await _cli("apply", "-R", "-f", str(manifests), *server)
        assert "tlsroute/apps/front created" in deep.stdout
        assert "tlsroute/apps/back created" in deep.stdout
        assert "gateway/infra/gw unchanged" in deep.stdout

        # get -l, -o name, -o wide.
        named = await _cli("get", "tlsroutes", "-l", "tier=web", "-o", "name", *server)
        assert named.stdout.split() == ["tlsroute/apps/front"]
        wide = await _cli("get", "tlsroutes", "-o", "wide", *server)
        header = wide.stdout.splitlines()[0].split()
        assert header[:3] == ["NAMESPACE", "NAME", "HOSTNAMES"]
        assert {"PARENTS", "BACKENDS"} <= set(header)
        assert "infra/gw" in wide.stdout
        assert "apps/db:443" in wide.stdout
        gateways = await _cli("get", "gateways", "-o", "wide", *server)
        assert {"LISTENERS", "ATTACHED"} <= set(gateways.stdout.splitlines()[0].split())
        refused = await _cli("get", "tlsroutes", "-l", "tier in (a b)", *server)
        assert refused.returncode == 1
        assert "selector" in refused.stderr

        # describe: what kubectl describe shows, in words.
        described = await _cli("describe", "tlsroute", "apps/front", *server)
        assert described.returncode == 0, described.stderr
        text = described.stdout
        for expected in ("Name:", "front", "Namespace:", "apps", "tier=web", "Spec:", "Status:"):
            assert expected in text, expected
        assert re.search(r"Accepted\s+True\s+Accepted", text), text

        # diff: nothing, then the change a file would make; 1 when there is one.
        same = await _cli("diff", "-R", "-f", str(manifests), *server)
        assert (same.returncode, same.stdout) == (0, ""), same.stderr
        (manifests / "routes" / "front.yaml").write_text(
            _labelled("front", "web").replace("front.example.com", "shop.example.com")
        )
        changed = await _cli("diff", "-f", str(manifests / "routes" / "front.yaml"), *server)
        assert changed.returncode == 1, changed.stderr
        assert "-  - front.example.com" in changed.stdout
        assert "+  - shop.example.com" in changed.stdout
        assert "status" not in changed.stdout  # what a write would change, not its status
        live = await _cli("get", "tlsroute", "apps/front", "-o", "yaml", *server)
        assert "front.example.com" in live.stdout  # diff wrote nothing

        # delete -l and delete -f, with a dry run first.
        dry_delete = await _cli(
            "delete", "tlsroutes", "-l", "tier=data", "-A", "--dry-run=server", *server
        )
        assert "tlsroute/apps/back deleted (server dry run)" in dry_delete.stdout
        everywhere = await _cli("delete", "tlsroutes", "-l", "tier=data", *server)
        assert everywhere.returncode == 1  # -l without -n or -A: refused, nothing deleted
        assert "-A" in everywhere.stderr
        by_label = await _cli("delete", "tlsroutes", "-l", "tier=data", "-n", "apps", *server)
        assert by_label.stdout.split("\n")[0] == "tlsroute/apps/back deleted"
        by_file = await _cli("delete", "-f", str(manifests / "routes"), *server)
        assert by_file.returncode == 1  # back is gone already: said, and the rest deleted
        assert "tlsroute/apps/front deleted" in by_file.stdout
        assert "not found" in by_file.stderr
        assert "No tlsroutes found." in (await _cli("get", "tlsroutes", *server)).stdout


async def test_translate_strict_fails_a_configuration_that_would_not_serve(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        gateway_yaml(8443)
        + service_yaml("db", 9)
        + route_yaml("db", ["db.example.com"], [("db", 1)])
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(gateway_yaml(8443) + route_yaml("db", ["db.example.com"], [("missing", 1)]))
    assert (await _cli("translate", "-f", str(bad))).returncode == 0  # a report, not a check
    assert (await _cli("translate", "--strict", "-f", str(good))).returncode == 0
    strict = await _cli("translate", "--strict", "-f", str(bad))
    assert strict.returncode == 1
    assert "TLSRoute apps/db" in strict.stderr
    assert "ResolvedRefs=False" in strict.stderr
    assert "BackendNotFound" in strict.stderr


def _undocumented(help_text: str) -> list[str]:
    """The options of a --help text shown without a help of their own: argparse writes the
    help after the option on its line, or on the next line, indented deeper."""
    lines = help_text.splitlines()
    missing = []
    for index, line in enumerate(lines):
        if not re.match(r"^  -", line):
            continue
        if len(re.split(r"\s{2,}", line.strip(), maxsplit=1)) == 2:
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if following.startswith(" " * 6) and not following.strip().startswith("-"):
            continue
        missing.append(line.strip())
    return missing


def test_every_option_says_what_it_does_and_serve_names_its_environment() -> None:
    for command in ("apply", "get", "delete", "describe", "diff", "explain", "translate", "serve"):
        text = run_tlsgate(command, "--help").stdout
        assert "options:" in text, command
        assert _undocumented(text) == [], command
    serve = run_tlsgate("serve", "--help").stdout
    for variable in ("TLSGATE_ADMIN", "TLSGATE_IDLE_TIMEOUT", "TLSGATE_WORKERS", "TLSGATE_STORE"):
        assert variable in serve, variable
