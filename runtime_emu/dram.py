"""DRAM: the timing of the ports (`Dram`) and the functional byte store (`DramMemory`).

Timing (docs/timing.md has the full rules). Each port serves requests first come first served, in call
order (the engine calls in (issue cycle, core id) order). A request of n bytes occupies its port for
`max(1, ceil(n / port.bytes_per_cycle))` cycles (`isa.costs.dram_cycles`).

- load: port_start = max(t, port_free); the first data leaves the port at port_start + latency and
  crosses the mesh from the port's entry router to the core (`Network.send`, contending with puts),
  ending at the core's ejection port. Injection into the entry router is limited only by the port's
  bandwidth (not by the router's injection port, which is the core's), so the data is in SRAM at
  max(network arrival, port_start + latency + busy + hop latencies of the route).
- store: the data first crosses the mesh from the core (through its injection port) to the entry
  router (`Network.send`, no ejection port there); the port serves it once it has all arrived; the
  write is complete at port_start + busy + latency.

`DramMemory` holds the bytes: the address space of every port (`machine.dram_bytes`, 320 GB on
`tile`) is allocated lazily in 1 MiB pages, created on first write; untouched bytes read as zero.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from isa.costs import dram_cycles
from isa.machine import Machine
from runtime_emu.noc import RC, Delivery, Network
from runtime_emu.stats import PortStats

__all__ = ["Dram", "DramMemory", "DramBoundsError", "PAGE_BYTES"]

_CACHE_LIMIT = 1 << 16  # cached port cycles per request size


class Dram:
    """The DRAM ports of a machine: first-come-first-served bandwidth and latency, then the mesh."""

    def __init__(self, machine: Machine, network: Network) -> None:
        self.machine = machine
        self.network = network
        self._free = [0] * len(machine.dram_ports)
        self._stats = {p.name: PortStats() for p in machine.dram_ports}
        self._pstats = [self._stats[p.name] for p in machine.dram_ports]
        self._entries: dict[tuple[int, RC], RC] = {}  # entry router per (port, core)
        self._busy: dict[tuple[int, int], int] = {}  # port cycles per (port, request size)

    def _serve(self, port: int, t: int, nbytes: int) -> tuple[int, int]:
        """Reserve the port from max(t, port_free) for its transfer time; returns (start, busy)."""
        key = (port, nbytes)
        busy = self._busy.get(key)
        if busy is None:
            if len(self._busy) >= _CACHE_LIMIT:
                self._busy.clear()
            busy = self._busy[key] = dram_cycles(nbytes, self.machine.dram_ports[port].bytes_per_cycle)
        f = self._free[port]
        start = t if t >= f else f
        self._free[port] = start + busy
        self._pstats[port].busy_cycles += busy
        return start, busy

    def _entry(self, port: int, core: RC, nbytes: int) -> RC:
        """The router through which `port`'s data enters the mesh for `core` (checks the request)."""
        if not 0 <= port < len(self._free):
            raise ValueError(f"no DRAM port {port}: the machine has {len(self.machine.dram_ports)}")
        if nbytes < 0:
            raise ValueError(f"a DMA cannot move {nbytes} bytes")
        key = (port, core)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self.machine.dram_ports[port].entry_router(self.machine, core[0],
                                                                                    core[1])
        return entry

    def load(self, port: int, core: RC, nbytes: int, t: int) -> Delivery:
        """DRAM -> SRAM of `core`, requested at cycle t.

        arrivals[core] is when the data is in SRAM; source_free is when the port has read it all.
        """
        core = (core[0], core[1])
        source_free, done = self.load_at(port, core, nbytes, t)
        return Delivery(source_free, {core: done})

    def load_at(self, port: int, core: RC, nbytes: int, t: int) -> tuple[int, int]:
        """`load` for the engine's hot path (`core` a tuple): returns (source_free, arrival)."""
        entry = self._entry(port, core, nbytes)
        start, busy = self._serve(port, t, nbytes)
        ready = start + self.machine.dram_ports[port].latency
        # the DRAM side is the port's own model (its bandwidth over its span of entry routers), not the
        # entry router's injection port, which belongs to the core at that router (docs/decisions.md)
        net = self.network
        arrival = net.unicast(entry, core, nbytes, ready, False)[1]
        floor = ready + busy + net.path_latency(entry, core)
        self._pstats[port].bytes_read += nbytes
        return start + busy, (arrival if arrival >= floor else floor)

    def store(self, port: int, core: RC, nbytes: int, t: int) -> Delivery:
        """SRAM of `core` -> DRAM, issued at cycle t.

        source_free is when the SRAM source has left the core; arrivals[core] is when the write is
        complete in DRAM.
        """
        core = (core[0], core[1])
        source_free, done = self.store_at(port, core, nbytes, t)
        return Delivery(source_free, {core: done})

    def store_at(self, port: int, core: RC, nbytes: int, t: int) -> tuple[int, int]:
        """`store` for the engine's hot path (`core` a tuple): returns (source_free, write complete)."""
        entry = self._entry(port, core, nbytes)
        # the port takes the data, not a core: no ejection port
        source_free, arrival = self.network.unicast(core, entry, nbytes, t, True, False)
        start, busy = self._serve(port, arrival, nbytes)
        self._pstats[port].bytes_written += nbytes
        return source_free, start + busy + self.machine.dram_ports[port].latency

    def port_free(self, port: int) -> int:
        """The cycle at which port `port` can start its next request."""
        return self._free[port]

    def port_stats(self) -> dict[str, PortStats]:
        """Bytes read and written and busy cycles of each port, by port name (live objects)."""
        return self._stats


