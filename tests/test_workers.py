"""The process model with real worker processes (API.md "Process model"): each worker binds
and serves, a write is answered once every worker runs it, a killed worker is replaced
without touching the others' connections, metrics add up over the process tree, and SIGTERM
leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from gateway.cli.env import quota_cpus
from gateway.dataplane.plane import PlaneConfig
from gateway.dataplane.proxy import ProxyConfig
from gateway.store.state import State
from gateway.supervisor import Supervisor

from .harness import (
    Pki,
    backends,
    free_port,
    gateway_yaml,
    route_yaml,
    run_tlsgate,
    serve_process,
    service_yaml,
    tls_client,
)

YAML = {"Content-Type": "application/yaml"}
#: Connections of the route that lives through the test (a deleted route's series go with it).
CLOSED_COUNT = r'^tlsgate_connections_finished_total\{.*outcome="closed",route="apps/db"\} (\S+)'
pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (any of its threads may have started them)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if parent == pid:
                found.add(int(entry))
    return found


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _served_by(log: Path) -> set[str]:
    return set(re.findall(r"outcome=closed ended_by=\S+ worker=(\d+)", log.read_text()))


async def test_workers_serve_writes_are_in_force_everywhere_and_a_dead_worker_is_replaced(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path)
    port, admin = free_port(), free_port()
    url = f"http://127.0.0.1:{admin}"
    manifests = tmp_path / "gw.yaml"
    with backends(pki, ("one", ["db.example.com", "new.example.com"])) as (one,):
        manifests.write_text(
            gateway_yaml(port)
            + service_yaml("db", one.port)
            + route_yaml("db", ["db.example.com"], [("db", 1)])
        )
        args = ["--workers", "2", "--admin", f"127.0.0.1:{admin}", "--state-dir", ""]
        args += ["--bootstrap", str(manifests)]
        async with serve_process(*args, admin_url=url, path="/readyz") as process:
            log = Path(f"/proc/{process.pid}/fd/1")  # its output file
            workers = _children(process.pid)
            assert len(workers) == 2
            # Every worker has its own listening socket on the port (SO_REUSEPORT).
            listening = _listening_inodes(port)
            for pid in workers:
                assert _socket_inodes(pid) & listening, f"worker {pid} does not listen"
            assert not _socket_inodes(process.pid) & listening, "the main process listens"
            context = pki.client_context()

            # Both workers take connections (the kernel spreads them; bounded tries).
            with trio.fail_after(30):
                for _ in range(200):
                    async with tls_client(port, "db.example.com", context) as client:
                        assert (await client.test())["backend"] == "one"
                    if _served_by(log) == {"0", "1"}:
                        break
            assert _served_by(log) == {"0", "1"}

            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                # Acknowledged means in force in every worker: the new SNI works at once.
                route = route_yaml("new", ["new.example.com"], [("db", 1)])
                answer = await http.post("/v1/apply", content=route, headers=YAML)
                assert answer.status_code == 200, answer.text
                with trio.fail_after(60):
                    for _ in range(200):
                        async with tls_client(port, "new.example.com", context) as client:
                            assert (await client.test())["sni"] == "new.example.com"
                table = (await http.get("/v1/routingtable")).json()
                assert {w["generation"] for w in table["workers"]} == {table["generation"]}
                assert sorted(w["pid"] for w in table["workers"]) == sorted(workers)

                # Workers get patches (routing/patch.py): a deleted route is gone from every
                # worker once the delete is answered, the others are untouched.
                gone = await http.delete("/v1/tlsroutes/apps/new")
                assert gone.status_code == 200, gone.text
                with trio.fail_after(60):
                    for _ in range(40):
                        with pytest.raises((ssl.SSLError, trio.BrokenResourceError, OSError)):
                            async with tls_client(port, "new.example.com", context):
                                pass
                        async with tls_client(port, "db.example.com", context) as client:
                            assert (await client.test())["sni"] == "db.example.com"
                assert (
                    await http.post("/v1/apply", content=route, headers=YAML)
                ).status_code == 200
                table = (await http.get("/v1/routingtable")).json()

                # A worker that cannot run the change holds its answer: stop one (SIGSTOP),
                # write, and the answer waits until it runs again and has swapped.
                stopped = table["workers"][0]["pid"]
                answered = trio.Event()

                async def write() -> None:
                    route = route_yaml("late", ["late.example.com"], [("db", 1)])
                    answer = await http.post("/v1/apply", content=route, headers=YAML)
                    assert answer.status_code == 200, answer.text
                    answered.set()

                os.kill(stopped, signal.SIGSTOP)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(write)
                        with trio.move_on_after(0.5):
                            await answered.wait()
                        assert not answered.is_set(), "answered before every worker ran it"
                        os.kill(stopped, signal.SIGCONT)
                        with trio.fail_after(10):
                            await answered.wait()
                finally:
                    os.kill(stopped, signal.SIGCONT)
                table = (await http.get("/v1/routingtable")).json()
                assert {w["generation"] for w in table["workers"]} == {table["generation"]}

                async def counts() -> tuple[float, float | None]:
                    metrics = (await http.get("/metrics")).text
                    restarts = re.search(r"^tlsgate_worker_restarts_total (\S+)", metrics, re.M)
                    closed = sum(map(float, re.findall(CLOSED_COUNT, metrics, re.M)))
                    return closed, float(restarts.group(1)) if restarts else None

                async def workers_table() -> list[dict[str, int]]:
                    table: list[dict[str, int]] = (await http.get("/v1/routingtable")).json()[
                        "workers"
                    ]
                    return table

                # kill -9 of one worker: a connection held on the other one survives.
                async with tls_client(port, "db.example.com", context) as held:
                    await held.test()
                    # Workers report open connections and counts every 0.1 s: wait until
                    # the held connection is the only one open and every close is counted.
                    served = len(
                        re.findall(
                            r"route=apps/db .*outcome=closed", await trio.Path(log).read_text()
                        )
                    )
                    with trio.fail_after(10):
                        while True:
                            table = await workers_table()
                            open_now = [w["connections"] for w in table]
                            if sorted(open_now) == [0, 1] and (await counts())[0] == served:
                                break
                            await trio.sleep(0.05)
                    holder = next(w for w in table if w["connections"] == 1)
                    victim = next(w for w in table if w is not holder)
                    os.kill(victim["pid"], signal.SIGKILL)
                    assert await held.call("ECHO still here") == "still here"

                    async def replaced() -> bool:
                        pids = {w["pid"] for w in await workers_table()}
                        ready = (await http.get("/readyz")).status_code == 200
                        return victim["pid"] not in pids and ready

                    with trio.fail_after(20):
                        while not await replaced():  # noqa: ASYNC110 (another process)
                            await trio.sleep(0.05)
                    assert await held.call("ECHO still here") == "still here"

                # One exposition: both workers' counts, the dead one's kept; the restart.
                closed, restarts = await counts()
                assert closed == served
                assert restarts == 1.0
                # process_* are the process tree's: the workers' descriptors count too.
                exposition = (await http.get("/metrics")).text
                tree = re.search(r"^process_open_fds (\S+)", exposition, re.M)
                assert tree is not None
                assert float(tree.group(1)) > len(os.listdir(f"/proc/{process.pid}/fd"))

            # SIGTERM: every worker drains and exits, then the main process, with 0.
            children = _children(process.pid)
            process.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(lambda: process.wait(30))
            assert code == 0
            for pid in children:
                assert not await trio.Path(f"/proc/{pid}").exists(), f"worker {pid} left behind"


def test_workers_option_is_checked() -> None:
    result = run_tlsgate("serve", "--workers", "many")
    assert result.returncode == 2
    assert "is not a number of workers or 'auto'" in result.stderr


async def test_a_channel_reset_by_an_exiting_worker_is_not_an_error() -> None:
    """A worker that exits with a frame unread resets the channel (ECONNRESET on the main
    side): the slot's reader and feeder stop quietly and the process's exit decides, never an
    exception that takes the main process down (found with workers on by default: SIGTERM
    drains sometimes exited 1)."""
    state = State()
    supervisor = Supervisor(state, 1, proxy=ProxyConfig(), plane=PlaneConfig(limit=16))
    worker = supervisor.workers[0]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.sendall(b"unread by the worker")
    theirs.sendall(b"\x00\x00\x00\x10partial frame")  # a report cut off by the exit
    theirs.close()  # closed with unread data: the kernel resets the connection
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    with trio.fail_after(5):
        await supervisor._listen(stream, worker)
        await supervisor._feed(stream, worker)
    await stream.aclose()


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [
        ("max 100000", None),
        ("100000 100000", 1),
        ("150000 100000", 2),  # rounded up
        ("50000 100000", 1),
        ("400000 100000\n", 4),
        ("junk", None),
        ("0 100000", None),
    ],
)
def test_cgroup_cpu_quota_in_whole_cpus(cpu_max: str, cpus: int | None) -> None:
    assert quota_cpus(cpu_max) == cpus


def test_auto_workers_follow_the_cgroup_cpu_quota(tmp_path: Path) -> None:
    """`--workers auto` in a container limited to one CPU is one worker, whatever the host
    has: a real cgroup with a quota, and a real process in it."""
    v1 = Path("/sys/fs/cgroup/cpu")
    v2 = Path("/sys/fs/cgroup")
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / f"tlsgate-test-{os.getpid()}"
        limit = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
    elif (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text():
        group = v2 / f"tlsgate-test-{os.getpid()}"
        limit = {"cpu.max": "100000 100000"}
    else:
        pytest.skip("no cgroup CPU controller here to set a quota with")
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here: {exc}")
    try:
        for name, value in limit.items():
            (group / name).write_text(value)
        script = "from gateway.cli.env import usable_cpus; print(usable_cpus())"
        inside = subprocess.run(
            [
                "sh",
                "-c",
                f'echo $$ > {group}/cgroup.procs && exec "$0" -c "$1"',
                sys.executable,
                script,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=Path(__file__).parent.parent,
        )
        assert inside.stdout.strip() == "1"
    finally:
        group.rmdir()
