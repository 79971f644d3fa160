"""Data-movement handlers: dmadim, dmald, dmast, dmagat, put, signal.

Every transfer computes its timing at issue (the instruction's start cycle) through `runtime_emu.dram.Dram`
and `runtime_emu.noc.Network`, snapshots its source data at issue, and schedules completion events that
write the destination and raise semaphores. While a transfer is in flight its SRAM destination is
*incoming* and its SRAM source *outgoing* (see `runtime_emu.memory`), for race detection.

DMA shape: `dmadim d, count, sstride=, dstride=, padlo=, padhi=` sets dimension d (0 innermost) of the core's
DMA shape registers; a DMA uses dimensions 0..ndim-1. Source element i (per dimension) is read at
src + sum(i_d * sstride_d); the destination has padlo + count + padhi positions per dimension at
dst + sum(j_d * dstride_d), source element i landing at j = i + padlo, and every padding position holding
the `pad` value encoded as `dt` (which must then be esize bytes wide). `dmast` does not pad.
"""

from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np

from isa import formats
from isa.dtypes import DType
from isa.table import Cast, Instr
from runtime_emu.core import Core, Handler
from runtime_emu.dram import DramBoundsError
from runtime_emu.memory import Fault, Region, span_of
from runtime_emu.semantics.common import raiser
from runtime_emu.traps import TrapKind

if TYPE_CHECKING:
    from runtime_emu.emulator import Emulator

DMA, NET = 1, 2  # completion kinds, for the stall cause of a wait

_GATHER_SPAN = 64 << 20  # a gather whose rows span at most this is read as one block
_CACHE_LIMIT = 1 << 16  # cached DMA shapes


def _dmadim(core: Core, ops: tuple[int, tuple[int, int, int, int, int]], pc: int, t: int) -> int:
    core.dims[ops[0]] = ops[1]
    return pc + 1


class _Shape:
    """A DMA's shape registers worked out once per (ndim, esize, registers): most DMAs repeat a few."""

    __slots__ = ("counts", "sstr", "dstr", "plo", "phi", "padded", "nbytes", "dcounts", "sspan", "dspan",
                 "pspan", "inner")

    def __init__(self, dims: list[tuple[int, int, int, int, int]], esize: int) -> None:
        self.counts = counts = tuple(d[0] for d in dims)
        self.sstr = tuple(d[1] for d in dims)
        self.dstr = tuple(d[2] for d in dims)
        self.plo = tuple(d[3] for d in dims)
        self.phi = tuple(d[4] for d in dims)
        self.padded = any(self.plo) or any(self.phi)
        self.nbytes = prod(counts) * esize
        # a load's destination: padlo + count + padhi positions per dimension
        self.dcounts = tuple(c + a + b for c, a, b in zip(counts, self.plo, self.phi, strict=True))
        self.sspan = span_of(counts, self.sstr, esize)  # spans relative to the address, as Region has them
        self.dspan = span_of(counts, self.dstr, esize)
        self.pspan = span_of(self.dcounts, self.dstr, esize)
        self.inner = tuple(slice(a, a + c) for a, c in zip(self.plo, counts, strict=True))


def _shape(core: Core, ndim: int, esize: int) -> _Shape:
    """The first `ndim` DMA dimensions, outermost first (cached on the emulator)."""
    key = (ndim, esize, *core.dims)
    shapes = core.emu.scratch.setdefault("dma shapes", {})
    sh: _Shape | None = shapes.get(key)
    if sh is None:
        dims = core.dims[ndim - 1::-1]
        counts = tuple(d[0] for d in dims)
        if 0 in counts:
            d = ndim - 1 - counts.index(0)
            raise Fault(TrapKind.BAD_OPERAND, f"DMA dimension {d} has count 0: set it with dmadim first")
        if len(shapes) >= _CACHE_LIMIT:
            shapes.clear()
        sh = shapes[key] = _Shape(dims, esize)
    return sh


