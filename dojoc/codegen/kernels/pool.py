"""Pooling: max_pool2d (values and indices), avg_pool2d, adaptive_avg_pool2d.

The planes (N x C) of an NCHW input are independent. Work items are (plane block, output-row block)
pairs; an item's tiles are [planes, rows, OW] laid out densely, i.e. 2-D tiles of `planes` rows by
`rows * OW` columns, so one SIMD instruction covers the whole item and a per-position constant row
(indices, divisors) broadcasts over the planes with row stride 0.

max_pool2d and avg_pool2d walk the kernel taps (kh, kw): for each tap one 3-D DMA brings the shifted,
strided window x[p, oh*s - pad + kh*d, ow*s - pad + kw*d] of the item into SRAM, padding the
positions that fall outside the input (-inf for max, 0 for avg) with the DMA's own padding, double
buffered. Max keeps a running max (vmax) and the winning flat index h * W + w: `vgt` marks where the
new tap wins strictly (so the first maximum wins, as torch), `vsel` takes the tap's index row, a
compile-time constant in DRAM. Avg sums the taps in FP32 and divides by the divisor (a scalar, or a
constant row when it varies with the position: count_include_pad=False, ceil mode).

adaptive_avg_pool2d has windows [floor(i*H/OH), ceil((i+1)*H/OH)) that do not form a stride, so it sums
the W direction with the matrix unit (X [planes*H, W] @ B [W, OW] with B a 0/1 window matrix, exact
in every operand type, FP32 accumulation), then the H direction with row adds, and divides by the
window sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import prod

import numpy as np

from dojoc.codegen.builder import R_A, R_B, R_C, R_D, CoreCode
from dojoc.codegen.context import MAX_COLS, MAX_ROWS, Ctx, load_view, split, store_view
from dojoc.codegen.kernels.window import Phases
from dojoc.codegen.registry import kernel
from dojoc.codegen.sems import POOL
from dojoc.codegen.sram import ALIGN
from dojoc.codegen.view import Transfer, View
from dojoc.errors import CompileError, SramOverflowError
from dojoc.ir.graph import Node
from dojoc.ir.ops import Op
from isa.dtypes import DType

F32 = DType.F32
SEM_LOAD, SEM_STORE, SEM_TAP = POOL.id("load"), POOL.id("store"), POOL.ids("tap")  # taps: one per buffer
INT_LOWEST = float(-(2**31))
MAX_PAD = 255  # the dmadim padlo/padhi fields


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class _Geom:
    """A pooling window: input H x W, output OH x OW, kernel, stride, padding, dilation (h, w)."""

    H: int
    W: int
    OH: int
    OW: int
    k: tuple[int, int]
    s: tuple[int, int]
    p: tuple[int, int]
    d: tuple[int, int]

    @property
    def taps(self) -> list[tuple[int, int]]:
        return [(kh, kw) for kh in range(self.k[0]) for kw in range(self.k[1])]

    def axis(self, ax: int, o0: int, on: int, tap: int) -> tuple[int, int, int, int] | None:
        """Outputs [o0, o0 + on) along axis `ax` read input o*s - p + tap*d: (first input index, count of
        outputs inside the input, outputs padded before, after), or None when all fall outside."""
        size, s = (self.H, self.W)[ax], self.s[ax]
        off = tap * self.d[ax] - self.p[ax]
        lo = max(o0, -(off // s))  # first o with o*s + off >= 0
        hi = min(o0 + on, (size - 1 - off) // s + 1)  # past the last o with o*s + off <= size - 1
        if hi <= lo:
            return None
        return lo * s + off, hi - lo, lo - o0, o0 + on - hi

    def flat_index(self, kh: int, kw: int) -> np.ndarray:
        """[OH * OW] flat input index ih * W + iw that tap (kh, kw) reads for each output position."""
        ih = np.arange(self.OH) * self.s[0] - self.p[0] + kh * self.d[0]
        iw = np.arange(self.OW) * self.s[1] - self.p[1] + kw * self.d[1]
        return (ih[:, None] * self.W + iw[None, :]).reshape(-1)


@dataclass(frozen=True)
class _Item:
    """Planes [p0, p0 + pn) of group view `x` [P, H, W], output rows [r0, r0 + rn); `outs` are the
    group's output views [P, OH, OW]."""

    x: View
    outs: tuple[View, ...]
    p0: int
    pn: int
    r0: int
    rn: int

    def out_box(self, i: int) -> View:
        return self.outs[i].slice(0, self.p0, self.p0 + self.pn).slice(1, self.r0, self.r0 + self.rn)


