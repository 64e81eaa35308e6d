"""Store faults answer the truth and never kill the process (issue 9, item 7): a real SQLite
file on a real, small tmpfs that fills up; the WAL index kept out of shared memory; one
process per state directory."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.api.convert import structure_document
from gateway.api.kinds import ObjectKey
from gateway.api.manifests import parse_documents
from gateway.store.sqlite import Store, StoreError
from gateway.store.state import State
from gateway.store.writes import WritePath

from .harness import admin_gateway, route_yaml
from .test_admin import assert_status


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount command on this machine")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _write_for_ever(fd: int) -> None:
    while True:
        os.write(fd, b"\0" * 4096)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; the file, to remove when space should return."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left") as full:
            _write_for_ever(fd)
    finally:
        os.close(fd)
    assert full.value.errno == errno.ENOSPC
    return filler


def config_map(name: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "apps"},
        "data": {"blob": "x" * size},
    }


async def test_a_full_disk_is_503_changes_nothing_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        state = disk / "state"
        async with (
            admin_gateway(state) as (server, url),
            httpx.AsyncClient(base_url=url) as http,
        ):
            assert (await http.post("/v1/configmaps", json=config_map("a", 100))).status_code == 201
            generation = server.state.generation
            filler = fill(disk)
            for attempt in range(3):  # the store stays usable after each failure
                refused = await http.put("/v1/configmaps/apps/b", json=config_map("b", 50_000))
                body = assert_status(refused, 503, "ServiceUnavailable")
                assert "disk is full" in body["message"], body
                assert "no transaction" not in body["message"]
                assert_status(await http.get("/v1/configmaps/apps/b"), 404, "NotFound")
                assert server.state.generation == generation, attempt
            filler.unlink()  # space returns
            again = await http.put("/v1/configmaps/apps/b", json=config_map("b", 50_000))
            assert again.status_code == 201, again.text
            assert (await http.get("/healthz")).status_code == 200
        # Durable: what was acknowledged is what a fresh start finds.
        store = Store(state)
        try:
            names = sorted(doc["metadata"]["name"] for doc in store.load())
        finally:
            store.close()
        assert names == ["a", "b"]


def test_one_process_per_state_directory_and_no_shared_memory(tmp_path: Path) -> None:
    first = Store(tmp_path / "state")
    try:
        first.commit([])
        assert not (tmp_path / "state" / "tlsgate.db-shm").exists()
        with pytest.raises(StoreError, match="in use by another tlsgate process"):
            Store(tmp_path / "state")
    finally:
        first.close()
    second = Store(tmp_path / "state")  # free again once the first is closed
    second.close()


def test_an_unwritable_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through permissions: use a read-only mount instead
        with small_disk(tmp_path / "disk") as disk:
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            with pytest.raises(StoreError, match="state directory"):
                Store(disk / "state")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(StoreError, match="state directory"):
            Store(tmp_path / "ro" / "state")


async def test_a_write_whose_client_leaves_during_the_commit_is_still_swapped_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that hangs up cancels its request: from the commit to the swap the write
    goes on, so what the store holds is what is in force (and the revision says so)."""
    store = Store(tmp_path / "state")
    writes = WritePath(State(bind_address="127.0.0.1"), store)
    writes.load()
    slow_commit = store.commit

    def commit(*args: Any, **kwargs: Any) -> int:
        time.sleep(0.3)  # the fault: a slow disk, long enough to hang up during it
        return slow_commit(*args, **kwargs)

    monkeypatch.setattr(store, "commit", commit)
    documents = [
        structure_document(raw)
        for raw in parse_documents(route_yaml("db", ["db.example.com"], [("db", 1)]))
    ]
    with trio.move_on_after(0.1) as hung_up:
        await writes.apply(documents)
    assert hung_up.cancel_called  # the caller was cancelled during the commit...
    key = ObjectKey("TLSRoute", "apps", "db")
    assert key in writes.state.documents  # ...and the write is in force all the same
    assert writes.applied == store.revision == 1
    store.close()