def _dmald(core: Core, ops: tuple[Any, ...], pc: int, t: int) -> int:
    rs, rm, esize, ndim, sem, pad, dt = ops
    emu = core.emu
    regs = core.regs
    src, dst = regs[rm], regs[rs]
    sh = _shape(core, ndim, esize)
    padded = sh.padded
    if padded and dt.itemsize != esize:
        raise Fault(TrapKind.BAD_OPERAND, f"the padding value's type {dt.asm} is {dt.itemsize} bytes, "
                                          f"not the element size {esize}")
    port = emu.dram_span(src + sh.sspan[0], src + sh.sspan[1], "DMA load source")
    region = Region(dst, sh.dcounts, sh.dstr, esize, sh.pspan)
    nbytes = sh.nbytes
    timing = emu.timing_only
    sram = core.sram
    if timing:
        sram.check(region.lo, region.hi, "DMA load destination")
    else:
        sram.access(region, True, "DMA load destination")
    arrival = emu.dram.load_at(port, core.rc, nbytes, t)[1]
    if emu.trace is not None:
        emu.trace_transfer("dma_load", emu.port_name(port), core.id, t, arrival, nbytes)
    if timing:
        emu.complete(arrival, core, sem, DMA)
        return pc + 1
    try:
        data = emu.dram_mem.read_strided(src, sh.counts, sh.sstr, esize)
    except DramBoundsError as e:
        raise Fault(TrapKind.OOB_DRAM, str(e)) from None

    if padded:
        inner = sh.inner

        def write() -> None:
            view = sram.strided(region)
            view[...] = pad
            view[inner] = data
    else:
        def write() -> None:
            sram.strided(region)[...] = data

    emu.complete(arrival, core, sem, DMA, write, pin=emu.pend_in(core, region, arrival, "a DMA load"))
    return pc + 1


def _dmast(core: Core, ops: tuple[int, int, int, int, int], pc: int, t: int) -> int:
    rm, rs, esize, ndim, sem = ops
    emu = core.emu
    regs = core.regs
    dst, src = regs[rm], regs[rs]
    sh = _shape(core, ndim, esize)
    if sh.padded:
        raise Fault(TrapKind.BAD_OPERAND, "dmast does not pad: set padlo=0 and padhi=0 in its dmadim")
    counts, dstr = sh.counts, sh.dstr
    port = emu.dram_span(dst + sh.dspan[0], dst + sh.dspan[1], "DMA store destination")
    region = Region(src, counts, sh.sstr, esize, sh.sspan)
    nbytes = sh.nbytes
    timing = emu.timing_only
    if timing:
        core.sram.check(region.lo, region.hi, "DMA store source")
    else:
        core.sram.access(region, False, "DMA store source")
    source_free, done = emu.dram.store_at(port, core.rc, nbytes, t)
    if emu.trace is not None:
        emu.trace_transfer("dma_store", core.id, emu.port_name(port), t, done, nbytes)
    if timing:
        emu.complete(done, core, sem, DMA)
        return pc + 1
    data = core.sram.strided(region).copy()
    mem = emu.dram_mem

    def write() -> None:
        mem.write_strided(dst, counts, dstr, esize, data)

    emu.complete(source_free, core, None, 0, pout=emu.pend_out(core, region, source_free, "a DMA store"))
    emu.complete(done, core, sem, DMA, write)
    return pc + 1


