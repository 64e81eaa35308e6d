"""Several `tlsgate serve` replicas on one etcd cluster (issue 13; API.md "Store and
replicas"): real processes, a real three-member etcd cluster on loopback (Debian's
etcd-server), real TLS traffic. Each replica binds its listeners on an address of its own
(127.0.0.1, 127.0.0.2, ...), so a connection shows which replica routed it.

The cluster is started and stopped by the tests (by PID); tests that do not stop members
share one cluster, each under a key prefix of its own."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.store.etcd import prefix_end

from .harness import (
    Pki,
    backends,
    free_port,
    gateway_yaml,
    poll_until,
    route_yaml,
    serve_process,
    service_yaml,
)

pytestmark = pytest.mark.slow

#: A replica's lease in these tests: a killed replica is gone from /v1/replicas after it.
LEASE = 2


class Cluster:
    """`members` etcd processes forming one cluster on loopback, each with its data
    directory under `directory`; `stop`/`start` keep the data (a restart, not a new cluster)."""

    def __init__(self, directory: Path, members: int = 3, max_txn_ops: int = 128) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        peer_ports = [free_port() for _ in self.names]
        self.peers = [f"http://127.0.0.1:{port}" for port in peer_ports]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.client_ports]
        self.initial = ",".join(f"{n}={p}" for n, p in zip(self.names, self.peers, strict=True))
        self.token = uuid.uuid4().hex
        self.max_txn_ops = max_txn_ops
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * members
        self.start()

    def store_url(self, prefix: str) -> str:
        members = ",".join(f"127.0.0.1:{port}" for port in self.client_ports)
        return f"etcd://{members}{prefix}"

    def start_member(self, index: int) -> None:
        name, url, peer = self.names[index], self.urls[index], self.peers[index]
        log = (self.directory / f"{name}.log").open("ab")
        self.processes[index] = subprocess.Popen(
            [
                "etcd",
                f"--name={name}",
                f"--data-dir={self.directory / name}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={self.initial}",
                f"--initial-cluster-token={self.token}",
                f"--max-txn-ops={self.max_txn_ops}",
                "--heartbeat-interval=50",
                "--election-timeout=500",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start(self) -> None:
        for index, process in enumerate(self.processes):
            if process is None or process.poll() is not None:
                self.start_member(index)
        poll_until(self.healthy, 30, "the etcd cluster healthy")

    def healthy(self) -> bool:
        for index, url in enumerate(self.urls):
            process = self.processes[index]
            if process is None or process.poll() is not None:
                continue
            try:
                if httpx.get(url + "/health", timeout=1).json().get("health") != "true":
                    return False
            except (httpx.HTTPError, ValueError):
                return False
        return True

    def signal(self, index: int, signum: int) -> None:
        process = self.processes[index]
        assert process is not None
        os.kill(process.pid, signum)  # only a member this test started

    def kill(self, index: int) -> None:
        process = self.processes[index]
        assert process is not None
        process.kill()  # SIGKILL to its PID: only a member this test started
        process.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in self.processes:
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for index, url in enumerate(self.urls):
            process = self.processes[index]
            if process is None or process.poll() is not None:
                continue
            answer: dict[str, Any] = httpx.post(url + path, json=body, timeout=5).json()
            return answer
        raise AssertionError("no etcd member runs")

    def keys(self, prefix: str) -> dict[str, bytes]:
        """What etcd holds under `prefix`, read directly (not through tlsgate)."""
        start = prefix.encode()
        answer = self.call(
            "/v3/kv/range",
            {
                "key": base64.b64encode(start).decode(),
                "range_end": base64.b64encode(prefix_end(start)).decode(),
            },
        )
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in answer.get("kvs", [])
        }

    def compact(self) -> int:
        answer = self.call("/v3/kv/range", {"key": "AA==", "count_only": True})
        revision = int(answer["header"]["revision"])
        self.call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision


@contextlib.contextmanager
def _cluster(directory: Path, **options: Any) -> Iterator[Cluster]:
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: scripts/setup-env installs Debian's etcd-server")
    cluster = Cluster(directory, **options)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that leave its members running."""
    with _cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own: it stops members."""
    with _cluster(tmp_path / "etcd") as cluster:
        yield cluster


@pytest.fixture
def prefix() -> str:
    return f"/t-{uuid.uuid4().hex[:8]}"


class Replica:
    """`tlsgate serve --store etcd://...` in a real process, its listeners on `address`."""

    def __init__(self, cluster: Cluster, prefix: str, name: str, address: str, *extra: str) -> None:
        self.name, self.address = name, address
        self.admin_port = free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.serving = serve_process(
            "--store",
            cluster.store_url(prefix),
            "--admin",
            f"127.0.0.1:{self.admin_port}",
            "--bind-address",
            address,
            "--workers",
            "0",
            "--state-dir",
            "",
            "--replica-name",
            name,
            "--replica-lease",
            str(LEASE),
            *extra,
            admin_url=self.admin,
            path="/readyz",
        )
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Replica:
        self.process = self.serving.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused one must be able to stop
        self.serving.__exit__(*exc_info)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)  # only the process this test started
        if signum == signal.SIGKILL:
            self.process.wait()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.admin + path, timeout=10)

    def apply(self, manifests: str, query: str = "") -> httpx.Response:
        return httpx.post(
            f"{self.admin}/v1/apply{query}",
            content=manifests,
            headers={"Content-Type": "application/yaml"},
            timeout=20,
        )

    def send(self, method: str, path: str, body: Any = None, **options: Any) -> httpx.Response:
        return httpx.request(method, self.admin + path, json=body, timeout=20, **options)


@contextlib.contextmanager
def replicas(cluster: Cluster, prefix: str, count: int = 2) -> Iterator[list[Replica]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(Replica(cluster, prefix, f"r{i}", f"127.0.0.{i + 1}"))
            for i in range(count)
        ]


def _gateway(port: int) -> str:
    # No spec.addresses: each replica binds its own --bind-address.
    return gateway_yaml(port).replace("  addresses: [{value: 127.0.0.1}]\n", "")


def _which_backend(address: str, port: int, sni: str, pki: Pki) -> str | None:
    """The backend a TLS connection to `address:port` with `sni` reaches, or None if the
    gateway refuses it."""
    context = pki.client_context()
    try:
        with (
            socket.create_connection((address, port), timeout=5) as tcp,
            context.wrap_socket(tcp, server_hostname=sni) as tls,
        ):
            greeting = tls.makefile("rb").readline().decode()
            return greeting.split()[1] if greeting.startswith("HELLO ") else None
    except (OSError, ssl.SSLError):
        return None


def _service(name: str, port: int = 443) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"ports": [{"port": port}]},
    }


def _bundle(*documents: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(documents)})


def _applied(replica: Replica) -> int:
    return int(replica.get("/v1/replicas").json()["metadata"]["resourceVersion"])


def test_a_write_through_one_replica_routes_traffic_through_the_other(
    shared: Cluster, prefix: str, tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    port = free_port()
    with (
        backends(pki, ("one", ["db.example.com"]), ("two", ["db.example.com"])) as (one, two),
        replicas(shared, prefix) as (a, b),
    ):
        manifests = (
            _gateway(port)
            + service_yaml("one", one.port)
            + service_yaml("two", two.port)
            + route_yaml("db", ["db.example.com"], [("one", 1)])
        )
        assert a.apply(manifests, "?wait=replicas").status_code == 200
        # In force on B as soon as A answered: B had applied it.
        assert _which_backend(b.address, port, "db.example.com", pki) == "one"
        assert _which_backend(a.address, port, "db.example.com", pki) == "one"
        # And the other way round, without waiting: B's write reaches A within moments.
        started = time.monotonic()
        assert b.apply(route_yaml("db", ["db.example.com"], [("two", 1)])).status_code == 200
        poll_until(
            lambda: _which_backend(a.address, port, "db.example.com", pki) == "two",
            10,
            "B's route change in force on A",
        )
        assert time.monotonic() - started < 10
        # Status is computed by each replica from the same documents.
        for replica in (a, b):
            route = replica.get("/v1/tlsroutes/apps/db").json()
            (parent,) = route["status"]["parents"]
            assert {c["type"]: c["status"] for c in parent["conditions"]}["Accepted"] == "True"
        # The registrations: both live, ready, at the same revision.
        listed = a.get("/v1/replicas").json()["items"]
        assert [r["name"] for r in listed] == ["r0", "r1"]
        poll_until(
            lambda: len({r["revision"] for r in a.get("/v1/replicas").json()["items"]}) == 1,
            5,
            "both replicas at one revision",
        )
        assert all(r["ready"] for r in a.get("/v1/replicas").json()["items"])


def test_conflicts_and_existence_are_etcd_s_not_a_replica_s_view(
    shared: Cluster, prefix: str
) -> None:
    with replicas(shared, prefix) as (a, b):
        created = a.send("POST", "/v1/services", _service("db"))
        assert created.status_code == 201, created.text
        version = created.json()["metadata"]["resourceVersion"]
        # B's view may not have it yet; etcd does, so a create through B is refused.
        again = b.send("POST", "/v1/services", _service("db"))
        assert again.status_code == 409
        assert again.json()["reason"] == "AlreadyExists"
        # A PUT through A at the version read; then the same stale version through B: 409.
        body = _service("db", 5432)
        body["metadata"]["resourceVersion"] = version
        first = a.send("PUT", "/v1/services/apps/db", body)
        assert first.status_code == 200, first.text
        newer = first.json()["metadata"]["resourceVersion"]
        assert int(newer) > int(version)
        body["spec"]["ports"][0]["port"] = 5433
        stale = b.send("PUT", "/v1/services/apps/db", body)
        assert stale.status_code == 409, stale.text
        assert stale.json()["reason"] == "Conflict"
        # resourceVersion is the key's mod_revision in etcd.
        held = shared.call(
            "/v3/kv/range",
            {"key": base64.b64encode(f"{prefix}/documents/Service/apps/db".encode()).decode()},
        )
        assert held["kvs"][0]["mod_revision"] == newer
        # A DELETE through B right after the PUT through A sees the PUT.
        gone = b.send(
            "DELETE",
            "/v1/services/apps/db",
            {"kind": "DeleteOptions", "preconditions": {"resourceVersion": newer}},
        )
        assert gone.status_code == 200, gone.text
        poll_until(lambda: a.get("/v1/services/apps/db").status_code == 404, 5, "gone on A")
        # Applying what A still believes unchanged is compared too: never a stale "unchanged".
        assert a.apply(json.dumps(_service("cache")), "?wait=replicas").status_code == 200
        patched = b.send(
            "PATCH",
            "/v1/services/apps/cache",
            {"spec": {"ports": [{"port": 6380}]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        answer = a.apply(json.dumps(_service("cache")))
        assert answer.status_code == 200
        assert answer.json()["items"][0]["action"] == "configured"
        assert a.get("/v1/services/apps/cache").json()["spec"]["ports"][0]["port"] == 443


def test_a_bundle_is_one_transaction_and_a_refused_one_changes_no_key(
    tmp_path: Path, prefix: str
) -> None:
    with (
        _cluster(tmp_path / "etcd", members=1, max_txn_ops=4) as cluster,
        replicas(cluster, prefix, count=1) as (a,),
    ):
        # Three objects and the write marker: etcd's --max-txn-ops exactly.
        bundle = _bundle(*(_service(f"s{i}") for i in range(3)))
        first = a.apply(bundle)
        assert first.status_code == 200, first.text
        before = cluster.keys(prefix + "/documents/")
        revisions = {
            a.get(f"/v1/services/apps/s{i}").json()["metadata"]["resourceVersion"] for i in range(3)
        }
        assert len(revisions) == 1  # one transaction: one revision for all three
        # Four objects: over it. Refused whole, and said why.
        bigger = _bundle(*(_service(f"s{i}", 80) for i in range(4)))
        refused = a.apply(bigger)
        assert refused.status_code == 413, refused.text
        assert "--max-txn-ops" in refused.json()["message"]
        # An invalid object: refused before etcd is asked.
        invalid = _bundle(_service("s0", 80), _service("BAD"))
        assert a.apply(invalid).status_code == 422
        assert cluster.keys(prefix + "/documents/") == before
        assert a.get("/v1/services/apps/s0").json()["spec"]["ports"][0]["port"] == 443


def test_wait_for_replicas_answers_once_all_applied_else_504_naming_the_laggard(
    shared: Cluster, prefix: str
) -> None:
    with replicas(shared, prefix) as (a, b):
        answer = a.apply(json.dumps(_service("db")), "?wait=replicas")
        assert answer.status_code == 200
        written = int(answer.json()["metadata"]["resourceVersion"])
        assert _applied(b) >= written
        b.signal(signal.SIGSTOP)
        try:
            lagging = a.apply(json.dumps(_service("db", 80)), "?wait=replicas&timeoutSeconds=1")
            assert lagging.status_code == 504, lagging.text
            status = lagging.json()
            assert status["reason"] == "Timeout"
            assert [c["field"] for c in status["details"]["causes"]] == ["r1"]
            # A frozen replica's lease still runs: it is live and listed, behind.
            listed = {r["name"]: r for r in a.get("/v1/replicas").json()["items"]}
            assert set(listed) == {"r0", "r1"}
        finally:
            b.signal(signal.SIGCONT)
        # The write itself is committed, and B catches up once it runs again.
        poll_until(lambda: _applied(b) >= _applied(a), 10, "B caught up after SIGCONT")
        assert b.get("/v1/services/apps/db").json()["spec"]["ports"][0]["port"] == 80
        bad = a.apply(json.dumps(_service("db")), "?wait=all")
        assert bad.status_code == 400
        assert a.get("/v1/services/apps/db").json()["spec"]["ports"][0]["port"] == 80


def test_a_replica_killed_leaves_the_list_after_its_lease(shared: Cluster, prefix: str) -> None:
    with replicas(shared, prefix, count=3) as (a, b, _c):
        poll_until(lambda: len(a.get("/v1/replicas").json()["items"]) == 3, 5, "three listed")
        b.signal(signal.SIGKILL)
        started = time.monotonic()
        poll_until(
            lambda: [r["name"] for r in a.get("/v1/replicas").json()["items"]] == ["r0", "r2"],
            LEASE + 5,
            "the killed replica gone",
        )
        assert time.monotonic() - started >= LEASE - 1.5  # by its lease, not at once
        # The dead one is not waited for.
        assert (
            a.apply(json.dumps(_service("db")), "?wait=replicas&timeoutSeconds=5").status_code
            == 200
        )
    # A replica that stops cleanly revokes its lease: it leaves at once.
    with replicas(shared, prefix, count=1):
        pass
    assert shared.keys(f"{prefix}/replicas/") == {}


def test_one_etcd_member_killed_writes_continue(own: Cluster, prefix: str) -> None:
    with replicas(own, prefix) as (a, b):
        assert a.apply(json.dumps(_service("before")), "?wait=replicas").status_code == 200
        own.kill(0)  # the member every replica tried first, watches included
        for replica, name in ((a, "after-a"), (b, "after-b")):
            answer = replica.apply(json.dumps(_service(name)), "?wait=replicas")
            assert answer.status_code == 200, answer.text
        for replica in (a, b):
            names = {s["metadata"]["name"] for s in replica.get("/v1/services").json()["items"]}
            assert names == {"before", "after-a", "after-b"}
            assert replica.get("/readyz").json()["store"]["up"] is True


def test_a_frozen_member_holding_a_watch_does_not_leave_a_replica_stale(
    own: Cluster, prefix: str
) -> None:
    """A member that stops answering but keeps its connections open (SIGSTOP) sends no
    events and closes nothing: the watch through it is opened again on another member
    (the watchdog), and requests move past it after one timeout."""
    with replicas(own, prefix) as (a, b):
        assert a.apply(json.dumps(_service("before")), "?wait=replicas").status_code == 200
        own.signal(0, signal.SIGSTOP)  # the member every replica uses first, watches included
        try:
            answer = b.apply(json.dumps(_service("during")))
            assert answer.status_code == 200, answer.text
            poll_until(
                lambda: a.get("/v1/services/apps/during").status_code == 200,
                20,
                "A sees B's write past the frozen member",
            )
            started = time.monotonic()
            assert b.apply(json.dumps(_service("next")), "?wait=replicas").status_code == 200
            assert time.monotonic() - started < 3  # the frozen member is no longer tried first
        finally:
            own.signal(0, signal.SIGCONT)


def test_the_whole_cluster_stopped_traffic_goes_on_writes_503_and_it_recovers(
    own: Cluster, prefix: str, tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    port = free_port()
    hosts = ["db.example.com", "pg.example.com"]
    with backends(pki, ("one", hosts)) as (one,), replicas(own, prefix) as (a, b):
        manifests = (
            _gateway(port)
            + service_yaml("one", one.port)
            + route_yaml("db", ["db.example.com"], [("one", 1)])
        )
        assert a.apply(manifests, "?wait=replicas").status_code == 200
        # B is paused across the outage and what follows it.
        b.signal(signal.SIGSTOP)
        try:
            own.stop()
            # Traffic goes on from the table in force.
            assert _which_backend(a.address, port, "db.example.com", pki) == "one"
            started = time.monotonic()
            refused = a.apply(json.dumps(_service("during")))
            assert refused.status_code == 503, refused.text
            assert refused.json()["reason"] == "ServiceUnavailable"
            assert time.monotonic() - started < 2  # at once, not after a timeout
            poll_until(lambda: a.get("/readyz").json()["store"]["up"] is False, 5, "store down")
            ready = a.get("/readyz")
            assert ready.status_code == 200
            assert "unreachable" in ready.json()["store"]["problem"]
            assert "tlsgate_store_up 0.0" in a.get("/metrics").text
            assert a.get("/v1/services").status_code == 200  # reads from the last table
            own.start()
            poll_until(lambda: a.get("/readyz").json()["store"]["up"] is True, 15, "A recovered")
            assert "tlsgate_store_up 1.0" in a.get("/metrics").text
            # While B is still paused: writes, a delete and a re-create, then a compaction of
            # all that history. B's watch broke with the outage; the revisions it must resume
            # from are gone, so it reads everything again.
            assert a.apply(json.dumps(_service("later"))).status_code == 200
            assert a.send("DELETE", "/v1/tlsroutes/apps/db").status_code == 200
            moved = route_yaml("db", ["db.example.com"], [("one", 1)]).replace(
                "db.example.com", "pg.example.com"
            )
            assert a.apply(moved).status_code == 200
            own.compact()
        finally:
            b.signal(signal.SIGCONT)
        poll_until(lambda: b.get("/readyz").json()["store"]["up"] is True, 15, "B recovered")
        assert a.apply(json.dumps(_service("after")), "?wait=replicas").status_code == 200
        for replica in (a, b):
            names = {s["metadata"]["name"] for s in replica.get("/v1/services").json()["items"]}
            assert names == {"one", "later", "after"}, replica.name
            route = replica.get("/v1/tlsroutes/apps/db").json()
            assert route["spec"]["hostnames"] == ["pg.example.com"], replica.name
        assert _which_backend(b.address, port, "pg.example.com", pki) == "one"
        assert _which_backend(b.address, port, "db.example.com", pki) is None


def test_every_acknowledged_write_survives_kill_9_of_every_replica(
    shared: Cluster, prefix: str
) -> None:
    acknowledged = []
    with replicas(shared, prefix) as pair:
        for i in range(20):
            replica = pair[i % 2]
            if replica.apply(json.dumps(_service(f"s{i}"))).status_code == 200:
                acknowledged.append(f"s{i}")
        for replica in pair:
            replica.signal(signal.SIGKILL)
    assert len(acknowledged) == 20
    with replicas(shared, prefix) as pair:
        for replica in pair:
            names = {s["metadata"]["name"] for s in replica.get("/v1/services").json()["items"]}
            assert names == set(acknowledged)


def test_store_urls_are_checked_at_start(tmp_path: Path) -> None:
    from .harness import run_tlsgate

    for url, message in (
        ("etcd://", "no etcd member"),
        ("etcd://127.0.0.1", "is not HOST:PORT"),
        ("redis://x:1", "not sqlite:DIR"),
    ):
        done = run_tlsgate("serve", "--store", url, "--admin", "")
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
    # An etcd that cannot be reached at start: a one-line error, no traceback.
    done = run_tlsgate("serve", "--store", f"etcd://127.0.0.1:{free_port()}", "--admin", "")
    assert done.returncode == 2, done.stderr
    assert "etcd cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr
