"""gateway/store/etcd.py against a real etcd (Debian's etcd-server, installed by the test
set-up): one member on loopback per test, its own data directory, stopped by PID."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.api.kinds import ObjectKey
from gateway.store.etcd import EtcdStore, Stale, prefix_end
from gateway.store.etcd_watch import Change, Compacted, watch
from gateway.store.sqlite import StoreError, StoreUnavailable

from .harness import free_port

pytestmark = pytest.mark.slow

#: A small transaction limit, so that a bundle over it is cheap to make.
MAX_TXN_OPS = 8


class Etcd:
    def __init__(self, directory: Path) -> None:
        self.client_port, peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.log = (directory / "etcd.log").open("w")
        self.process = subprocess.Popen(
            [
                "etcd",
                "--name=test",
                f"--data-dir={directory / 'data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                f"--max-txn-ops={MAX_TXN_OPS}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).json().get("health") == "true":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"etcd did not start: {(directory / 'etcd.log').read_text()[-2000:]}")

    def keys(self, prefix: str) -> dict[str, bytes]:
        """What etcd holds under `prefix`, read directly (not through the store)."""
        start = prefix.encode()
        answer = httpx.post(
            self.url + "/v3/kv/range",
            json={
                "key": base64.b64encode(start).decode(),
                "range_end": base64.b64encode(prefix_end(start)).decode(),
            },
        ).json()
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"])
            for kv in answer.get("kvs", [])
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: scripts/setup-env installs Debian's etcd-server")
    server = Etcd(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _service(name: str, namespace: str = "apps") -> tuple[ObjectKey, str]:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
    }
    return ObjectKey("Service", namespace, name), json.dumps(body)


def test_a_commit_is_one_revision_under_the_documented_keys(etcd: Etcd) -> None:
    store = EtcdStore([etcd.url])
    try:
        first = store.commit([_service("db"), _service("cache")])
        assert store.revision == first
        second = store.commit([_service("web")], [ObjectKey("Service", "apps", "cache")])
        assert second == first + 1  # one transaction, one revision, whatever its size
        assert sorted(doc["metadata"]["name"] for doc in store.load()) == ["db", "web"]
        # A deletion alone leaves its revision on the write marker: a watch that missed it
        # is found out.
        third = store.commit([], [ObjectKey("Service", "apps", "web")])
        assert store.latest_revision() == third == second + 1
        store.commit([_service("web")])
    finally:
        store.close()
    held = etcd.keys("/tlsgate/")
    assert sorted(held) == [
        "/tlsgate/documents/.written",
        "/tlsgate/documents/Service/apps/db",
        "/tlsgate/documents/Service/apps/web",
    ]
    marker = json.loads(held["/tlsgate/documents/.written"])
    assert marker["last"] == "/tlsgate/documents/Service/apps/web"
    assert json.loads(held["/tlsgate/documents/Service/apps/db"])["metadata"]["name"] == "db"
    # A second store on the same etcd (another replica, a restart) reads the same.
    again = EtcdStore([etcd.url])
    try:
        assert sorted(doc["metadata"]["name"] for doc in again.load()) == ["db", "web"]
        assert again.revision >= second
    finally:
        again.close()


def test_prefixes_keep_configurations_apart(etcd: Etcd) -> None:
    one, two = EtcdStore([etcd.url], "/one"), EtcdStore([etcd.url], "/two")
    try:
        one.commit([_service("db")])
        assert two.load() == []
        # A prefix that extends another ("/one" and "/one-more") is not inside it.
        longer = EtcdStore([etcd.url], "/one-more")
        try:
            longer.commit([_service("other")])
            assert [doc["metadata"]["name"] for doc in one.load()] == ["db"]
        finally:
            longer.close()
    finally:
        one.close()
        two.close()


def test_a_bundle_over_etcds_limit_is_refused_whole(etcd: Etcd) -> None:
    store = EtcdStore([etcd.url])
    try:
        store.commit([_service("kept")])
        before = etcd.keys("/tlsgate/")
        with pytest.raises(StoreUnavailable, match="too many operations"):
            store.commit([_service(f"s{i}") for i in range(MAX_TXN_OPS + 1)])
        assert etcd.keys("/tlsgate/") == before  # nothing of it was written
    finally:
        store.close()


def test_etcd_down_is_an_error_at_once_and_nothing_changes(etcd: Etcd) -> None:
    store = EtcdStore([etcd.url])
    try:
        revision = store.commit([_service("db")])
        etcd.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            store.commit([_service("web")])
        assert time.monotonic() - started < 5  # refused, not hung: nobody listens
        assert store.revision == revision
    finally:
        store.close()


def test_a_second_endpoint_is_tried_when_the_first_is_unreachable(etcd: Etcd) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = EtcdStore([dead, etcd.url])
    try:
        store.commit([_service("db")])
        assert [doc["metadata"]["name"] for doc in store.load()] == ["db"]
    finally:
        store.close()


def test_no_reachable_etcd_at_start_is_a_start_error() -> None:
    with pytest.raises(StoreError, match="cannot be reached"):
        EtcdStore([f"http://127.0.0.1:{free_port()}"])


def test_a_resource_version_that_is_not_a_revision_is_refused_not_compared_as_absent(
    etcd: Etcd,
) -> None:
    store = EtcdStore([etcd.url])
    try:
        key, body = _service("db")
        store.commit([(key, body)])
        with pytest.raises(StoreError, match="not an etcd revision"):
            store.commit([(key, body)], expect={key: "12abc"})
    finally:
        store.close()


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    """Something else on etcd's port (a proxy's error page, another service)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = {"/v3/kv/range": b'{"header": {}}'}.get(self.path, b"<html>502</html>\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_etcd() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotEtcd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_answers_that_are_not_etcds_are_unavailable_not_a_crash(not_etcd: str) -> None:
    with pytest.raises(StoreError, match="cannot read"):
        EtcdStore([not_etcd])  # its range answer has no revision

    async def follow() -> None:
        with trio.fail_after(10):
            async with contextlib.aclosing(watch([not_etcd], "/tlsgate/documents/", 1)) as batches:
                async for _ in batches:
                    pass

    with pytest.raises(StoreUnavailable, match="cannot read"):
        await follow()


# --- the watch ----------------------------------------------------------------------------


async def _collect(
    etcd_url: str, start: int, until: int, prefix: str = "/tlsgate/documents/"
) -> list[Change]:
    """Changes from `start` until one at revision `until` or later has come."""
    got: list[Change] = []
    with trio.fail_after(10):
        async with contextlib.aclosing(watch([etcd_url], prefix, start)) as changes:
            async for batch in changes:
                got += batch.changes
                if got and got[-1].revision >= until:
                    break
    return got


async def test_a_watch_from_an_older_revision_replays_every_change_in_order(etcd: Etcd) -> None:
    """Written before the watch starts, from the revision after a read: nothing is missed
    (apache/apisix#9951 lost such writes)."""
    store = EtcdStore([etcd.url])
    try:
        read_at = store.revision
        store.commit([_service("db"), _service("cache")])
        store.commit([_service("db")], [ObjectKey("Service", "apps", "cache")])
        last = store.commit([], [ObjectKey("Service", "apps", "db")])
    finally:
        store.close()
    got = await _collect(etcd.url, read_at + 1, last)
    assert [(c.key.rsplit("/", 1)[1], c.value is None, c.revision) for c in got] == [
        ("db", False, read_at + 1),  # in the transaction's order
        ("cache", False, read_at + 1),
        (".written", False, read_at + 1),  # the write marker, in the same transaction
        ("db", False, read_at + 2),
        ("cache", True, read_at + 2),
        (".written", False, read_at + 2),
        ("db", True, read_at + 3),
        (".written", False, read_at + 3),
    ]
    assert json.loads(got[1].value or b"")["metadata"]["name"] == "cache"


async def test_a_watch_sees_writes_made_while_it_runs(etcd: Etcd) -> None:
    store = EtcdStore([etcd.url])
    got: list[Change] = []
    try:
        start = store.revision + 1

        def write() -> None:
            store.commit([_service("db")])

        with trio.fail_after(10):
            async with (
                contextlib.aclosing(watch([etcd.url], "/tlsgate/documents/", start)) as changes,
                trio.open_nursery() as nursery,
            ):
                async for batch in changes:
                    if batch.created:  # open: now write
                        assert not batch.changes
                        nursery.start_soon(trio.to_thread.run_sync, write)
                        continue
                    got += batch.changes
                    break
    finally:
        store.close()
    assert [c.key for c in got] == [
        "/tlsgate/documents/Service/apps/db",
        "/tlsgate/documents/.written",  # the write marker, in the same transaction
    ]


async def test_a_compacted_history_says_so_rather_than_skipping(etcd: Etcd) -> None:
    store = EtcdStore([etcd.url])
    try:
        first = store.commit([_service("db")])
        last = store.commit([_service("web")])
    finally:
        store.close()
    async with httpx.AsyncClient() as client:
        await client.post(etcd.url + "/v3/kv/compaction", json={"revision": last, "physical": True})
    with pytest.raises(Compacted) as raised:
        await _collect(etcd.url, first, last)
    assert raised.value.revision == last


async def test_a_watch_whose_etcd_goes_away_ends_with_an_error(etcd: Etcd) -> None:
    """The stream breaking is StoreUnavailable, never a quiet end nor a hang: the caller
    watches again from what it applied (not from "now", as apache/apisix#12514 did)."""
    store = EtcdStore([etcd.url])
    store.close()
    failure: list[BaseException] = []

    async def watching() -> None:
        start = store.revision + 1
        try:
            async with contextlib.aclosing(
                watch([etcd.url], "/tlsgate/documents/", start)
            ) as changes:
                async for _ in changes:
                    pass
        except StoreUnavailable as exc:
            failure.append(exc)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watching)
            await trio.sleep(0.5)  # real time: the stream is open (nothing to wait on)
            await trio.to_thread.run_sync(etcd.stop)
    assert failure