# -- functional storage -----------------------------------------------------------------------------

PAGE_BITS = 20
PAGE_BYTES = 1 << PAGE_BITS
_MASK = PAGE_BYTES - 1
_MAX_DIMS = 4
_SPAN_LIMIT = 64 * PAGE_BYTES  # a strided access over a larger span is done page by page
_ROW_LOOP = 64  # far-apart contiguous rows: at most this many are copied one by one


class DramBoundsError(IndexError):
    """An access outside the DRAM address space (the engine turns it into an OOB_DRAM trap)."""


def _near(lo: int, hi: int, total: int) -> bool:
    """Whether a strided access of `total` bytes spanning [lo, hi) is dense enough to copy the span."""
    return hi - lo <= min(_SPAN_LIMIT, max(4 * total, 2 * PAGE_BYTES))


def _as_bytes(data: Any) -> np.ndarray:
    """Any bytes-like object or array, as a flat uint8 array of its C-order bytes."""
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    arr = np.ascontiguousarray(data)
    return arr.reshape(-1).view(np.uint8)


class DramMemory:
    """Byte-addressed DRAM over `machine.dram_bytes`, allocated lazily in 1 MiB pages."""

    def __init__(self, machine: Machine | int) -> None:
        self.size = machine if isinstance(machine, int) else machine.dram_bytes
        self._pages: dict[int, np.ndarray] = {}
        self._shapes: dict[tuple[Any, ...], tuple[tuple[int, ...], tuple[int, ...], int, int, bool]] = {}

    @property
    def pages_allocated(self) -> int:
        """Pages created so far (each `PAGE_BYTES` of host memory)."""
        return len(self._pages)

    def _check(self, lo: int, hi: int) -> None:
        if lo < 0 or hi > self.size or lo > hi:
            raise DramBoundsError(f"DRAM access [{lo:#x}, {hi:#x}) is outside the DRAM address space "
                                  f"[0, {self.size:#x})")

    def _page(self, p: int) -> np.ndarray:
        page = self._pages.get(p)
        if page is None:
            page = self._pages[p] = np.zeros(PAGE_BYTES, dtype=np.uint8)
        return page

    # -- contiguous -----------------------------------------------------------------------------
    def read(self, addr: int, nbytes: int) -> np.ndarray:
        """`nbytes` bytes from `addr`, as a new uint8 array (untouched bytes are zero)."""
        self._check(addr, addr + nbytes)
        off = addr & _MASK
        if off + nbytes <= PAGE_BYTES:  # within one page (most reads): copy it out
            page = self._pages.get(addr >> PAGE_BITS)
            return np.zeros(nbytes, dtype=np.uint8) if page is None else page[off:off + nbytes].copy()
        out = np.zeros(nbytes, dtype=np.uint8)
        pos = 0
        while pos < nbytes:
            a = addr + pos
            off = a & _MASK
            k = min(nbytes - pos, PAGE_BYTES - off)
            page = self._pages.get(a >> PAGE_BITS)
            if page is not None:
                out[pos:pos + k] = page[off:off + k]
            pos += k
        return out

    def write(self, addr: int, data: Any) -> None:
        """Write the bytes of `data` (bytes-like or a numpy array in C order) at `addr`."""
        buf = _as_bytes(data)
        n = buf.size
        self._check(addr, addr + n)
        pos = 0
        while pos < n:
            a = addr + pos
            off = a & _MASK
            k = min(n - pos, PAGE_BYTES - off)
            self._page(a >> PAGE_BITS)[off:off + k] = buf[pos:pos + k]
            pos += k

    # -- strided --------------------------------------------------------------------------------
    def _shape(self, counts: Any, strides: Any, esize: int) -> tuple[tuple[int, ...], tuple[int, ...], int, int,
                                                                     bool]:
        """(counts, strides, lo, hi, contiguous) of a strided access, [lo, hi) relative to its address
        (cached: DMAs repeat a few shapes)."""
        key = (tuple(counts), tuple(strides), esize)
        shape = self._shapes.get(key)
        if shape is None:
            cs = tuple(int(c) for c in counts)
            ss = tuple(int(s) for s in strides)
            if not 1 <= len(cs) <= _MAX_DIMS or len(cs) != len(ss):
                raise ValueError(f"a strided DRAM access takes 1 to {_MAX_DIMS} dimensions with one stride "
                                 f"each, got counts {cs} and strides {ss}")
            if any(c < 0 for c in cs) or esize <= 0:
                raise ValueError(f"bad strided DRAM access: counts {cs}, element size {esize}")
            lo = sum(min(0, (c - 1) * s) for c, s in zip(cs, ss, strict=True))
            hi = sum(max(0, (c - 1) * s) for c, s in zip(cs, ss, strict=True)) + esize
            if len(self._shapes) >= _CACHE_LIMIT:
                self._shapes.clear()
            shape = self._shapes[key] = (cs, ss, lo, hi, self._contiguous(cs, ss, esize))
        return shape

    @staticmethod
    def _contiguous(cs: tuple[int, ...], ss: tuple[int, ...], esize: int) -> bool:
        expect = esize
        for c, s in zip(reversed(cs), reversed(ss), strict=True):
            if c != 1 and s != expect:
                return False
            expect *= c
        return True

    @staticmethod
    def _byte_addrs(addr: int, cs: tuple[int, ...], ss: tuple[int, ...], esize: int) -> np.ndarray:
        """Flat int64 byte addresses of the access, in C order of (*counts, esize)."""
        offs = np.full((1,) * len(cs), addr, dtype=np.int64)
        for d, (c, s) in enumerate(zip(cs, ss, strict=True)):
            shape = [1] * len(cs)
            shape[d] = c
            offs = offs + (np.arange(c, dtype=np.int64) * s).reshape(shape)
        return (offs[..., None] + np.arange(esize, dtype=np.int64)).reshape(-1)

    def _groups(self, addrs: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(page number, positions in `addrs`) of each page the addresses touch."""
        pages = addrs >> PAGE_BITS
        order = np.argsort(pages, kind="stable")
        sp = pages[order]
        cuts = np.flatnonzero(np.diff(sp)) + 1
        bounds = [0, *cuts.tolist(), len(sp)]
        return [(int(sp[a]), order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def read_strided(self, addr: int, counts: Any, strides: Any, esize: int) -> np.ndarray:
        """Elements of `esize` bytes at addr + sum(i_d * strides[d]) for i < counts (outermost first).

        Strides are in bytes and may be zero or negative. Returns a new uint8 array of shape
        (*counts, esize) in C order.
        """
        cs, ss, lo, hi, contiguous = self._shape(counts, strides, esize)
        shape = (*cs, esize)
        total = prod(shape)
        if total == 0:
            return np.zeros(shape, dtype=np.uint8)
        lo, hi = addr + lo, addr + hi
        self._check(lo, hi)
        if contiguous:
            return self.read(addr, total).reshape(shape)
        if lo >> PAGE_BITS == (hi - 1) >> PAGE_BITS:  # within one page: view the page itself
            page = self._pages.get(lo >> PAGE_BITS)
            if page is None:
                return np.zeros(shape, dtype=np.uint8)
            view = np.ndarray(shape, dtype=np.uint8, buffer=page, offset=addr - (lo & ~_MASK),
                              strides=(*ss, 1))
            return view.copy()
        if _near(lo, hi, total):  # a dense enough span: copy it out, then view it
            view = np.ndarray(shape, dtype=np.uint8, buffer=self.read(lo, hi - lo), offset=addr - lo,
                              strides=(*ss, 1))
            return view.copy()
        if ss[-1] == esize and total // (cs[-1] * esize) <= _ROW_LOOP:
            rows = np.zeros((total // (cs[-1] * esize), cs[-1] * esize), dtype=np.uint8)
            for i, idx in enumerate(np.ndindex(*cs[:-1])):
                rows[i] = self.read(addr + sum(j * s for j, s in zip(idx, ss, strict=False)), cs[-1] * esize)
            return rows.reshape(shape)
        addrs = self._byte_addrs(addr, cs, ss, esize)
        out = np.zeros(total, dtype=np.uint8)
        for p, pos in self._groups(addrs):
            page = self._pages.get(p)
            if page is not None:
                out[pos] = page[addrs[pos] & _MASK]
        return out.reshape(shape)

    def write_strided(self, addr: int, counts: Any, strides: Any, esize: int, data: Any) -> None:
        """Write `data` (prod(counts) * esize bytes, C order) to the elements `read_strided` would read.

        Where zero or overlapping strides make elements alias, which write wins is unspecified.
        """
        cs, ss, lo, hi, contiguous = self._shape(counts, strides, esize)
        if 0 not in cs:
            lo, hi = addr + lo, addr + hi
            self._check(lo, hi)
        shape = (*cs, esize)
        total = prod(shape)
        buf = _as_bytes(data)
        if buf.size != total:
            raise ValueError(f"write_strided of counts {cs} x {esize} B needs {total} bytes, got {buf.size}")
        if total == 0:
            return
        if contiguous:
            self.write(addr, buf)
            return
        src = buf.reshape(shape)
        if lo >> PAGE_BITS == (hi - 1) >> PAGE_BITS:
            page = self._page(lo >> PAGE_BITS)
            view = np.ndarray(shape, dtype=np.uint8, buffer=page, offset=addr - (lo & ~_MASK),
                              strides=(*ss, 1))
            view[...] = src
            return
        if _near(lo, hi, total):
            span = self.read(lo, hi - lo)
            view = np.ndarray(shape, dtype=np.uint8, buffer=span, offset=addr - lo, strides=(*ss, 1))
            view[...] = src
            self.write(lo, span)
            return
        if ss[-1] == esize and total // (cs[-1] * esize) <= _ROW_LOOP:
            rows = src.reshape(-1, cs[-1] * esize)
            for i, idx in enumerate(np.ndindex(*cs[:-1])):
                self.write(addr + sum(j * s for j, s in zip(idx, ss, strict=False)), rows[i])
            return
        addrs = self._byte_addrs(addr, cs, ss, esize)
        for p, pos in self._groups(addrs):
            self._page(p)[addrs[pos] & _MASK] = buf[pos]
