"""Per-core SRAM: lazily allocated bytes, bounds checks, the high-water mark and race detection.

A core's SRAM is one `numpy.uint8` array of `machine.sram_bytes`, created by `np.zeros` on first touch (the
OS backs the pages lazily), so a machine of thousands of cores costs host memory only for what runs.

Race detection: each SRAM keeps two small dicts of pending `Region`s, *incoming* (bytes a put or DMA has
yet to write) and *outgoing* (the source of a put or DMA store that has not left yet). Every instruction
access checks them: any access overlapping an incoming region, or a write overlapping an outgoing one, is
a RACE. The check is a span comparison when nothing is pending (the common case, a dict test), then an
exact test of the two access patterns' contiguous runs when the spans meet, so strided transfers into
interleaved columns of one matrix do not raise false alarms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime_emu.traps import TrapKind

_U8 = np.dtype(np.uint8)
_MAX_RUNS = 1 << 20  # beyond this many contiguous runs, a region is treated as its whole span


def span_of(counts: tuple[int, ...], strides: tuple[int, ...], esize: int) -> tuple[int, int]:
    """(lo, hi) of a strided access's bytes relative to its address: [addr + lo, addr + hi) is its span."""
    lo = hi = 0
    for c, s in zip(counts, strides, strict=True):
        ext = (c - 1) * s
        if ext < 0:
            lo += ext
        else:
            hi += ext
    return lo, hi + esize