async def test_a_write_planned_on_a_view_behind_etcd_is_planned_again(etcd: Etcd) -> None:
    """Two replicas that read the store before either wrote (two bootstraps at once): the
    second one's creates meet the first one's documents in etcd (Stale), it reads again,
    before its watch even runs, and finds them unchanged; a conditional write on what it
    read is a conflict, decided by etcd."""
    from gateway.api.convert import structure_document
    from gateway.store.follow import Follower, Health
    from gateway.store.plan import Action, Conflict
    from gateway.store.state import State
    from gateway.store.writes import NotFound, WritePath

    def service(name: str, **labels: str) -> dict[str, object]:
        metadata = {"name": name, "namespace": "apps", "labels": labels}
        return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {}}

    documents = [structure_document(service(name)) for name in ("db", "web")]
    paths = []
    for _ in range(2):
        store = EtcdStore([etcd.url])
        writes = WritePath(State(), store)
        Follower(store, writes, Health())
        writes.load()
        paths.append(writes)
    first, second = paths
    try:
        created = await first.apply(documents)
        assert {c.action for c in created.changes} == {Action.CREATED}
        again = await second.apply(documents)
        assert {c.action for c in again.changes} == {Action.UNCHANGED}
        assert [c.document.metadata.uid for c in again.changes] == [
            c.document.metadata.uid for c in created.changes
        ]
        # A change through the first; the second's view is behind until it catches up, so a
        # write conditional on the version it holds is refused.
        key = ObjectKey("Service", "apps", "db")
        held = second.get(key).metadata.resource_version
        assert held is not None
        changed = service("db", v="2")
        await first.apply([structure_document(changed)])
        with pytest.raises(Conflict):
            await second.apply([structure_document(changed)], expected_versions={key: held})
        # Created through the first: the second's view does not have it, etcd does. A patch
        # and a delete through the second find it (existence is etcd's to say).
        await first.apply([structure_document(service("cache"))])
        cache = ObjectKey("Service", "apps", "cache")
        assert cache not in second.documents
        patched = await second.patch(cache, {"metadata": {"labels": {"v": "3"}}})
        assert patched.changes[0].document.metadata.labels == {"v": "3"}
        deleted = await second.delete(cache)
        assert deleted.changes[0].action is Action.DELETED
        with pytest.raises(NotFound):
            await first.delete(ObjectKey("Service", "apps", "never"))
    finally:
        for writes in paths:
            assert writes.store is not None
            writes.store.close()