def _dmagat(core: Core, ops: tuple[int, ...], pc: int, t: int) -> int:
    rs, rm, ri, n, rowbytes, tstride, sem = ops
    emu = core.emu
    regs = core.regs
    dst, table, iaddr = regs[rs], regs[rm], regs[ri]
    port = emu.dram_port(table, (1,), (0,), rowbytes, "DMA gather table")
    nbytes = n * rowbytes
    region = Region(dst, (1,), (0,), nbytes)
    iregion = Region(iaddr, (1,), (0,), 4 * n)
    sram = core.sram
    if emu.timing_only:
        sram.check(iregion.lo, iregion.hi, "DMA gather indices")
        sram.check(region.lo, region.hi, "DMA gather destination")
        d = emu.dram.load(port, core.rc, nbytes, t)
        arrival = d.arrivals[core.rc]
        emu.trace_transfer("dma_gather", emu.port_name(port), core.id, t, arrival, nbytes)
        emu.complete(arrival, core, sem, DMA)
        return pc + 1
    sram.access(iregion, False, "DMA gather indices")
    sram.access(region, True, "DMA gather destination")
    idx = np.ndarray((n,), dtype=np.int32, buffer=sram.buf, offset=iaddr).astype(np.int64)
    addrs = table + idx * tstride
    base, end = emu.port_range(port)
    bad = np.flatnonzero((addrs < base) | (addrs + rowbytes > end))
    if bad.size:
        i = int(bad[0])
        raise Fault(TrapKind.OOB_DRAM, f"gather index {int(idx[i])} (position {i}) reads DRAM "
                    f"[{int(addrs[i]):#x}, {int(addrs[i]) + rowbytes:#x}), outside port "
                    f"{emu.port_name(port)} [{base:#x}, {end:#x})")
    mem = emu.dram_mem
    lo, hi = int(addrs.min()), int(addrs.max()) + rowbytes
    if hi - lo <= _GATHER_SPAN:
        block = mem.read(lo, hi - lo)
        data = block[(addrs - lo)[:, None] + np.arange(rowbytes)]
    else:
        data = np.stack([mem.read(int(a), rowbytes) for a in addrs])
    d = emu.dram.load(port, core.rc, nbytes, t)
    arrival = d.arrivals[core.rc]
    emu.trace_transfer("dma_gather", emu.port_name(port), core.id, t, arrival, nbytes)

    def write() -> None:
        sram.buf[dst:dst + nbytes] = data.reshape(-1)

    emu.complete(arrival, core, sem, DMA, write, pin=emu.pend_in(core, region, arrival, "a DMA gather"))
    return pc + 1


def _put(core: Core, ops: tuple[Any, ...], pc: int, t: int) -> int:
    rc, rd, rs, rows, nbytes, ss, ds, cast, seml, semr, first, span, where = ops
    emu = core.emu
    regs = core.regs
    target = regs[rc]
    hit = emu._casts.get((core.id, target, where))
    dsts, rcs = hit if hit is not None else emu.cast_targets(core, target, cast, first, span)
    src, dst = regs[rs], regs[rd]
    sregion = Region(src, (rows,), (ss,), nbytes)
    dregion = Region(dst, (rows,), (ds,), nbytes)
    total = rows * nbytes
    timing = emu.timing_only or total == 0  # a zero-byte put moves no data: only its semaphores count
    if total == 0:
        pass
    elif timing:
        core.sram.check(sregion.lo, sregion.hi, "put source")
        for c in dsts:
            c.sram.check(dregion.lo, dregion.hi, f"put destination on core {c.id}")
    else:
        core.sram.access(sregion, False, "put source")
        for c in dsts:
            c.sram.access(dregion, True, f"put destination on core {c.id}")
    if len(rcs) == 1:
        source_free, arrival = emu.network.unicast(core.rc, rcs[0], total, t)
        arrivals = [arrival]
    else:
        d = emu.network.send(core.rc, rcs, total, t)
        source_free = d.source_free
        arrivals = [d.arrivals[c.rc] for c in dsts]
    tr = emu.trace
    if timing:
        emu.complete(source_free, core, seml, NET)
        for c, arrival in zip(dsts, arrivals, strict=True):
            if tr is not None:
                emu.trace_transfer("put", core.id, c.id, t, arrival, total)
            emu.complete(arrival, c, semr, NET, issued=t)
        return pc + 1
    data = core.sram.strided(sregion).copy()
    emu.complete(source_free, core, seml, NET,
                 pout=emu.pend_out(core, sregion, source_free, f"a put to core {dsts[0].id}"))
    what = f"a put from core {core.id}"
    for c, arrival in zip(dsts, arrivals, strict=True):
        if tr is not None:
            emu.trace_transfer("put", core.id, c.id, t, arrival, total)
        dsram = c.sram

        def write(dsram: Any = dsram) -> None:
            dsram.strided(dregion)[...] = data

        emu.complete(arrival, c, semr, NET, write, issued=t, pin=emu.pend_in(c, dregion, arrival, what))
    return pc + 1


