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
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
