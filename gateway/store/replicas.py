"""Replicas of one configuration: each registers under an etcd lease, and a write can wait
until every live replica applied it (issue 13; API.md "Store and replicas").

I/O (Trio; the etcd calls are blocking HTTP on a worker thread). A replica's registration is
`{prefix}/replicas/{name}`: `{"name", "revision", "generation", "ready", "lastSwap"}`, put
under a lease of `--replica-lease` seconds that the replica renews every third of it. A
replica whose lease has not expired is live, frozen or not; a dead one disappears when its
lease does, and one that stops cleanly revokes its lease at once. The registration changes
only when what it says does (the revision applied, the generation, readiness), so an idle
cluster writes nothing but lease renewals.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import trio

from gateway.api.names import RFC3339
from gateway.store.etcd import EtcdStore
from gateway.store.follow import Health
from gateway.store.sqlite import StoreUnavailable

log = logging.getLogger("tlsgate.store")

#: How often the registration is compared with what this replica runs (seconds): readiness
#: and the generation change without a write (a listener bound, a worker restarted).
CHECK_EVERY = 0.5

#: How often `wait` reads the registrations while a replica lags: first soon (a replica
#: applies a write within milliseconds), then less and less often (seconds).
WAIT_POLL_FIRST = 0.005
WAIT_POLL_MAX = 0.1


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime(RFC3339)


def lagging(replicas: list[dict[str, Any]], revision: int) -> list[dict[str, Any]]:
    """The replicas that have not applied `revision` yet. Pure."""
    return [r for r in replicas if int(r.get("revision", 0)) < revision]


class Registry:
    """This replica's registration, and everyone's."""

    def __init__(
        self,
        store: EtcdStore,
        health: Health,
        *,
        name: str,
        ttl: int,
        info: Callable[[], dict[str, Any]],
    ) -> None:
        self.store, self.health = store, health
        self.name, self.ttl, self.info = name, max(1, ttl), info
        self.key = f"{store.replicas_prefix}{name}"
        self._lease: int | None = None
        self._published: str | None = None
        self._nudged = trio.Event()
        #: Etcd calls of the registration: one at a time, off the shared thread limiter.
        self._calls = trio.CapacityLimiter(1)

    def nudge(self) -> None:
        """What this replica runs changed: publish it soon."""
        self._nudged.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        renew_every = self.ttl / 3
        next_renewal = trio.current_time()
        try:
            while True:
                try:
                    if trio.current_time() >= next_renewal:
                        await self._renew()
                        next_renewal = trio.current_time() + renew_every
                    await self._publish()
                    self.health.report("lease", None)
                except StoreUnavailable as exc:
                    self.health.report("lease", str(exc))
                    next_renewal = trio.current_time() + min(1.0, renew_every)
                with trio.move_on_at(min(next_renewal, trio.current_time() + CHECK_EVERY)):
                    await self._nudged.wait()
                self._nudged = trio.Event()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self._revoke()

    async def _renew(self) -> None:
        if self._lease is not None and await self._thread(self.store.keep_alive, self._lease):
            return
        if self._lease is not None:
            log.warning("replica %s: its lease expired; registering again", self.name)
        self._lease = await self._thread(self.store.grant, self.ttl)
        self._published = None  # the key went with the old lease

    async def _publish(self) -> None:
        text = json.dumps(self.info(), sort_keys=True)
        if text == self._published or self._lease is None:
            return
        await self._thread(self.store.put_leased, self.key, text, self._lease)
        self._published = text

    async def _revoke(self) -> None:
        if self._lease is None:
            return
        # Abandoned if etcd does not answer in time: the lease then expires by itself.
        with contextlib.suppress(StoreUnavailable):
            await trio.to_thread.run_sync(self.store.revoke, self._lease, abandon_on_cancel=True)

    async def _thread(self, call: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(call, *args, limiter=self._calls)

    async def replicas(self) -> list[dict[str, Any]]:
        """Every live replica's registration, by name."""
        held = await trio.to_thread.run_sync(self.store.range_prefix, self.store.replicas_prefix)
        found = []
        for value in held.values():
            try:
                found.append(json.loads(value))
            except ValueError:
                continue
        found.sort(key=lambda r: str(r.get("name", "")))
        return found

    async def wait(self, revision: int, seconds: float) -> list[dict[str, Any]]:
        """Until every live replica applied `revision`; the ones that had not when
        `seconds` passed (empty: all had)."""
        behind: list[dict[str, Any]] = []
        poll = WAIT_POLL_FIRST
        with trio.move_on_after(seconds):
            while True:
                try:
                    behind = lagging(await self.replicas(), revision)
                except StoreUnavailable as exc:
                    behind = [{"name": "(the store)", "problem": str(exc)}]
                if not behind:
                    return []
                await trio.sleep(poll)
                poll = min(poll * 2, WAIT_POLL_MAX)
        return behind