async def test_values_written_into_etcd_by_hand_are_ignored_not_fatal(etcd: Etcd) -> None:
    """etcd is shared: a value that is not JSON, not a valid document, or another object
    than its key names is logged and left out, at start and on the watch, and never
    crashes the replica."""
    from gateway.store.follow import Follower, Health
    from gateway.store.state import State
    from gateway.store.writes import WritePath

    def put(name: str, value: str) -> None:
        key = base64.b64encode(f"/tlsgate/documents/{name}".encode()).decode()
        data = base64.b64encode(value.encode()).decode()
        httpx.post(etcd.url + "/v3/kv/put", json={"key": key, "value": data}).raise_for_status()

    def service(name: str, namespace: str = "apps") -> str:
        metadata = {"name": name, "namespace": namespace}
        return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {}})

    put("Service/apps/garbage", "not json")
    put("Service/apps/elsewhere", service("zzz", "other"))
    put("Service/apps/invalid", service("invalid").replace('"spec": {}', '"spec": 7'))
    put("Service/apps/ok", service("ok"))
    put("Service/apps/replaced", service("replaced"))
    # No namespace: once defaulted it is default/nameless, not the cluster-scoped key it sits at.
    put(
        "ConfigMap//nameless",
        json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nameless"}}),
    )
    store = EtcdStore([etcd.url])
    writes = WritePath(State(), store)
    follower = Follower(store, writes, Health())
    try:
        writes.load()
        assert sorted(key.name for key in writes.documents) == ["ok", "replaced"]
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)
            await trio.to_thread.run_sync(put, "Service/apps/garbage2", "{")
            # Over a document in force: it leaves force, as a replica starting now has it not.
            await trio.to_thread.run_sync(put, "Service/apps/replaced", "[]")
            await trio.to_thread.run_sync(put, "Service/apps/moved", service("zzz2", "other"))
            await trio.to_thread.run_sync(put, "Service/apps/later", service("later"))
            with trio.fail_after(10):
                while ObjectKey("Service", "apps", "later") not in writes.documents:
                    await writes.state.wait_changed(writes.state.generation)
            nursery.cancel_scope.cancel()
        assert sorted(key.name for key in writes.documents) == ["later", "ok"]
    finally:
        store.close()


