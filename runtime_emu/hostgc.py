"""Keep Python's cyclic garbage collector off the heap that existed before a run.

An emulation allocates millions of short-lived tuples and closures (events, deliveries, handler
operands), so CPython's collector runs often; each full (oldest-generation) collection walks every
tracked object in the process, including the program image (two million instructions for ResNet-50)
and, after `dojoc.compile`, the compiler's own structures. That walk measured about a tenth of a
ResNet-50 emulation. `frozen_heap()` moves the existing objects to the collector's permanent generation
(`gc.freeze`) for the duration and back afterwards (`gc.unfreeze`): garbage made during the run is still
collected as before, and nothing the emulator computes depends on it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """A context in which the objects alive at its start are not scanned by the cyclic collector.

    Does nothing when the collector is disabled or the caller has already frozen objects (unfreezing
    at the end would release theirs too)."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
