"""What the reference documentation lists is what the code has: a new outcome, or a renamed
one, must reach docs/configuration.md (operators alert on these values)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.dataplane.access import Outcome

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_access_log_outcome_is_documented_and_no_other() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    table = text.split("| outcome | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.MULTILINE))
    assert documented == {outcome.value for outcome in Outcome}


def _documented_metrics() -> set[str]:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    table = text.split("| metric | type | labels | what |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`((?:tlsgate|process)_[a-z_]+)`", table))


def test_the_grafana_dashboard_graphs_documented_metrics() -> None:
    """docs/grafana-dashboard.json is a Grafana dashboard whose every query names a metric
    that docs/configuration.md lists (and so the metrics tests hold to existing)."""
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["panels"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = re.findall(r"\b((?:tlsgate|process)_[a-z_]+)", target["expr"])
            assert found, target["expr"]
            used.update(re.sub(r"_(bucket|count|sum)$", "", name) for name in found)
    assert used - _documented_metrics() == set()


def test_every_documented_metric_is_exposed() -> None:
    """The metrics table names only what a gateway exposes (the families of one with
    workers and one without, between them)."""
    from gateway.metrics import Metrics

    names = {family.name for family in Metrics().registry.collect()}
    names |= {f"{name}_total" for name in names}
    documented = _documented_metrics()
    # Registered by the server, not by Metrics itself: covered by tests/test_operations.py.
    by_server = {
        "tlsgate_endpoint_healthy",
        "tlsgate_worker_restarts_total",
        "tlsgate_certificate_expiry_timestamp_seconds",
        "tlsgate_build_info",
        "tlsgate_listener_connections_active",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    }
    assert documented - by_server <= names


def test_readme_and_docs_link_only_to_files_that_exist() -> None:
    """Relative links and pictures of the README and docs/ (the dashboard's screenshot, the
    Grafana JSON, each other) name files of the repository."""
    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    picture = root / "docs" / "dashboard.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size < 200_000  # small: made by scripts/screenshot
