"""Depthwise 2-D convolution (groups == in_channels > 1, out_channels = multiplier x in_channels) on the
SIMD unit, in FP32, instead of one mma per group with m = 1 (conv.py routes these convolutions here).

An *item* is a block of output channels (the rows of an SRAM tile) x a block of output pixels (rl output
rows x wl output columns of one image). For each tap (kh, kw) it accumulates, one vector op per multiplier
index j over the input channels of the block,

    acc[c*mult + j, pixels] += w[c*mult + j, tap] * window_tap[c, pixels]

with the weight column broadcast along the row (`bcb=col`); then it adds the bias per row, applies the
fused pointwise steps in order (scalar arithmetic, clamp: MobileNet's ReLU6, activation), converts to the
output type and stores.

The tap windows are not loaded from DRAM one by one (conv.py's way): the windows of neighbouring taps
overlap almost entirely, and loading each would read the input kh x kw times, which is what bounds
today's depthwise layers (DRAM traffic, not arithmetic). Instead an item loads, per *stride phase*
(ph, pw) that some tap uses, one padded block of input in which every tap of that phase is a shifted
window: tap offset k * dilation = q * stride + phase, so with a block of (rl + QH) x (wl + QW) "virtual
output" positions (QH, QW: the largest q), tap (kh, kw) reads the block from row qh, column qw. A stride-1
conv has one phase; stride 2 with a 3 x 3 kernel four (each a quarter of the input), so the input is read
about once whatever the kernel size. The phase block is exactly a shifted window as conv.py computes one
(`window.window`: the DMA's destination padding stands in for pixels outside the image), for the phase's
offset `phase - padding`.

A vector op takes a 2-D tile (rows with a stride, columns contiguous), but a window is 3-D (channels,
rows, cols). The accumulator therefore keeps RW = wl + QW columns per output row: the window of tap
(kh, kw) is then the contiguous run of rl x RW elements from (qh, qw) in each channel's block, one vector
op over [channels, rl x RW]; the QW extra columns of each row are junk that the store skips. Reading the
last channel's last row runs up to QW elements past its block: those elements are zero-filled per item,
so every value computed is finite.

Precisions: the arithmetic is FP32 whatever the precision (each bf16 block is converted once per item
with `vcvt`; fp32 blocks are used as loaded). Weights are kept as an FP32 [out_channels, taps] copy of
their values rounded to the precision's storage type (BF16 for bf16, and for cfp8 too: on the vector unit
the weights stay BF16 rather than CFP8), with an FP32 copy of the bias; they stay resident per core when
they fit (they are small), else they are loaded per item.

Work is dealt as in conv.py: items nested (channel block, image, row block, column block), contiguous runs
per core, so a core's run shares few weight blocks. The cost model (`_estimate`, from `isa.costs`: vector
cycles per item against DMA bytes over the link width and the DRAM ports) picks the block sizes and the
number of cores; the decision is the mapping's kernel "depthwise" (docs/mapping.md), which a user may edit.
Loads of item i+1 are issued before item i's vector work, into the other of two staging buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from math import ceil

import numpy as np

from dojoc.codegen.builder import R_A, R_B, R_D, CoreCode
from dojoc.codegen.context import MAX_COLS, MAX_ROWS, Ctx, split
from dojoc.codegen.epilogue import emit_pointwise, pointwise_cycles
from dojoc.codegen.kernels.mxu import (
    F32,
    Load,
    Region,
    load_resident,
    param_array,
    resident_budget,
)
from dojoc.codegen.kernels.mxu_plan import check_split, check_tile, overlapped_bound, splits
from dojoc.codegen.kernels.window import Span, window
from dojoc.codegen.sems import DEPTHWISE
from dojoc.codegen.view import Transfer, View, transfers
from dojoc.errors import MappingError, SramOverflowError
from dojoc.ir.epilogue import POINTWISE_STEPS, Step, split_inputs, steps_of
from dojoc.ir.graph import Node
from dojoc.mapping.model import Bound, OpMapping
from isa import formats
from isa.costs import vector_cycles

KERNEL = "depthwise"
MAX_VSTRIDE = (1 << 18) - 1  # the sd/sa/sb fields of a vector op, in bytes
SLACK = 1024  # scratch bytes kept free for allocation rounding
# semaphores of the two staging parities and of the two result buffers
LOADS, STORES = DEPTHWISE.ids("load"), DEPTHWISE.ids("store")


def eligible(ctx: Ctx, node: Node) -> bool:
    """Whether conv2d `node` is a depthwise convolution this kernel can take: groups == in_channels > 1,
    its weights (and bias, if any) parameters, and only pointwise epilogue steps (a fused residual goes to
    the matrix kernel, whose epilogue loads it)."""
    own, _ = split_inputs(node.inputs, node.attrs)
    x, w = own[:2]
    groups, c = node.attrs["groups"], x.type.shape[1]
    if groups <= 1 or groups != c or any(s[0] not in POINTWISE_STEPS for s in steps_of(node.attrs)):
        return False
    producers = ctx.graph.producers()
    return param_array(ctx, w, producers) is not None and \
        (len(own) < 3 or param_array(ctx, own[2], producers) is not None)


def chosen(ctx: Ctx, node: Node, matrix_cycles: Callable[[], int]) -> bool:
    """Whether an eligible convolution runs here rather than on the matrix kernel: as a given mapping
    says (its kernel, "depthwise" or "conv2d"), else when the cost model predicts it no slower than
    `matrix_cycles()` (the matrix kernel's estimate)."""
    given = ctx.given.get(ctx.scope[0])
    if given is not None:
        return given.kernel == KERNEL
    return estimate(ctx, node) <= matrix_cycles()


def pointwise(node: Node) -> tuple[Step, ...]:
    """The fused steps applied in order to the FP32 accumulator: the node's epilogue (passes/fuse.py),
    all pointwise here (`eligible`)."""
    steps = steps_of(node.attrs)
    assert all(s[0] in POINTWISE_STEPS for s in steps), steps
    return steps


@dataclass(frozen=True)
class Dw:
    """The geometry of one depthwise convolution, its DRAM views (weights and bias as FP32 copies) and
    what its taps read: per tap, its phase (an index into `phases`) and its (qh, qw) offset there."""

    x: View
    out: View
    w: View  # FP32 [out_channels, taps]
    bias: View | None  # FP32 [out_channels]
    n: int
    c: int
    h: int
    wd: int
    mult: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    pad: tuple[int, int]
    dil: tuple[int, int]
    steps: tuple[Step, ...]  # the pointwise epilogue steps, in order

    @property
    def o(self) -> int:
        return self.c * self.mult

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    def _split(self, k: int, axis: int) -> tuple[int, int]:
        """(q, phase) of tap offset k along an axis: k * dilation = q * stride + phase."""
        return divmod(k * self.dil[axis], self.stride[axis])

    # derived once: the plan search and the emission ask for them per candidate and per tap
    @cached_property
    def qh(self) -> int:
        return max(self._split(k, 0)[0] for k in range(self.kh))

    @cached_property
    def qw(self) -> int:
        return max(self._split(k, 1)[0] for k in range(self.kw))

    @cached_property
    def phases(self) -> list[tuple[int, int]]:
        return sorted({(self._split(a, 0)[1], self._split(b, 1)[1]) for a in range(self.kh) for b in range(self.kw)})

    @cached_property
    def _taps(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for t in range(self.taps):
            a, b = divmod(t, self.kw)
            (qh, ph), (qw, pw) = self._split(a, 0), self._split(b, 1)
            out.append((self.phases.index((ph, pw)), qh, qw))
        return tuple(out)

    def tap(self, t: int) -> tuple[int, int, int]:
        """(phase index, qh, qw) of tap t."""
        return self._taps[t]


@dataclass(frozen=True)
class Block:
    """The SRAM geometry of an item of cl input channels x rl output rows x wl output columns: a phase
    block per channel is rh x rw (cs elements), an accumulator row is pw = rl x rw elements."""

    cl: int
    rl: int
    wl: int
    rh: int
    rw: int

    @staticmethod
    def of(dw: Dw, cl: int, rl: int, wl: int) -> Block:
        return Block(cl, rl, wl, rl + dw.qh, wl + dw.qw)

    @property
    def cs(self) -> int:
        return self.rh * self.rw

    @property
    def pw(self) -> int:
        return self.rl * self.rw

    def phase_elems(self, dw: Dw) -> int:
        """Elements of one phase's buffer: the channel blocks and the run past the last one (qw)."""
        return self.cl * self.cs + dw.qw


@dataclass(frozen=True)
class Plan:
    cb: int  # input channels per item (the tile's rows are cb x mult output channels)
    rt: int  # output rows per item
    ct: int  # output columns per item
    cores: list[int]
    resident: bool


def _wbytes(ol: int, taps: int) -> int:
    """Bytes of a weight block [ol, taps] in FP32, rounded to 64 so its bias follows aligned."""
    return -(-ol * taps * 4 // 64) * 64


def _scratch(dw: Dw, blk: Block) -> int:
    """Scratch bytes of a core whose items are at most `blk`: two staging buffers (source type), their
    FP32 copy, the accumulator(s), the product, the output tiles, the streamed weights."""
    e, eo, ol = dw.x.dtype.itemsize, dw.out.dtype.itemsize, blk.cl * dw.mult
    ph = len(dw.phases) * blk.phase_elems(dw)
    acc = ol * blk.pw * 4
    n = 2 * ph * e + (ph * 4 if e != 4 else 0) + acc * (2 if dw.out.dtype is F32 else 1) + blk.cl * blk.pw * 4
    n += 2 * ol * blk.pw * eo if dw.out.dtype is not F32 else 0
    n += 2 * (_wbytes(ol, dw.taps) + ol * 4)
    return n + 12 * 64 + SLACK


def _legal(ctx: Ctx, dw: Dw, blk: Block) -> str | None:
    """Why items of `blk` cannot be emitted, or None when they can."""
    if blk.cl * dw.mult > MAX_ROWS:
        return f"{blk.cl * dw.mult} output channels per item is above the {MAX_ROWS} rows of a vector op"
    if blk.cs > MAX_COLS:
        return (f"{blk.rl} x {blk.wl} output pixels need {blk.rh} x {blk.rw} = {blk.cs} input positions per channel, "
                f"above the {MAX_COLS} columns of a vector op")
    if dw.mult * blk.pw * 4 > MAX_VSTRIDE:
        return f"a row stride of {dw.mult * blk.pw * 4} bytes is above the {MAX_VSTRIDE} of a vector op"
    if _scratch(dw, blk) > ctx.scratch_bytes:
        return f"its buffers need {_scratch(dw, blk):,} bytes, above the {ctx.scratch_bytes:,} of SRAM scratch"
    return None


# -- the cost model ---------------------------------------------------------------------------------------

def _item_cycles(ctx: Ctx, dw: Dw, blk: Block) -> int:
    """Core cycles of one item's instructions (isa.costs): DMA issues, conversions, taps, epilogue."""
    m = ctx.machine
    e, eo, ol = dw.x.dtype.itemsize, dw.out.dtype.itemsize, blk.cl * dw.mult
    nph = len(dw.phases)
    c = nph * (m.issue_cycles + 6 * m.scalar_cycles)  # a DMA and its address and shape registers per phase
    if e != 4:
        n = blk.cl * blk.cs
        c += nph * vector_cycles(n, 4, n * e, n * 4, m)
    if dw.qw:
        c += nph * vector_cycles(dw.qw, 4, 0, dw.qw * 4, m)
    n = blk.cl * blk.pw
    mul = vector_cycles(n, 4, (n + blk.cl) * 4, n * 4, m)
    add = vector_cycles(n, 4, 2 * n * 4, n * 4, m)
    c += dw.mult * (dw.taps * mul + (dw.taps - 1) * add)
    n = ol * blk.pw
    if dw.bias is not None:
        c += vector_cycles(n, 4, (n + ol) * 4, n * 4, m)
    c += pointwise_cycles(dw.steps, ol, blk.pw, m)
    if eo != 4:
        c += vector_cycles(n, 4, n * 4, n * eo, m)
    return c + m.issue_cycles + 6 * m.scalar_cycles


def _item_bytes(dw: Dw, blk: Block, resident: bool) -> tuple[int, int]:
    """(bytes loaded, bytes stored) by one item."""
    ol = blk.cl * dw.mult
    load = len(dw.phases) * blk.cl * blk.cs * dw.x.dtype.itemsize
    if not resident:
        load += ol * (dw.taps + (1 if dw.bias is not None else 0)) * 4
    return load, ol * blk.rl * blk.wl * dw.out.dtype.itemsize


def _items(dw: Dw, cb: int, rt: int, ct: int) -> int:
    return ceil(dw.c / cb) * dw.n * ceil(dw.oh / rt) * ceil(dw.ow / ct)


def _estimate(ctx: Ctx, dw: Dw, cb: int, rt: int, ct: int, cores: list[int], resident: bool) -> tuple[int, Bound]:
    """Predicted cycles and bound: per item, the longer of its vector work and its bytes over the core's
    link ports; over the run, overlapped with the region's traffic through the DRAM ports."""
    m = ctx.machine
    blk = Block.of(dw, cb, rt, ct)
    items = _items(dw, cb, rt, ct)
    run = ceil(items / len(cores))
    vec = _item_cycles(ctx, dw, blk)
    load, store = _item_bytes(dw, blk, resident)
    link = max(load / m.eject_bytes_per_cycle, store / m.inject_bytes_per_cycle)
    cyc, bound = overlapped_bound(ctx, run * max(vec, link), items * (load + store), run,
                                  cores, run)
    return cyc, Bound.LINK if bound is Bound.COMPUTE and link > vec else bound


# -- the decision -----------------------------------------------------------------------------------------

_TILE = ("channels", "rows", "cols")


def _axes(dw: Dw, cb: int, rt: int, ct: int) -> tuple[tuple[str, int], ...]:
    return (("channels", ceil(dw.c / cb)), ("batch", dw.n), ("rows", ceil(dw.oh / rt)), ("cols", ceil(dw.ow / ct)))


def _plan(ctx: Ctx, node: Node, dw: Dw) -> tuple[Plan, int, Bound]:
    """Block sizes, cores and residency minimising the estimate (`_estimate`)."""
    region = Region(ctx)
    budget = resident_budget(ctx, node, ctx.graph.producers())
    cts = [dw.ow] if dw.ow + dw.qw <= MAX_COLS else [c for c in splits(dw.ow) if c + dw.qw <= MAX_COLS]
    best: tuple[tuple[int, int], Plan, Bound] | None = None
    for cb in splits(dw.c):
        for ct in cts:
            for rt in splits(dw.oh, 1):
                blk = Block.of(dw, cb, rt, ct)
                if _legal(ctx, dw, blk) is not None:
                    continue
                items = _items(dw, cb, rt, ct)
                ncores = ctx.cores_for(items * _item_cycles(ctx, dw, blk), items)
                run = ceil(items / ncores)
                per_block = dw.n * ceil(dw.oh / rt) * ceil(dw.ow / ct)  # items sharing one weight block
                blocks = min(ceil((run - 1) / per_block) + 1, ceil(dw.c / cb))
                need = blocks * (_wbytes(cb * dw.mult, dw.taps) + cb * dw.mult * 4 + 64)
                resident = region.fits(ncores, need) and need * ncores <= budget
                cores = region.pick(ncores, need if resident else 0)
                cyc, bound = _estimate(ctx, dw, cb, rt, ct, cores, resident)
                if best is None or (cyc, ncores) < best[0]:
                    best = ((cyc, ncores), Plan(cb, rt, ct, cores, resident), bound)
    if best is None:
        raise node.error(f"depthwise conv2d {node.name} fits no tile in {ctx.scratch_bytes:,} bytes of SRAM "
                         "scratch", SramOverflowError)
    return best[1], best[0][0], best[2]


def _decide(ctx: Ctx, node: Node, dw: Dw) -> Plan:
    """The op's decision (the user's, checked, or the cost model's) as a Plan. The tile's `channels`
    are output channels per item, a multiple of the channel multiplier."""

    def default() -> OpMapping:
        plan, cyc, bound = _plan(ctx, node, dw)
        return OpMapping("", KERNEL, tuple(plan.cores), _axes(dw, plan.cb, plan.rt, plan.ct),
                         tuple(zip(_TILE, (plan.cb * dw.mult, plan.rt, plan.ct), strict=True)), plan.resident,
                         predicted_cycles=cyc, bound=bound)

    def check(om: OpMapping) -> OpMapping:
        ot, rt, ct = check_tile(om, dict(zip(_TILE, (dw.o, dw.oh, dw.ow), strict=True)))
        if ot % dw.mult:
            raise MappingError(f"op {om.key}: tile channels={ot} must be a multiple of the channel multiplier "
                               f"{dw.mult} (the output channels of one input channel stay in one item)")
        cb = ot // dw.mult
        check_split(om, _axes(dw, cb, rt, ct), True)
        why = _legal(ctx, dw, Block.of(dw, cb, rt, ct))
        if why is not None:
            raise MappingError(f"op {om.key}: tile {dict(om.tile)}: {why}; make it smaller",
                               node=node.name, shapes=node.signature(), source=node.source)
        cyc, bound = _estimate(ctx, dw, cb, rt, ct, list(om.cores), om.resident)
        return replace(om, predicted_cycles=cyc, bound=bound)

    om = ctx.decide(KERNEL, default, check)
    ot, rt, ct = (int(om.tile_of(a) or 0) for a in _TILE)
    return Plan(ot // dw.mult, rt, ct, list(om.cores), om.resident)


# -- emission ---------------------------------------------------------------------------------------------

def _f32_copy(ctx: Ctx, arr: np.ndarray) -> np.ndarray:
    """`arr` rounded to the precision's storage type (what the matrix kernels would multiply by), as FP32."""
    dt = ctx.mxu_dtype
    return formats.quantize(arr.astype(np.float32), dt).astype(np.float32) if dt is not F32 else arr.astype(np.float32)


def _geometry(ctx: Ctx, node: Node, w: View, bias: View | None) -> Dw:
    x = node.inputs[0]
    n, c, h, wd = x.type.shape
    o, _, kh, kw = node.inputs[1].type.shape
    oh, ow = node.output.type.shape[2:]
    a = node.attrs
    (sh, sw), (ph, pw), (dh, dww) = a["stride"], a["padding"], a["dilation"]
    return Dw(ctx.views[x], ctx.views[node.output], w, bias, n, c, h, wd, o // c, kh, kw, oh, ow, (sh, sw),
              (ph, pw), (dh, dww), pointwise(node))


def estimate(ctx: Ctx, node: Node) -> int:
    """The cost model's cycles for the plan this kernel would choose, declaring nothing (the DRAM views of
    the weight and bias stand in for their FP32 copies, whose addresses the plan does not read)."""
    own, _ = split_inputs(node.inputs, node.attrs)
    bias = ctx.views[own[2]] if len(own) == 3 else None
    return _plan(ctx, node, _geometry(ctx, node, ctx.views[own[1]], bias))[1]


def depthwise(ctx: Ctx, node: Node) -> None:
    """Emit depthwise conv2d `node` (`eligible(ctx, node)` holds)."""
    producers = ctx.graph.producers()
    own, _ = split_inputs(node.inputs, node.attrs)
    warr = param_array(ctx, own[1], producers)
    assert warr is not None
    o, _, kh, kw = own[1].type.shape
    wq = ctx.weight(f"{node.name}_w_f32", _f32_copy(ctx, warr).reshape(o, kh * kw), F32)
    bias = None
    if len(own) == 3:
        barr = param_array(ctx, own[2], producers)
        assert barr is not None
        bias = ctx.weight(f"{node.name}_bias_f32", barr, F32)
    dw = _geometry(ctx, node, wq, bias)
    plan = _decide(ctx, node, dw)
    items = [(ch, b, r0, c0) for ch in range(0, dw.c, plan.cb) for b in range(dw.n)
             for r0 in range(0, dw.oh, plan.rt) for c0 in range(0, dw.ow, plan.ct)]
    for core, (first, count) in zip(plan.cores, split(len(items), len(plan.cores)), strict=False):
        _Core(ctx, node, core, dw, plan, items[first:first + count]).emit()


class _Core:
    """One core's run of items: double-buffered phase loads, FP32 taps, epilogue, stores."""

    def __init__(self, ctx: Ctx, node: Node, core: int, dw: Dw, plan: Plan,
                 items: list[tuple[int, int, int, int]]) -> None:
        self.ctx, self.node, self.dw, self.items = ctx, node, dw, items
        self.cc: CoreCode = ctx.core(core)
        self.src, self.dst = dw.x.dtype, dw.out.dtype
        self.blocks = [Block.of(dw, min(plan.cb, dw.c - ch), min(plan.rt, dw.oh - r0), min(plan.ct, dw.ow - c0))
                       for ch, _, r0, c0 in items]
        self.resident = self._load_resident(core, plan)
        big = Block.of(dw, min(plan.cb, dw.c), min(plan.rt, dw.oh), min(plan.ct, dw.ow))
        sram, what = ctx.sram[core], node.name
        ol, nph = big.cl * dw.mult, len(dw.phases)
        self.ph_elems = big.phase_elems(dw)  # one phase's buffer
        self.ph_bytes = self.ph_elems * self.src.itemsize
        self.stage = [sram.alloc(nph * self.ph_bytes, f"{what} input blocks") for _ in range(2)]
        self.f32 = sram.alloc(nph * self.ph_elems * 4, f"{what} FP32 input blocks") \
            if self.src is not F32 else None
        self.direct = self.dst is F32  # the FP32 accumulator is itself the result tile
        self.accs = [sram.alloc(ol * big.pw * 4, f"{what} accumulator") for _ in range(2 if self.direct else 1)]
        self.tmp = sram.alloc(big.cl * big.pw * 4, f"{what} products") if dw.taps > 1 else 0
        self.outs = self.accs if self.direct else [sram.alloc(ol * big.pw * self.dst.itemsize, f"{what} output")
                                                   for _ in range(2)]
        streamed = any(ch not in self.resident for ch, *_ in items)
        self.wst = [sram.alloc(_wbytes(ol, dw.taps) + ol * 4, f"{what} weights") for _ in range(2)] \
            if streamed else []
        self.valid: list[list[bool]] = [[] for _ in items]  # per item, per phase: it read some input
        self.pending = [0, 0]  # stores in flight per result parity

    def _load_resident(self, core: int, plan: Plan) -> dict[int, int]:
        """Allocate and load the weight blocks (and bias) of the core's items: channel block -> SRAM
        address; a block that does not fit is left out (loaded per item)."""
        out: dict[int, int] = {}
        if not plan.resident:
            return out
        dw, loads = self.dw, []
        for (ch, *_), blk in zip(self.items, self.blocks, strict=True):
            if ch in out:
                continue
            ol, o0 = blk.cl * dw.mult, ch * dw.mult
            addr, new = self.ctx.resident_copy(core, _wbytes(ol, dw.taps) + (ol * 4 if dw.bias else 0),
                                               self._weight_loads(o0, ol, 0))
            if addr is None:
                break
            out[ch] = addr
            loads += new
        load_resident(self.ctx, core, self.node, loads)
        return out

    def _weight_loads(self, o0: int, ol: int, addr: int) -> list[Transfer]:
        dw = self.dw
        t = transfers(dw.w.base + o0 * dw.taps * 4, addr, [(ol * dw.taps, 4, 4)], 4)
        if dw.bias is not None:
            t += transfers(dw.bias.base + o0 * 4, addr + _wbytes(ol, dw.taps), [(ol, 4, 4)], 4)
        return t

    def emit(self) -> None:
        cc = self.cc
        with cc.op(self.node.name, self.node.source):
            count = self._issue(0)
            for i in range(len(self.items)):
                nxt = self._issue(i + 1) if i + 1 < len(self.items) else 0  # prefetch into the other buffer
                self.cc.wait(LOADS[i % 2], count)
                count = nxt
                self._taps(i)
                self._epilogue(i)
            self.cc.wait(STORES[0], self.pending[0])
            self.cc.wait(STORES[1], self.pending[1])

    def _issue(self, i: int) -> int:
        """Issue item i's phase blocks (and weights, when not resident) into parity i % 2; returns the
        number of DMAs."""
        dw, cc, p = self.dw, self.cc, i % 2
        ch, b, r0, c0 = self.items[i]
        blk = self.blocks[i]
        e = self.src.itemsize
        n = 0
        for k, (ph, pw) in enumerate(dw.phases):
            rows = Span(r0, blk.rh, dw.stride[0], ph - dw.pad[0], dw.h)
            cols = Span(c0, blk.rw, dw.stride[1], pw - dw.pad[1], dw.wd)
            loads: list[Load] | None = window(dw.x, b, ch, blk.cl, rows, cols, self.stage[p] + k * self.ph_bytes,
                                              blk.cs * e, f"depthwise conv2d {self.node.name}")
            self.valid[i].append(loads is not None)
            for ld in loads or []:
                cc.dma_load(ld.t, LOADS[p], ld.pads, 0.0, self.src if ld.pads else None)
                n += 1
        if ch not in self.resident:
            for t in self._weight_loads(ch * dw.mult, blk.cl * dw.mult, self.wst[p]):
                cc.dma_load(t, LOADS[p])
                n += 1
        return n

    def _taps(self, i: int) -> None:
        """acc = sum over taps of w[:, tap] * window(tap), in FP32."""
        dw, cc, p, blk = self.dw, self.cc, i % 2, self.blocks[i]
        ch = self.items[i][0]
        acc = self.accs[i % 2] if self.direct else self.accs[0]
        if self.direct:
            self.cc.wait(STORES[i % 2], self.pending[i % 2])  # the accumulator's previous store has left
            self.pending[i % 2] = 0
        wins = []
        for k in range(len(dw.phases)):
            win = self.stage[p] + k * self.ph_bytes
            if self.valid[i][k] and self.f32 is not None:  # one conversion per block serves all its taps
                cvt = self.f32 + k * self.ph_elems * 4
                cc.emit("vcvt", rd=cc.reg(R_D, cvt), ra=cc.reg(R_A, win), rows=blk.cl, cols=blk.cs, sd=blk.cs * 4,
                        sa=blk.cs * self.src.itemsize, dtd=F32, dts=self.src)
                win = cvt
            if self.valid[i][k] and dw.qw:  # the last row of a tap window runs up to qw past the block
                cc.emit("vfill", rd=cc.reg(R_D, win + blk.cl * blk.cs * 4), imm=0.0, rows=1, cols=dw.qw,
                        sd=dw.qw * 4, dt=F32)
            wins.append(win)
        wbase = self.resident.get(ch, self.wst[p] if self.wst else 0)
        n4, cs4, m = blk.pw * 4, blk.cs * 4, dw.mult
        first = True
        for t in range(dw.taps):
            k, qh, qw = dw.tap(t)
            if not self.valid[i][k]:  # the tap reads only padding here
                continue
            a = wins[k] + (qh * blk.rw + qw) * 4
            for j in range(m):
                w = wbase + (j * dw.taps + t) * 4
                d = acc + j * n4
                if first:
                    cc.emit("vmul", rd=cc.reg(R_D, d), ra=cc.reg(R_A, a), rb=cc.reg(R_B, w), rows=blk.cl, cols=blk.pw,
                            sd=m * n4, sa=cs4, sb=m * dw.taps * 4, dt=F32, bcb="col")
                else:
                    cc.emit("vmul", rd=cc.reg(R_D, self.tmp), ra=cc.reg(R_A, a), rb=cc.reg(R_B, w), rows=blk.cl,
                            cols=blk.pw, sd=n4, sa=cs4, sb=m * dw.taps * 4, dt=F32, bcb="col")
                    cc.emit("vadd", rd=cc.reg(R_D, d), ra=cc.reg(R_A, d), rb=cc.reg(R_B, self.tmp), rows=blk.cl,
                            cols=blk.pw, sd=m * n4, sa=m * n4, sb=n4, dt=F32)
            first = False
        if first:  # every tap reads only padding: the result is the bias alone
            cc.emit("vfill", rd=cc.reg(R_D, acc), imm=0.0, rows=blk.cl * m, cols=blk.pw, sd=n4, dt=F32)

    def _epilogue(self, i: int) -> None:
        """Bias per row, the fused pointwise steps, conversion to the output type, the stores (which skip the
        qw junk columns of each row)."""
        dw, cc, blk, q = self.dw, self.cc, self.blocks[i], i % 2
        ch, b, r0, c0 = self.items[i]
        ol, n4 = blk.cl * dw.mult, blk.pw * 4
        acc = self.accs[q] if self.direct else self.accs[0]
        if dw.bias is not None:
            bias = self.resident.get(ch, self.wst[q] if self.wst else 0) + _wbytes(ol, dw.taps)
            cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, bias), rows=ol, cols=blk.pw,
                    sd=n4, sa=n4, sb=4, dt=F32, bcb="col")
        for step in dw.steps:
            emit_pointwise(cc, step, acc, ol, blk.pw, n4, F32)
        eo = self.dst.itemsize
        res = acc
        if not self.direct:
            self.cc.wait(STORES[q], self.pending[q])  # the output tile's previous store has left
            res = self.outs[q]
            cc.emit("vcvt", rd=cc.reg(R_D, res), ra=cc.reg(R_A, acc), rows=ol, cols=blk.pw, sd=blk.pw * eo, sa=n4,
                    dtd=self.dst, dts=F32)
        sn, so, sh, sw = dw.out.strides
        stores = transfers(res, dw.out.base + b * sn + ch * dw.mult * so + r0 * sh + c0 * sw,
                           [(ol, blk.pw * eo, so), (blk.rl, blk.rw * eo, sh), (blk.wl, eo, sw)], eo)
        for t in stores:
            cc.dma_store(t, STORES[q])
        self.pending[q] = len(stores)

