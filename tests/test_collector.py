"""gateway/collector.py: large garbage is freed off the calling thread, a slice at a time."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from gateway import collector


class Tracked:
    """Records the thread that frees it."""

    freed_on: ClassVar[list[int]] = []

    def __del__(self) -> None:
        Tracked.freed_on.append(threading.get_ident())


def test_discard_frees_the_items_on_its_own_thread() -> None:
    Tracked.freed_on.clear()
    items = [Tracked() for _ in range(3 * collector.DISCARD_SLICE + 5)]
    count = len(items)
    collector.discard(items)
    deadline = time.monotonic() + 10
    while len(Tracked.freed_on) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(Tracked.freed_on) == count
    assert threading.get_ident() not in Tracked.freed_on
    assert items == []  # emptied in place: the owner's list is the one freed
