"""gateway/metrics.py: the data plane's plain-integer counters and histograms read back as a
Prometheus client would (the text exposition, parsed by prometheus_client's own parser)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.dataplane.channel import Counters
from gateway.metrics import Metrics, ProcessTree
from gateway.supervisor import WorkerCounters

from .harness import gateway_yaml, route_yaml, service_yaml
from .helpers import snapshot_of


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_tallies_are_counters_with_their_labels_and_no_created_series() -> None:
    metrics = Metrics()
    finished = metrics.connections_finished
    finished.add(("ns/gw", "tls", "ns/r", "closed"))
    finished.add(("ns/gw", "tls", "ns/r", "closed"))
    finished.add(("ns/gw", "tls", "-", "rejected-no-route"))
    metrics.route_bytes.add(("ns/r", "up"), 517)
    samples = _samples(metrics)
    labels = (("gateway", "ns/gw"), ("listener", "tls"), ("outcome", "closed"), ("route", "ns/r"))
    assert samples["tlsgate_connections_finished_total", labels] == 2
    assert samples["tlsgate_route_bytes_total", (("direction", "up"), ("route", "ns/r"))] == 517
    assert finished.value("ns/gw", "tls", "-", "rejected-no-route") == 1
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_durations_fall_in_the_bucket_whose_bound_is_at_or_above_them() -> None:
    metrics = Metrics()
    hello = metrics.client_hello_duration
    for seconds in (0.0001, 0.0005, 0.0006, 10.0, 11.0):
        hello.observe(seconds)
    samples = _samples(metrics)

    def bucket(le: str) -> float:
        return samples["tlsgate_client_hello_duration_seconds_bucket", (("le", le),)]

    assert bucket("0.0005") == 2  # le is "less than or equal"
    assert bucket("0.001") == 3
    assert bucket("5.0") == 3
    assert bucket("10.0") == 4
    assert bucket("+Inf") == 5
    assert samples["tlsgate_client_hello_duration_seconds_count", ()] == 5
    assert samples["tlsgate_client_hello_duration_seconds_sum", ()] == pytest.approx(21.0012)
    assert hello.count == 5


def test_pruning_keeps_the_dict_that_accept_loops_count_into() -> None:
    tally = Metrics().connections_accepted
    counts = tally.counts
    tally.add(("127.0.0.1", "1"))
    tally.add(("127.0.0.1", "2"))
    tally.retain(lambda key: key[1] == "1")
    assert tally.counts is counts
    assert counts == {("127.0.0.1", "1"): 1}


def test_the_process_trees_cpu_never_goes_down_when_a_worker_exits() -> None:
    """A worker that exits takes its CPU seconds along: the tree's counter keeps them."""
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.5\n"
            "while time.process_time() < end: pass\ntime.sleep(0.5)",
        ]
    )
    try:
        tree = ProcessTree(lambda: [busy.pid] if busy.poll() is None else [])

        def cpu() -> float:
            [family] = [f for f in tree.collect() if f.name == "process_cpu_seconds"]
            return float(family.samples[0].value)

        deadline = time.monotonic() + 10
        before = cpu()
        while time.monotonic() < deadline and cpu() < before + 0.3:
            time.sleep(0.05)
        during = cpu()
        assert during >= before + 0.3
        busy.wait(10)
        assert cpu() >= during
    finally:
        busy.kill()
        busy.wait()


def test_a_dead_workers_counts_of_a_deleted_route_go_with_it() -> None:
    snapshot = snapshot_of(
        gateway_yaml(18443)
        + service_yaml("db", 15432)
        + route_yaml("db", ["db.example.com"], [("db", 1)])
    )
    counters = WorkerCounters(lambda: snapshot)
    name = "tlsgate_route_bytes_total"
    counters.update(
        1,
        Counters(
            (
                (name, (("direction", "up"), ("route", "apps/db")), 5.0),
                (name, (("direction", "up"), ("route", "apps/gone")), 7.0),
            )
        ),
    )
    counters.retire(1)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in counters.collect()
        for sample in family.samples
    }
    assert samples == {(name, (("direction", "up"), ("route", "apps/db"))): 5.0}
