"""The garbage collector's policy for a process that holds a large configuration.

I/O-free, but process-wide state: used by the composition root and the admin write views.
A configuration of 10,000 routes is millions of long-lived objects, and a bundle apply makes
millions more. CPython's collector walks the oldest generation whenever enough new objects
survive, so during a bundle apply it walks a growing heap again and again, and each walk holds
the GIL (measured with scripts/bench-control: a few hundred ms per apply, and stalls of every
connection of a single-process gateway). So: the collector pauses while a bulk write runs
(`paused`), and after a bulk write what is alive moves to the permanent generation
(`freeze`). Objects are still freed by reference counting either way; configurations are
frozen values without cycles.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Pauses:
    """How many bulk writes are running; the collector runs again when none is."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0

    @contextmanager
    def paused(self, when: bool = True) -> Iterator[None]:
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
                    gc.enable()


#: No automatic collection while the block runs (nested and concurrent uses count).
paused = _Pauses().paused


def freeze() -> None:
    """Move what is alive into the permanent generation, after a young collection (which
    frees nearly all the cyclic garbage that would otherwise stay there for good)."""
    gc.collect(1)
    gc.freeze()