class Fault(Exception):
    """A fault raised by an instruction handler; the engine adds core, pc, instruction and cycle."""

    def __init__(self, kind: TrapKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Region:
    """A strided set of SRAM bytes: elements of `esize` bytes at addr + sum(i_d * strides[d]), i < counts.

    `counts` and `strides` are outermost first; strides may be zero or negative. [lo, hi) is the span;
    `span`, when given, is (lo - addr, hi - addr) already known for these counts and strides (`span_of`).
    """

    __slots__ = ("addr", "counts", "strides", "esize", "lo", "hi", "_runs")

    def __init__(self, addr: int, counts: tuple[int, ...], strides: tuple[int, ...], esize: int,
                 span: tuple[int, int] | None = None) -> None:
        self.addr = addr
        self.counts = counts
        self.strides = strides
        self.esize = esize
        lo, hi = span if span is not None else span_of(counts, strides, esize)
        self.lo, self.hi = addr + lo, addr + hi
        self._runs: tuple[np.ndarray, int] | None = None

    def __repr__(self) -> str:
        return (f"Region(addr={self.addr}, counts={self.counts}, strides={self.strides}, esize={self.esize}, "
                f"lo={self.lo}, hi={self.hi})")

    def runs(self) -> tuple[np.ndarray, int]:
        """Sorted start addresses of the region's contiguous runs, and the run width in bytes."""
        if self._runs is None:
            width = self.esize
            dims = list(zip(self.counts, self.strides, strict=True))
            while dims:  # fold the innermost dimensions that continue the run (or repeat it)
                c, s = dims[-1]
                if c == 1 or s == 0:
                    dims.pop()
                elif s == width:
                    width *= c
                    dims.pop()
                else:
                    break
            dims = [(c, s) for c, s in dims if c != 1 and s != 0]
            n = 1
            for c, _ in dims:
                n *= c
            if n > _MAX_RUNS:
                starts, width = np.array([self.lo], dtype=np.int64), self.hi - self.lo
            else:
                starts = np.array([self.addr], dtype=np.int64)
                for c, s in dims:
                    starts = (starts[:, None] + np.arange(c, dtype=np.int64) * s).ravel()
                starts.sort()
            self._runs = (starts, width)
        return self._runs

    def overlaps(self, other: Region) -> bool:
        """Whether any byte of `other` is a byte of this region."""
        if self.hi <= other.lo or other.hi <= self.lo:
            return False
        sa, wa = self.runs()
        sb, wb = other.runs()
        if len(sa) == 1 and len(sb) == 1:
            return True
        if len(sa) > len(sb):
            sa, wa, sb, wb = sb, wb, sa, wa
        # run [s, s + wa) meets some run [b, b + wb) iff some b lies in (s - wb, s + wa)
        idx = np.searchsorted(sb, sa - wb, side="right")
        ok = idx < len(sb)
        if not ok.any():
            return False
        return bool((sb[idx[ok]] < sa[ok] + wa).any())


@dataclass
class Pending:
    """A transfer's SRAM region that is not settled yet: until `until`, and a description for messages."""

    region: Region
    until: int
    what: str


def tile_region(addr: int, rows: int, cols: int, row_stride: int, col_stride: int, itemsize: int) -> Region:
    """The bytes of a rows x cols tile view (col_stride is the itemsize, or 0 when broadcast)."""
    return Region(addr, (rows, cols), (row_stride, col_stride), itemsize)


class Sram:
    """One core's scratchpad: bytes, high-water mark, pending transfer regions."""

    __slots__ = ("size", "_buf", "high", "incoming", "outgoing")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf: np.ndarray | None = None
        self.high = 0
        self.incoming: dict[int, Pending] = {}
        self.outgoing: dict[int, Pending] = {}

    @property
    def allocated(self) -> bool:
        return self._buf is not None

    @property
    def buf(self) -> np.ndarray:
        """The SRAM bytes (allocated on first use)."""
        b = self._buf
        if b is None:
            b = self._buf = np.zeros(self.size, dtype=np.uint8)
        return b

    # -- checks -----------------------------------------------------------------------------------
    def check(self, lo: int, hi: int, what: str) -> None:
        """Bounds-check the span [lo, hi) and raise the high-water mark; OOB_SRAM outside SRAM."""
        if lo < 0 or hi > self.size:
            raise Fault(TrapKind.OOB_SRAM, f"{what} [{lo:#x}, {hi:#x}) is outside SRAM [0, {self.size:#x})")
        if hi > self.high:
            self.high = hi

    def meets(self, lo: int, hi: int, write: bool) -> bool:
        """Whether [lo, hi) meets the span of an incoming pending region (or, for a write, an outgoing one):
        only then can an access within it race (`race` decides exactly)."""
        for p in self.incoming.values():
            r = p.region
            if r.lo < hi and lo < r.hi:
                return True
        if write:
            for p in self.outgoing.values():
                r = p.region
                if r.lo < hi and lo < r.hi:
                    return True
        return False

    def race(self, region: Region, write: bool, what: str) -> None:
        """RACE if `region` meets an incoming pending region (or, for a write, an outgoing one)."""
        if not self.meets(region.lo, region.hi, write):
            return
        for p in self.incoming.values():
            if region.overlaps(p.region):
                raise Fault(TrapKind.RACE, f"{what} [{region.lo:#x}, {region.hi:#x}) "
                            f"{'writes' if write else 'reads'} bytes that {p.what} has not written yet "
                            f"(pending until cycle {p.until}); wait on its semaphore first")
        if write:
            for p in self.outgoing.values():
                if region.overlaps(p.region):
                    raise Fault(TrapKind.RACE, f"{what} [{region.lo:#x}, {region.hi:#x}) overwrites the "
                                f"source of {p.what} before it has left (at cycle {p.until}); wait on its "
                                "local semaphore first")

    def access(self, region: Region, write: bool, what: str) -> None:
        """Bounds, high-water mark and race checks of an access to `region`."""
        self.check(region.lo, region.hi, what)
        if self.incoming or (write and self.outgoing):
            self.race(region, write, what)

    # -- tiles ------------------------------------------------------------------------------------
    def tile(self, addr: int, rows: int, cols: int, row_stride: int, col_stride: int, dtype: np.dtype,
             write: bool, what: str) -> np.ndarray:
        """A rows x cols numpy view of the SRAM at addr (strides in bytes), after every check."""
        itemsize = dtype.itemsize
        hi = addr + (rows - 1) * row_stride + (cols - 1) * col_stride + itemsize
        if addr < 0 or hi > self.size:
            raise Fault(TrapKind.OOB_SRAM, f"{what} tile [{addr:#x}, {hi:#x}) is outside SRAM "
                        f"[0, {self.size:#x})")
        if hi > self.high:
            self.high = hi
        # [addr, hi) is the tile's span for the strides handlers give (>= 0): a Region only when it meets one
        if (self.incoming or (write and self.outgoing)) and (
                row_stride < 0 or col_stride < 0 or self.meets(addr, hi, write)):
            self.race(tile_region(addr, rows, cols, row_stride, col_stride, itemsize), write, f"{what} tile")
        buf = self._buf
        # positional arguments: (shape, dtype, buffer, offset, strides)
        return np.ndarray((rows, cols), dtype, self.buf if buf is None else buf, addr, (row_stride, col_stride))

    def strided(self, region: Region) -> np.ndarray:
        """A uint8 view of shape (*counts, esize) over `region` (no checks: call `access` first)."""
        buf = self._buf
        return np.ndarray((*region.counts, region.esize), _U8, self.buf if buf is None else buf, region.addr,
                          (*region.strides, 1))