def _paths(etcd: Etcd, count: int) -> list[Any]:
    """`count` write paths on one etcd, each with a follower that is not running: its view
    moves only when a write finds it behind (as at a replica's start), which makes "behind"
    happen on demand."""
    from gateway.store.follow import Follower, Health
    from gateway.store.state import State
    from gateway.store.writes import WritePath

    paths = []
    for _ in range(count):
        store = EtcdStore([etcd.url])
        writes = WritePath(State(), store)
        Follower(store, writes, Health())
        writes.load()
        paths.append(writes)
    return paths


def _close(paths: list[Any]) -> None:
    for writes in paths:
        writes.store.close()


def _document(name: str, **labels: str) -> Any:
    from gateway.api.convert import structure_document

    metadata = {"name": name, "namespace": "apps", "labels": labels}
    return structure_document(
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {}}
    )


async def test_preconditions_are_etcds_to_decide_not_a_view_behind(etcd: Etcd) -> None:
    """A resourceVersion read on one replica and sent to another whose view is behind, and
    a create of an object another replica deleted a moment ago: both succeed, since etcd
    holds what the client saw. A precondition etcd does not meet stays a 409."""
    from gateway.store.plan import Action, Conflict

    first, second = _paths(etcd, 2)
    try:
        await first.apply([_document("db"), _document("web")])
        await second.apply([_document("db"), _document("web")])  # now both hold them
        key = ObjectKey("Service", "apps", "db")
        changed = await first.apply([_document("db", v="2")])
        version = changed.changes[0].document.metadata.resource_version
        assert version is not None
        assert version != second.get(key).metadata.resource_version
        again = await second.apply([_document("db", v="3")], expected_versions={key: version})
        assert again.changes[0].action is Action.CONFIGURED
        with pytest.raises(Conflict, match="has been modified"):  # etcd's is newer
            await first.apply([_document("db", v="4")], expected_versions={key: version})
        web = ObjectKey("Service", "apps", "web")
        await first.delete(web)
        assert web in second.documents
        created = await second.apply([_document("web")], must_not_exist=True)
        assert created.changes[0].action is Action.CREATED
        with pytest.raises(Conflict, match="already exists"):
            await first.apply([_document("web")], must_not_exist=True)
    finally:
        _close([first, second])


