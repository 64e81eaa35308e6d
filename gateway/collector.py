"""The garbage collector's policy for a process that holds a large configuration.

I/O-free, but process-wide state: used by the composition root, the build and the admin
write views. A configuration of 10,000 routes is millions of long-lived objects, and a bundle
apply or a full build makes millions more. CPython's collector walks the oldest generation
whenever enough new objects survive, so during such work it walks a growing heap again and
again, each time holding the GIL: a few hundred milliseconds per bundle apply, and in a
single-process gateway a stall of every connection (measured with scripts/bench-control).

So bulk work runs as `bulk()`: no automatic collection meanwhile, and at its end, if it made
many objects, what it made and kept moves to the permanent generation, which collections
never walk (a young collection of all of it would itself stall for ~0.2 s). Objects there
are still freed by reference counting when a later write replaces them (configurations are
frozen values, without cycles); what is lost is the collection of the cycles that became
garbage while the work ran (request bookkeeping: bounded per bulk write).

Freeing is work too: the parsed body of a 10,000-route bundle is a million objects, and when
its last reference goes on the event loop's thread, reference counting frees all of them in
one C call that holds the GIL for ~30 ms. `discard(items)` empties such a list on a thread of
its own instead, a slice at a time, so the loop gets the GIL between slices.
"""

from __future__ import annotations

import gc
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Objects made during bulk work above which they are frozen rather than collected.
FREEZE_ABOVE = 50_000


class _Bulk:
    """How many bulk writes run; the collector runs again when none does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0

    @contextmanager
    def __call__(self, when: bool = True) -> Iterator[None]:
        if not when:
            yield
            return
        with self.lock:
            self.running += 1
            gc.disable()
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1
                if not self.running:
                    # The young generation is what the work made (and kept) meanwhile; a
                    # small amount is left for the collector as usual.
                    if gc.get_count()[0] >= FREEZE_ABOVE:
                        gc.freeze()
                    gc.enable()


#: Run a bulk write: no automatic collection meanwhile, then freeze what is alive (nested and
#: concurrent uses count).
bulk = _Bulk()


#: Items freed per slice by `discard`: about a millisecond of deallocation for documents.
DISCARD_SLICE = 256


class _Discard:
    """A thread that empties the lists it is given, a slice at a time."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, items: list[Any]) -> None:
        """Empty `items` (its owner is done with it) off the calling thread."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="discard", daemon=True)
                self._thread.start()
        self._queue.put(items)

    def _run(self) -> None:
        while True:
            items = self._queue.get()
            while items:
                del items[-DISCARD_SLICE:]  # the GIL may pass between slices
            del items


#: Free a large list's contents off the event loop (a parsed bundle, say).
discard = _Discard()