def _signal(core: Core, ops: tuple[int, int, Cast, int, int, tuple[int, int, int]], pc: int, t: int) -> int:
    rc, sem, cast, first, span, where = ops
    emu = core.emu
    target = core.regs[rc]
    hit = emu._casts.get((core.id, target, where))  # Emulator.cast_targets' cache
    dsts, rcs = hit if hit is not None else emu.cast_targets(core, target, cast, first, span)
    tr = emu.trace
    if len(rcs) == 1:  # one destination (most signals): the network's unicast, without a Delivery
        c = dsts[0]
        arrival = emu.network.unicast(core.rc, rcs[0], 0, t)[1]
        if tr is not None:
            emu.trace_transfer("signal", core.id, c.id, t, arrival, 0)
        emu.complete(arrival, c, sem, NET, issued=t)
        return pc + 1
    d = emu.network.send(core.rc, rcs, 0, t)
    for c in dsts:
        arrival = d.arrivals[c.rc]
        if tr is not None:
            emu.trace_transfer("signal", core.id, c.id, t, arrival, 0)
        emu.complete(arrival, c, sem, NET, issued=t)
    return pc + 1


def _sem_check(emu: Emulator, *sems: int) -> str | None:
    n = emu.machine.semaphores
    for s in sems:
        if s >= n:
            return f"semaphore {s} does not exist: the machine has {n} per core (0..{n - 1})"
    return None


def prepare(ins: Instr, emu: Emulator, ncode: int) -> tuple[Handler, Any]:
    """The handler and operands of a data-movement instruction."""
    sem = ins.spec.semantics
    d = ins.as_dict()
    bad = TrapKind.BAD_OPERAND
    if sem == "dmadim":
        return _dmadim, (d["dim"], (d["count"], d["sstride"], d["dstride"], d["padlo"], d["padhi"]))
    if sem in ("dmald", "dmast"):
        if d["esize"] not in (1, 2, 4, 8):
            return raiser(bad, f"DMA element size {d['esize']} is not 1, 2, 4 or 8 bytes"), None
        if not 1 <= d["ndim"] <= 4:
            return raiser(bad, f"a DMA uses 1 to 4 dimensions, not {d['ndim']}"), None
        if msg := _sem_check(emu, d["sem"]):
            return raiser(bad, msg), None
        if sem == "dmast":
            return _dmast, (d["rm"], d["rs"], d["esize"], d["ndim"], d["sem"])
        dt: DType = d["dt"]
        try:
            pad = formats.encode([d["pad"]], dt).view(np.uint8)
        except Exception as e:  # noqa: BLE001 - a NaN pad for a CFP type, for one
            return raiser(TrapKind.FORMAT, f"padding value {d['pad']} as {dt.asm}: {e}"), None
        return _dmald, (d["rs"], d["rm"], d["esize"], d["ndim"], d["sem"], pad, dt)
    if sem == "dmagat":
        if d["n"] == 0 or d["rowbytes"] == 0:
            return raiser(bad, "a DMA gather needs n > 0 rows of rowbytes > 0 bytes"), None
        if msg := _sem_check(emu, d["sem"]):
            return raiser(bad, msg), None
        return _dmagat, (d["rs"], d["rm"], d["ri"], d["n"], d["rowbytes"], d["tstride"], d["sem"])
    if sem == "put":
        if msg := _sem_check(emu, d["seml"], d["semr"]):
            return raiser(bad, msg), None
        return _put, (d["rc"], d["rd"], d["rs"], d["rows"], d["bytes"], d["ss"], d["ds"], d["cast"],
                      d["seml"], d["semr"], d["first"], d["span"], (d["cast"].value, d["first"], d["span"]))
    if sem == "signal":
        if msg := _sem_check(emu, d["sem"]):
            return raiser(bad, msg), None
        return _signal, (d["rc"], d["sem"], d["cast"], d["first"], d["span"],
                         (d["cast"].value, d["first"], d["span"]))
    raise AssertionError(f"no data-movement handler for {ins.spec.mnemonic}")