def _groups(x: View, outs: list[View]) -> list[tuple[View, tuple[View, ...]]]:
    """The planes as [P, H, W] views: N x C merged when the input's strides allow, else one per n."""
    N, C, H, W = x.shape
    merged = x.reshape((N * C, H, W))
    if merged is not None:
        return [(merged, tuple(_planes(o) for o in outs))]
    return [(x.select(0, n), tuple(o.select(0, n) for o in outs)) for n in range(N)]


def _planes(o: View) -> View:
    v = o.reshape((o.shape[0] * o.shape[1],) + o.shape[2:])  # outputs are dense: always a view
    assert v is not None
    return v


def _items(ctx: Ctx, node: Node, x: View, outs: list[View], OH: int, OW: int, cost_per_out: float,
           fits: int, per_plane: int, per_row: int, fixed: int, dram_bytes: float = 0.0) \
        -> tuple[list[_Item], list[int]]:
    """Work items and the cores of the region. A tile of pn planes and rn rows needs
    fixed + rn * per_row + pn * rn * per_plane bytes (per_row and per_plane per output row of OW); the
    op moves `dram_bytes` between DRAM and its cores (the region's prediction counts them)."""
    groups = _groups(x, outs)
    P = sum(g.shape[0] for g, _ in groups)
    if OW > MAX_COLS:
        raise node.error(f"pooling output width {OW} above {MAX_COLS} is not supported", CompileError)
    cores = ctx.region("pool", P * OH * OW * cost_per_out, P * OH, axis="planes_rows", dram_bytes=dram_bytes)
    ncores = len(cores)
    row_blocks = max(-(-OH // min(OH, fits)), min(OH, -(-ncores // P)))
    rn = -(-OH // row_blocks)
    budget = min(s.scratch_free() for s in ctx.sram.values())
    while fixed + rn * per_row + rn * per_plane > budget and rn > 1:
        rn = -(-rn // 2)
    room = (budget - fixed - rn * per_row) // (rn * per_plane)
    if room < 1:
        raise SramOverflowError(f"{node.op} {node.name}: one output row of one plane of {node.inputs[0]} "
                                f"({node.inputs[0].type}) needs more than the {budget:,} bytes of SRAM scratch "
                                "free; use a machine with more SRAM (--set sram_bytes=...)")
    want_pb = -(-P // max(1, -(-ncores // -(-OH // rn))))
    pb = max(1, min(room, MAX_ROWS, want_pb))
    items = [_Item(g, o, p0, min(pb, g.shape[0] - p0), r0, min(rn, OH - r0))
             for g, o in groups for p0 in range(0, g.shape[0], pb) for r0 in range(0, OH, rn)]
    ctx.shrink_region(len(items))
    return items, cores[:len(items)]


def _load_tap(cc: CoreCode, geo: _Geom, it: _Item, kh: int, kw: int, dst: int, sem: int, pad: float,
              dt: DType) -> int:
    """DMA tap (kh, kw) of an item into the dense tile at `dst`, padding with `pad`; returns the DMAs
    issued (0 when the tap lies wholly in the padding and is filled instead)."""
    es, OW = dt.itemsize, geo.OW
    rows, cols = geo.axis(0, it.r0, it.rn, kh), geo.axis(1, 0, OW, kw)
    if rows is None or cols is None:
        cc.emit("vfill", rd=cc.reg(R_D, dst), imm=pad, rows=it.pn, cols=it.rn * OW, sd=it.rn * OW * es, dt=dt)
        return 0
    (ih, nh, lh, hh), (iw, nw, lw, hw) = rows, cols
    if max(lh, hh, lw, hw) > MAX_PAD:
        raise CompileError(f"pooling padding of {max(lh, hh, lw, hw)} positions exceeds the DMA's {MAX_PAD}")
    sP, sH, sW = it.x.strides
    src = it.x.base + it.p0 * sP + ih * sH + iw * sW
    t = Transfer(src, dst, ((it.pn, sP, it.rn * OW * es), (nh, geo.s[0] * sH, OW * es), (nw, geo.s[1] * sW, es)),
                 es)
    cc.dma_load(t, sem, pads=((0, 0), (lh, hh), (lw, hw)), pad=pad, dt=dt)
    return 1


class _Taps:
    """Double-buffered tap loading: tap i goes to buffer i % 2 (tap 0 optionally elsewhere)."""

    def __init__(self, cc: CoreCode, geo: _Geom, it: _Item, bufs: tuple[int, int], pad: float, dt: DType):
        self.cc, self.geo, self.it, self.bufs, self.pad, self.dt = cc, geo, it, bufs, pad, dt
        self.taps = geo.taps
        self.issued = [0, 0]

    def issue(self, i: int, dst: int | None = None, sem: int | None = None) -> int:
        if i >= len(self.taps):
            return 0
        b = i % 2
        kh, kw = self.taps[i]
        if dst is not None:
            assert sem is not None
            return _load_tap(self.cc, self.geo, self.it, kh, kw, dst, sem, self.pad, self.dt)
        self.issued[b] = _load_tap(self.cc, self.geo, self.it, kh, kw, self.bufs[b], SEM_TAP[b], self.pad, self.dt)
        return self.issued[b]

    def ready(self, i: int) -> int:
        """Wait for tap i's buffer and return its address."""
        b = i % 2
        self.cc.wait(SEM_TAP[b], self.issued[b])
        return self.bufs[b]


def _geom(node: Node, dilation: tuple[int, int]) -> _Geom:
    a = node.attrs
    _, _, H, W = node.inputs[0].type.shape
    OH, OW = node.outputs[0].type.shape[2:]
    return _Geom(H, W, OH, OW, tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]), dilation)


@kernel(Op.MAX_POOL2D)
def max_pool2d(ctx: Ctx, node: Node) -> None:
    geo = _geom(node, tuple(node.attrs["dilation"]))
    x = ctx.views[node.inputs[0]]
    vals, idxs = ctx.views[node.outputs[0]], ctx.views[node.outputs[1]]
    # inference reads only the values: the indices are computed and stored when something reads them
    indices = bool(ctx.users.get(node.outputs[1])) or node.outputs[1] in ctx.graph.outputs
    if not indices:
        _max_staged(ctx, node, geo, x, vals)
        return
    dt = x.dtype
    es, T, OW = dt.itemsize, len(geo.taps), geo.OW
    pad = -math.inf if dt.is_float else INT_LOWEST
    # tap t's flat input index per output position: [T, OH * OW] I32, a box of it per item
    table = ctx.weight(f"{node.name}_index", np.stack([geo.flat_index(kh, kw) for kh, kw in geo.taps]),
                       DType.I32).reshape((T, geo.OH, OW)) if indices else None
    m = ctx.machine
    passes = 3 if indices else 1  # vgt, vmax, vsel per tap, or vmax alone
    per_out = T * es * (passes / m.simd_bytes + 1 / m.link_bytes_per_cycle)  # SIMD passes and tap DMA
    outs = [vals, idxs] if indices else [vals]
    # every tap's window comes from DRAM; the values and indices go back
    moved = prod(vals.shape) * (T * es + es + (4 if indices else 0))
    items, cores = _items(ctx, node, x, outs, geo.OH, OW, per_out, MAX_COLS // OW,
                          OW * (3 * es + (5 if indices else 0)), (OW * T * 4 if indices else 0) + 3 * ALIGN,
                          5 * ALIGN, moved)
    for core, (first, count) in zip(cores, split(len(items), len(cores)), strict=False):
        cc = ctx.core(core)
        pn, rn = max(i.pn for i in items[first:first + count]), max(i.rn for i in items[first:first + count])
        e = pn * rn * OW
        sram = ctx.sram[core]
        best = sram.alloc(e * es, f"{node.name} max tile")
        cur = (sram.alloc(e * es, f"{node.name} tap tile"), sram.alloc(e * es, f"{node.name} tap tile"))
        if indices:
            idx, gt = sram.alloc(e * 4, f"{node.name} index tile"), sram.alloc(e, f"{node.name} compare tile")
            rows_t = sram.alloc(T * rn * OW * 4, f"{node.name} tap index rows")
        pending, have = 0, None  # have: the output rows whose index rows are in SRAM
        with cc.op(node.name, node.source):
            for it in items[first:first + count]:
                cols = it.rn * OW
                taps = _Taps(cc, geo, it, cur, pad, dt)
                cc.wait(SEM_STORE, pending)  # best and idx are about to be overwritten
                n = taps.issue(0, best, SEM_LOAD)
                if table is not None and have != (it.r0, it.rn):
                    n += load_view(cc, table.slice(1, it.r0, it.r0 + it.rn), rows_t, SEM_LOAD)
                    have = (it.r0, it.rn)
                taps.issue(1)
                taps.issue(2)
                cc.wait(SEM_LOAD, n)
                tile = {"rows": it.pn, "cols": cols}
                if indices:
                    cc.emit("vmov", rd=cc.reg(R_D, idx), ra=cc.reg(R_A, rows_t), sd=cols * 4, sa=0, dt=DType.I32,
                            bca="row", **tile)
                for t in range(1, T):
                    src = taps.ready(t)
                    if indices:
                        cc.emit("vgt", rd=cc.reg(R_D, gt), ra=cc.reg(R_A, src), rb=cc.reg(R_B, best), sd=cols,
                                sa=cols * es, sb=cols * es, dt=dt, **tile)
                    cc.emit("vmax", rd=cc.reg(R_D, best), ra=cc.reg(R_A, best), rb=cc.reg(R_B, src), sd=cols * es,
                            sa=cols * es, sb=cols * es, dt=dt, **tile)
                    if indices:
                        cc.emit("vsel", rd=cc.reg(R_D, idx), rc=cc.reg(R_C, gt),
                                ra=cc.reg(R_A, rows_t + t * cols * 4), rb=cc.reg(R_B, idx), sd=cols * 4, sc=cols,
                                sa=0, sb=cols * 4, dt=DType.I32, **tile)
                    taps.issue(t + 2)
                pending = store_view(cc, best, it.out_box(0), SEM_STORE)
                if indices:
                    pending += store_view(cc, idx, it.out_box(1), SEM_STORE)
            cc.wait(SEM_STORE, pending)


def _max_staged(ctx: Ctx, node: Node, geo: _Geom, x: View, vals: View) -> None:
    """max_pool2d's values alone, each input pixel read from DRAM once (not once per tap): an item's input
    rows come in with one 3-D DMA per column phase (window.Phases: -inf where they fall outside the input),
    so every tap's window is a dense run of a phase's columns, and its rows every s_h-th staged row. Per
    output row, one vmov or vmax per tap over [planes, OW], planes a staged plane apart. Items are
    double-buffered: the next item's rows come in while this one is reduced, and each buffer's stores have
    their own semaphore."""
    dt, (kh, _), (sh, sw), (dh, _) = x.dtype, geo.k, geo.s, geo.d
    es, T, OW, OH = dt.itemsize, len(geo.taps), geo.OW, geo.OH
    pad = -math.inf if dt.is_float else INT_LOWEST
    wf = Phases.of(geo.k, geo.s, geo.d, 1, OW).cols  # the columns of a phase that the taps read
    m = ctx.machine
    per_out = T * es / m.simd_bytes + (sh * sw * wf / OW) * es / m.link_bytes_per_cycle
    moved = prod(x.shape) * es + prod(vals.shape) * es  # (a row block's halo rows aside)
    rows_per_out = sh + (kh - 1) * dh  # staged rows per output row, halo included (an upper bound)
    items, cores = _items(ctx, node, x, [vals], OH, OW, per_out, MAX_COLS // OW,
                          2 * OW * es + 2 * sw * wf * rows_per_out * es, 0, 6 * ALIGN, moved)
    stores = POOL.ids("staged_stores")  # per output buffer
    what = f"max_pool2d {node.name}"
    for core, (first, count) in zip(cores, split(len(items), len(cores)), strict=False):
        run = items[first:first + count]
        cc = ctx.core(core)
        pn, rn = max(i.pn for i in run), max(i.rn for i in run)
        ph = Phases.of(geo.k, geo.s, geo.d, rn, OW)
        plane = ph.size * es  # one plane's staged rows, every phase
        sram = ctx.sram[core]
        best = [sram.alloc(pn * rn * OW * es, f"{node.name} max tile") for _ in range(2)]
        stage = [sram.alloc(pn * plane, f"{node.name} staged rows") for _ in range(2)]
        with cc.op(node.name, node.source):
            issued, pending = [_stage(cc, geo, ph, run[0], stage[0], SEM_TAP[0], pad, dt, what), 0], [0, 0]
            for i, it in enumerate(run):
                b = i % 2
                if i + 1 < len(run):
                    issued[1 - b] = _stage(cc, geo, ph, run[i + 1], stage[1 - b], SEM_TAP[1 - b], pad, dt, what)
                cc.wait(SEM_TAP[b], issued[b])
                cc.wait(stores[b], pending[b])  # best[b]'s last stores have left
                cols = it.rn * OW * es  # the output tile's row (one plane) in bytes
                for r in range(it.rn):
                    dst = best[b] + r * OW * es
                    for t, (i_h, i_w) in enumerate(geo.taps):
                        src = stage[b] + ph.tap(r, i_h, i_w) * es
                        if t == 0:
                            cc.emit("vmov", rd=cc.reg(R_D, dst), ra=cc.reg(R_A, src), rows=it.pn, cols=OW, sd=cols,
                                    sa=plane, dt=dt)
                        else:
                            cc.emit("vmax", rd=cc.reg(R_D, dst), ra=cc.reg(R_A, dst), rb=cc.reg(R_B, src), rows=it.pn,
                                    cols=OW, sd=cols, sa=cols, sb=plane, dt=dt)
                pending[b] = store_view(cc, best[b], it.out_box(0), stores[b])
            for b in range(2):
                cc.wait(stores[b], pending[b])


def _stage(cc: CoreCode, geo: _Geom, ph: Phases, it: _Item, dst: int, sem: int, pad: float, dt: DType,
           what: str) -> int:
    """DMA an item's input rows into its staged rows at `dst`, padded with `pad`; the DMAs to wait for."""
    planes = View(it.x.base, (1, *it.x.shape), (0, *it.x.strides), dt)  # as NCHW, one image
    n, es = 0, dt.itemsize
    for f, got in enumerate(ph.loads(planes, 0, it.p0, it.pn, geo.k[0], it.r0, it.rn, 0, geo.p, dst, what)):
        if got is None:  # a phase wholly in the padding
            cc.emit("vfill", rd=cc.reg(R_D, dst + f * ph.rows * ph.cols * es), imm=pad, rows=it.pn,
                    cols=ph.rows * ph.cols, sd=ph.size * es, dt=dt)
            continue
        for ld in got:
            cc.dma_load(ld.t, sem, ld.pads, pad, dt if ld.pads else None)
        n += len(got)
    return n


def _divisor(node: Node, geo: _Geom) -> float | np.ndarray:
    """avg_pool2d's divisor: a scalar when it is the same everywhere, else [OH * OW] per position."""
    a = node.attrs
    if a["divisor_override"] is not None:
        return float(a["divisor_override"])

    def counts(n_out: int, size: int, k: int, s: int, p: int) -> np.ndarray:
        start = np.arange(n_out) * s - p
        end = np.minimum(start + k, size + p)
        if a["count_include_pad"]:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    div = (counts(geo.OH, geo.H, geo.k[0], geo.s[0], geo.p[0])[:, None]
           * counts(geo.OW, geo.W, geo.k[1], geo.s[1], geo.p[1])[None, :]).reshape(-1)
    return float(div[0]) if (div == div[0]).all() else div.astype(np.float32)


@kernel(Op.AVG_POOL2D)
def avg_pool2d(ctx: Ctx, node: Node) -> None:
    geo = _geom(node, (1, 1))
    x, out = ctx.views[node.inputs[0]], ctx.views[node.output]
    dt = x.dtype
    es, T, OW = dt.itemsize, len(geo.taps), geo.OW
    wide = dt is not F32  # taps are converted to FP32 before they are summed
    div = _divisor(node, geo)
    div_v = None
    if isinstance(div, np.ndarray):
        div_v = ctx.weight(f"{node.name}_divisor", div.reshape(geo.OH, OW), F32)
    per_plane = OW * (4 + 2 * es + (4 + es if wide else 0))
    m = ctx.machine
    items, cores = _items(ctx, node, x, [out], geo.OH, OW, T * (8 / m.simd_bytes + es / m.link_bytes_per_cycle),
                           MAX_COLS // OW,
                           per_plane, OW * 4 + ALIGN, 5 * ALIGN)
    for core, (first, count) in zip(cores, split(len(items), len(cores)), strict=False):
        cc = ctx.core(core)
        pn, rn = max(i.pn for i in items[first:first + count]), max(i.rn for i in items[first:first + count])
        e = pn * rn * OW
        sram = ctx.sram[core]
        acc = sram.alloc(e * 4, f"{node.name} sum tile")
        cur = (sram.alloc(e * es, f"{node.name} tap tile"), sram.alloc(e * es, f"{node.name} tap tile"))
        tmp = sram.alloc(e * 4, f"{node.name} tap tile") if wide else acc
        res = sram.alloc(e * es, f"{node.name} output tile") if wide else acc
        drow = sram.alloc(rn * OW * 4, f"{node.name} divisor row") if div_v is not None else -1
        pending, have = 0, None
        with cc.op(node.name, node.source):
            for it in items[first:first + count]:
                cols = it.rn * OW
                tile = {"rows": it.pn, "cols": cols}
                f32 = {"sd": cols * 4, "sa": cols * 4, "dt": F32, **tile}
                taps = _Taps(cc, geo, it, cur, 0.0, dt)
                cc.wait(SEM_STORE, pending)
                n = 0
                if not wide:
                    n += taps.issue(0, acc, SEM_LOAD)
                else:
                    taps.issue(0)
                if div_v is not None and have != (it.r0, it.rn):
                    n += load_view(cc, div_v.slice(0, it.r0, it.r0 + it.rn), drow, SEM_LOAD)
                    have = (it.r0, it.rn)
                taps.issue(1)
                if not wide:
                    taps.issue(2)
                cc.wait(SEM_LOAD, n)
                for t in range(0 if wide else 1, T):
                    src = taps.ready(t)
                    if wide:  # bf16 tap -> FP32, then accumulate
                        cc.emit("vcvt", rd=cc.reg(R_D, acc if t == 0 else tmp), ra=cc.reg(R_A, src), sd=cols * 4,
                                sa=cols * es, dtd=F32, dts=dt, **tile)
                        taps.issue(t + 2)
                        if t == 0:
                            continue
                        src = tmp
                    cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, src), sb=cols * 4, **f32)
                    if not wide:
                        taps.issue(t + 2)
                if div_v is None:
                    cc.emit("vdivs", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), imm=float(div), **f32)
                else:
                    cc.emit("vdiv", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, drow), sb=0, bcb="row",
                            **f32)
                if wide:
                    cc.emit("vcvt", rd=cc.reg(R_D, res), ra=cc.reg(R_A, acc), sd=cols * es, sa=cols * 4, dtd=dt,
                            dts=F32, **tile)
                pending = store_view(cc, res, it.out_box(0), SEM_STORE)
            cc.wait(SEM_STORE, pending)