@pytest.mark.parametrize("compares", ["etcd's limit", "tlsgate's limit"])
async def test_a_write_naming_more_objects_than_etcd_compares_compares_the_view(
    etcd: Etcd, compares: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kubectl apply -f dir/` of more objects than one transaction may compare, few of
    them changed: it commits, and "unchanged" is still etcd's answer. An object changed or
    deleted through another replica is written again, not reported unchanged. Beyond
    etcd's --max-txn-ops (8 here; found out when etcd refuses) or beyond MAX_COMPARES
    (lowered to 4 here; known in advance)."""
    from gateway.store import etcd as etcd_store
    from gateway.store.plan import Action

    if compares == "tlsgate's limit":
        monkeypatch.setattr(etcd_store, "MAX_COMPARES", 4)
    first, second = _paths(etcd, 2)
    names = [f"s{i}" for i in range(MAX_TXN_OPS + 4)]
    try:
        for half in (names[: len(names) // 2], names[len(names) // 2 :]):
            await first.apply([_document(name) for name in half])
        bundle = [_document(name) for name in names]
        unchanged = await first.apply(bundle)
        assert {c.action for c in unchanged.changes} == {Action.UNCHANGED}
        # The revision that holds them all, not etcd's newest (what ?wait=replicas awaits).
        newest = max(int(c.document.metadata.resource_version or 0) for c in unchanged.changes)
        assert unchanged.revision == newest
        await second.apply([_document("s3", changed="yes")])
        await second.delete(ObjectKey("Service", "apps", "s5"))
        again = await first.apply([*bundle[:-1], _document(names[-1], v="2")])
        actions = {c.key.name: c.action for c in again.changes}
        assert actions["s3"] is Action.CONFIGURED
        assert actions["s5"] is Action.CREATED
        assert actions[names[-1]] is Action.CONFIGURED
        assert [name for name, action in actions.items() if action is Action.UNCHANGED] == [
            name for name in names if name not in ("s3", "s5", names[-1])
        ]
        stored = etcd.keys("/tlsgate/documents/Service/apps/")
        assert len(stored) == len(names)
        assert json.loads(stored["/tlsgate/documents/Service/apps/s3"])["metadata"].get(
            "labels"
        ) in (None, {})
    finally:
        _close([first, second])


async def test_a_write_caught_up_past_a_later_delete_is_planned_again(etcd: Etcd) -> None:
    """etcd reported a key at revision R; the watch then brings R and, in the same batch, a
    deletion after it. The replica is past what it waited for (it holds nothing there,
    not "R or later"): the write is planned again, never a 503 after the catch-up timeout."""
    from gateway.store.etcd_watch import Batch

    (writes,) = _paths(etcd, 1)
    follower = writes.catch_up.__self__
    follower.running = True  # wait on the watch's progress rather than reload
    key = ObjectKey("Service", "apps", "gone")
    prefix = "/tlsgate/documents/Service/apps/gone"
    body = json.dumps(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gone", "namespace": "apps"}}
    ).encode()
    base = writes.applied
    caught: list[bool] = []
    try:
        with trio.fail_after(3):  # far below the write path's 5 s catch-up timeout
            async with trio.open_nursery() as nursery:

                async def wait() -> None:
                    caught.append(await writes.catch_up({key: base + 1}, 0))

                nursery.start_soon(wait)
                await trio.lowlevel.checkpoint()  # the waiter notes what it planned on
                changes = (Change(prefix, body, base + 1), Change(prefix, None, base + 2))
                await follower._apply(Batch(base + 2, changes))
    finally:
        _close([writes])
    assert caught == [True]
    assert key not in writes.documents


async def test_a_write_a_member_took_without_answering_is_answered_as_committed(
    etcd: Etcd,
) -> None:
    """A member that commits a transaction and then fails to answer (a timeout, a crash):
    the write is sent to the next member, whose compares fail on the write itself. The
    write marker's ID says it is this write: answered as committed, not 409."""
    store = EtcdStore([etcd.url])
    taken: list[bytes] = []

    class _CommitsThenHangsUp(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            taken.append(body)
            httpx.post(etcd.url + self.path, content=body, timeout=10)
            self.close_connection = True  # no answer: the connection just closes

        def log_message(self, *args: object) -> None:
            pass

    forwarder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CommitsThenHangsUp)
    thread = threading.Thread(target=forwarder.serve_forever, daemon=True)
    thread.start()
    try:
        key, body = _service("db")
        store.endpoints = [f"http://127.0.0.1:{forwarder.server_address[1]}", etcd.url]
        revision = store.commit([(key, body)], expect={key: None})
        assert len(taken) == 1  # the first member took it
        assert store.revision_of(key) == revision
        with pytest.raises(Stale):  # a real conflict stays one
            store.commit([(key, body)], expect={key: None})
    finally:
        forwarder.shutdown()
        forwarder.server_close()
        store.close()


async def test_a_value_tlsgate_cannot_read_is_replaced_by_a_write_of_its_object(
    etcd: Etcd,
) -> None:
    """A key etcd holds that is not in force here (not JSON, put by hand) must not make its
    object unwritable: a delete is a 404 at once, a create replaces the value."""
    from gateway.store.plan import Action
    from gateway.store.writes import NotFound

    def put(name: str, value: str) -> None:
        key = base64.b64encode(f"/tlsgate/documents/Service/apps/{name}".encode()).decode()
        data = base64.b64encode(value.encode()).decode()
        httpx.post(etcd.url + "/v3/kv/put", json={"key": key, "value": data}).raise_for_status()

    put("garbage", "not json")
    put(
        "invalid",
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "spec": 7,
                "metadata": {"name": "invalid", "namespace": "apps"},
            }
        ),
    )
    (writes,) = _paths(etcd, 1)
    try:
        for name in ("garbage", "invalid"):
            with trio.fail_after(5), pytest.raises(NotFound):
                await writes.delete(ObjectKey("Service", "apps", name))
            created = await writes.apply([_document(name)])
            assert created.changes[0].action is Action.CREATED
        stored = etcd.keys("/tlsgate/documents/Service/apps/")
        assert {json.loads(v)["metadata"]["name"] for v in stored.values()} == {
            "garbage",
            "invalid",
        }
    finally:
        _close([writes])


async def test_a_patch_invalid_only_on_a_stale_view_is_planned_again(etcd: Etcd) -> None:
    """An EndpointSlice's addresses changed to IPv6 through one replica; a patch through a
    replica that still holds the IPv4 ones sets addressType IPv6. On that view it is
    invalid (422); on etcd's it is valid, and etcd's is the one that counts."""
    from gateway.api.convert import Invalid, structure_document

    def eps(address_type: str, address: str) -> Any:
        return structure_document(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "db-1",
                    "namespace": "apps",
                    "labels": {"kubernetes.io/service-name": "db"},
                },
                "addressType": address_type,
                "endpoints": [{"addresses": [address]}],
                "ports": [{"name": "pg", "port": 5432}],
            }
        )

    first, second = _paths(etcd, 2)
    key = ObjectKey("EndpointSlice", "apps", "db-1")
    try:
        await first.apply([eps("IPv4", "10.0.0.5")])
        await second.apply([eps("IPv4", "10.0.0.5")])  # both hold the IPv4 one
        # Through the first: IPv6 addresses (an odd state, but a stored one).
        changed = structure_document(
            {
                **_wire(first.get(key)),
                "addressType": "IPv6",
                "endpoints": [{"addresses": ["2001:db8::5"]}],
            }
        )
        await first.apply([changed])
        patched = await second.patch(key, {"addressType": "IPv6"})
        assert patched.changes[0].document.address_type == "IPv6"
        # Invalid against etcd's state too: still a 422.
        with pytest.raises(Invalid):
            await second.patch(key, {"addressType": "IPv4"})
    finally:
        _close([first, second])


def _wire(doc: Any) -> dict[str, Any]:
    from gateway.api.convert import unstructure_document

    wire: dict[str, Any] = unstructure_document(doc, redact=False)
    return wire
