"""Run numpy's BLAS single-threaded while the emulator runs.

The emulator's matrix products are tile-sized (what fits a core's SRAM), where a threaded BLAS gains
little and, in containers whose CPU quota is below the CPU count it sees, loses a great deal: OpenBLAS
threads spin-wait for CPUs they do not get (a 128 x 512 x 128 float64 product measured 37 ms threaded
against 0.4 ms on one thread). Results do not depend on it (see `runtime_emu.semantics.matmul`).

`single_threaded_blas()` uses threadpoolctl when it is installed; otherwise it calls OpenBLAS's own
`openblas_set_num_threads` (under the symbol names numpy's bundled OpenBLAS uses) on the library already
loaded in the process, and restores the previous count afterwards. Where neither works it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from functools import cache
from typing import Any

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "")


@cache
def _openblas() -> tuple[Any, Any] | None:
    """(set_num_threads, get_num_threads) of the loaded OpenBLAS, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_NOW", 2))
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    return setter, getter
    return None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """A context in which numpy's BLAS uses one thread (best effort)."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    fns = _openblas()
    if fns is None:
        yield
        return
    setter, getter = fns
    before = int(getter())
    setter(1)
    try:
        yield
    finally:
        setter(before)
