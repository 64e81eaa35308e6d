"""The garbage collector's policy for a process that holds a large configuration.

I/O-free, but process-wide state: used by the composition root and the admin write views.
A configuration of 10,000 routes is millions of long-lived objects, and a bundle apply makes
millions more. CPython's collector walks the oldest generation whenever enough new objects
survive, so during a bundle apply it walks a growing heap again and again, and each walk
holds the GIL: a few hundred milliseconds per apply, and in a single-process gateway a stall
of every connection (measured with scripts/bench-control). So a bulk write runs as `bulk()`:
no automatic collection meanwhile, and at its end what it made and kept moves to the
permanent generation, which collections never walk (a young collection of everything it made
would itself stall for ~0.2 s). Objects there are still freed by reference counting when a
later write replaces them (configurations are frozen values, without cycles); what is lost is
the collection of cycles that became garbage during the write (request bookkeeping: bounded
per write).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
                    gc.freeze()
                    gc.enable()


#: Run a bulk write: no automatic collection meanwhile, then freeze what is alive (nested and
#: concurrent uses count).
bulk = _Bulk()