def _windows(size: int, n: int) -> list[tuple[int, int]]:
    """adaptive pooling's windows [floor(i * size / n), ceil((i + 1) * size / n))."""
    return [((i * size) // n, -((-(i + 1) * size) // n)) for i in range(n)]


@kernel(Op.ADAPTIVE_AVG_POOL2D)
def adaptive_avg_pool2d(ctx: Ctx, node: Node) -> None:
    x, out = ctx.views[node.inputs[0]], ctx.views[node.output]
    _, _, H, W = x.shape
    OH, OW = node.attrs["output_size"]
    dt = x.dtype
    es, wide = dt.itemsize, dt is not F32
    if max(H, W, OW) > MAX_COLS:
        raise node.error(f"adaptive_avg_pool2d of a {H} x {W} plane to {OH} x {OW} is not supported (each of H, W "
                         f"and OW must be at most {MAX_COLS})", CompileError)
    hw, ww = _windows(H, OH), _windows(W, OW)
    band = np.zeros((W, OW))
    for j, (w0, w1) in enumerate(ww):
        band[w0:w1, j] = 1.0
    counts = np.array([[(h1 - h0) * (w1 - w0) for w0, w1 in ww] for h0, h1 in hw], dtype=np.float32)
    band_v = ctx.weight(f"{node.name}_band", band, dt)
    counts_v = ctx.weight(f"{node.name}_counts", counts, F32)
    groups = _groups(x, [out])
    P = sum(g.shape[0] for g, _ in groups)
    fixed = _align(W * OW * es) + _align(OH * OW * 4)
    per_plane = H * W * es + H * OW * 4 + OH * OW * (4 + (es if wide else 0))
    budget = min(s.scratch_free() for s in ctx.sram.values()) - fixed - 4 * ALIGN
    room = min(budget // per_plane, MAX_ROWS // H)
    if room < 1:
        raise SramOverflowError(f"adaptive_avg_pool2d {node.name}: one plane of {node.inputs[0]} "
                                f"({node.inputs[0].type}) needs {per_plane + fixed:,} bytes of SRAM scratch; use a "
                                "machine with more SRAM (--set sram_bytes=...)")
    cores = ctx.region("adaptive_pool", P * H * W * (OW / 16 + 1), P, axis="planes")
    pb = max(1, min(room, -(-P // len(cores))))
    items = [(g, o[0], p0, min(pb, g.shape[0] - p0)) for g, o in groups for p0 in range(0, g.shape[0], pb)]
    ctx.shrink_region(len(items))
    for core, (first, count) in zip(cores, split(len(items), min(len(cores), len(items))), strict=False):
        cc = ctx.core(core)
        sram = ctx.sram[core]
        band_s = sram.alloc(W * OW * es, f"{node.name} window matrix")
        counts_s = sram.alloc(OH * OW * 4, f"{node.name} window sizes")
        xs = sram.alloc(pb * H * W * es, f"{node.name} input planes")
        ys = sram.alloc(pb * H * OW * 4, f"{node.name} row sums")
        acc = sram.alloc(pb * OH * OW * 4, f"{node.name} sums")
        res = sram.alloc(pb * OH * OW * es, f"{node.name} output tile") if wide else acc
        with cc.op(node.name, node.source):
            n = load_view(cc, band_v, band_s, SEM_LOAD) + load_view(cc, counts_v, counts_s, SEM_LOAD)
            pending = 0
            for g, o, p0, pn in items[first:first + count]:
                n += load_view(cc, g.slice(0, p0, p0 + pn), xs, SEM_LOAD)
                cc.wait(SEM_STORE, pending)
                cc.wait(SEM_LOAD, n)
                n = 0
                cc.emit("mma", rd=cc.reg(R_D, ys), ra=cc.reg(R_A, xs), rb=cc.reg(R_B, band_s), m=pn * H, n=OW, k=W,
                        sd=OW * 4, sa=W * es, sb=OW * es, dt=dt)
                # output row i = sum of row sums h0..h1-1, over all planes at once (plane stride H * OW)
                tile = {"rows": pn, "cols": OW, "sd": OH * OW * 4, "sa": H * OW * 4, "dt": F32}
                for i, (h0, h1) in enumerate(hw):
                    d = cc.reg(R_D, acc + i * OW * 4)
                    if h1 - h0 == 1:
                        cc.emit("vmov", rd=d, ra=cc.reg(R_A, ys + h0 * OW * 4), **tile)
                    for h in range(h0 + 1, h1):
                        a = acc + i * OW * 4 if h > h0 + 1 else ys + h0 * OW * 4
                        sa = OH * OW * 4 if h > h0 + 1 else H * OW * 4
                        cc.emit("vadd", rd=d, ra=cc.reg(R_A, a), rb=cc.reg(R_B, ys + h * OW * 4),
                                **{**tile, "sa": sa, "sb": H * OW * 4})
                    cc.emit("vdiv", rd=d, ra=d, rb=cc.reg(R_B, counts_s + i * OW * 4), bcb="row", sb=0,
                            **{**tile, "sa": OH * OW * 4})
                    if wide:
                        cc.emit("vcvt", rd=cc.reg(R_C, res + i * OW * es), ra=d, rows=pn, cols=OW,
                                sd=OH * OW * es, sa=OH * OW * 4, dtd=dt, dts=F32)
                pending = store_view(cc, res, o.slice(0, p0, p0 + pn), SEM_STORE)
            cc.wait(SEM_STORE, pending)

