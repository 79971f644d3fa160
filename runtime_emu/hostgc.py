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
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """A context in which the objects alive at its start are not scanned by the cyclic collector
    (`growing_heap`, settled once as it starts)."""
    with growing_heap() as settle:
        settle()
        yield


@contextlib.contextmanager
def growing_heap() -> Iterator[Callable[[], None]]:
    """A context for work that builds a large heap step by step (a compile: two million instructions for
    ResNet-50, about a sixth of its time in the collector's walks over them). It yields `settle`, which moves
    the objects alive now to the permanent generation, so later collections walk only what came after;
    everything goes back at the end. Does nothing when the collector is disabled or the caller has already
    frozen objects (unfreezing at the end would release theirs too)."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield lambda: None
        return
    try:
        yield gc.freeze
    finally:
        gc.unfreeze()
