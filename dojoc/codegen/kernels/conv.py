"""2-D convolution (NCHW; stride, padding, dilation, groups incl. depthwise, optional bias) as a sum of
matmuls over kernel taps (docs/compiler.md), with no im2col buffer in DRAM. A depthwise convolution goes
to depthwise.py (the SIMD unit) instead when that kernel's cost model predicts it faster.

For output channels O_blk of one group and a block of output pixels (rows x cols of one image):

    acc[O_blk, pixels] += W[O_blk, (tap, c)] @ X[(tap, c), pixels]

where the rows of X for tap (kh, kw) are the input window shifted by the tap: one 3-D DMA per tap
(channels, output rows, output cols) with source strides (H*W, s_h*W, s_w) elements from the tap's first
in-bounds pixel, and destination padding (padlo/padhi per dim, computed here) for the output rows and
columns whose input falls outside the image, so the padding costs no DRAM traffic. Taps are stacked along
K when the whole group's channels fit one step (always for depthwise, where K = taps), else a step is one
tap and a chunk of channels. A tap that falls wholly in the padding is skipped (or zero-filled when it
shares a step with others).

The weights are laid out at compile time, by the strides of the DMA that loads them, as
[O_blk, KH*KW*C/g] (tap-major columns), so every step's A operand is one contiguous column range of a
row-major tile; they stay resident in SRAM (with an FP32 copy of the bias) when they fit. The bias is
added on the FP32 accumulator with a column broadcast (one value per output channel = per row), then the
node's epilogue runs on it (put there by the fuse pass): a residual tile of the output's shape, DMA'd in
with the item's first step and added in FP32 (ResNet's shortcut), scaling, an activation.

Work is cut into items (batch, group, output-channel block, output-row block[, column block]) in that
nesting, so a core's run of items shares few weight blocks; the cost model picks the block sizes and
`ctx.cores_for` the number of cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from math import ceil

import numpy as np

from dojoc.codegen.context import MAX_ROWS, MAX_STRIDE, Ctx, split
from dojoc.codegen.kernels import depthwise, gather, held, summa
from dojoc.codegen.kernels.conv_steps import band, band_rows, halo, tap_window, weights, window_steps
from dojoc.codegen.kernels.im2col import Im2col, Shifted
from dojoc.codegen.kernels.matmul import Problem
from dojoc.codegen.kernels.mxu import (
    F32,
    Item,
    Load,
    Operand,
    Pipeline,
    Region,
    Spec,
    Step,
    act_bias,
    load_resident,
    operand_type,
    param_array,
    resident_budget,
    weight_source,
)
from dojoc.codegen.kernels.mxu_plan import check_split, check_tile, overlapped_bound, splits
from dojoc.codegen.kernels.summa_chunks import with_kept_b
from dojoc.codegen.registry import kernel
from dojoc.codegen.view import Transfer, View, transfers
from dojoc.errors import MappingError, SramOverflowError
from dojoc.ir import shapes
from dojoc.ir.epilogue import ROW_MAX, row_max_rows, split_inputs, steps_of
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.model import Bound, OpMapping
from isa.costs import matmul_cycles, vector_cycles

MAX_TILE = MAX_ROWS  # rows, columns and k of an mma
SLACK = 1024


@dataclass(frozen=True)
class Conv:
    """The geometry of one convolution and its DRAM views (weights in the mma operand type)."""

    x: View
    w: View
    bias: View | None
    bias_const: bool  # the bias is a parameter (an FP32 copy of it may stay resident)
    out: View
    residual: View | None  # the epilogue's residual, of the output's shape
    n: int
    c: int
    h: int
    wd: int
    o: int
    cg: int
    kh: int
    kw: int
    g: int
    oh: int
    ow: int
    stride: tuple[int, int]
    pad: tuple[int, int]
    dil: tuple[int, int]
    # (window, stride, padding) of a row_max epilogue step (passes/fuse_pool.py): `oh` counts the
    # convolution's rows, `out_rows` the pooled ones it writes
    pool: tuple[int, int, int] | None = None

    @property
    def out_rows(self) -> int:
        """The rows of the output it writes: the pooled ones of a row_max step."""
        return self.oh if self.pool is None else row_max_rows(self.oh, *self.pool)

    @property
    def og(self) -> int:
        return self.o // self.g

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    @property
    def k(self) -> int:
        return self.taps * self.cg


@dataclass(frozen=True)
class Plan:
    ot: int  # output channels per item
    rt: int  # output rows per item
    ct: int  # output columns per item
    tn: int  # taps per step
    cl: int  # channels per step
    cores: list[int]
    resident: bool
    # 1: a step loads the input rows its taps share once (`_halo`), not a window per tap, and multiplies
    # each tap; 2: it copies every tap's window out of them into one im2col tile (gather.py)
    window: int = 0


def _can_window(cv: Conv, tn: int) -> bool:
    """Whether a step of tn taps may load its input rows once and read each tap's window from them at an
    offset: all the taps (a row of several), and a column stride of 1 (so a window's columns lie side by
    side in the loaded rows), no dilation and a row stride at most the kernel's height (so the rows staged
    are no more than the taps' windows would be)."""
    return tn == cv.taps and cv.taps > 1 and cv.stride[1] == 1 and cv.dil == (1, 1) and cv.stride[0] <= cv.kh


def _can_gather(cv: Conv, spec: Spec) -> bool:
    """Whether a step may gather its taps' windows out of its staged input rows (gather.py): more than one
    tap, and an input staged in the mma's type (the copies do not convert)."""
    return cv.taps > 1 and spec.b_src is spec.op


def _kmax(ctx: Ctx, spec: Spec, ot: int, pt: int, a_streamed: bool) -> int:
    """The largest K of a step whose double-buffered tiles fit the scratch SRAM, for items of ot x pt."""
    direct = spec.out is F32
    fixed = ot * pt * 4 * (2 if direct else 1) + (0 if direct else 2 * ot * pt * spec.out.itemsize) \
        + ot * (2 * spec.bias_src.itemsize + 4) + SLACK + spec.epilogue_bytes(ot * pt)
    per_k = 2 * pt * spec.b_src.itemsize + (pt * spec.op.itemsize if spec.b_src is not spec.op else 0)
    if a_streamed:
        per_k += 2 * ot * spec.a_src.itemsize + (ot * spec.op.itemsize if spec.a_src is not spec.op else 0)
    room = ctx.scratch_bytes - fixed
    return min(MAX_TILE, room // per_k if room > 0 else 0)


def _fits(ctx: Ctx, cv: Conv, spec: Spec, ot: int, rt: int, ct: int, tn: int, cl: int, a_streamed: bool,
          win: int) -> bool:
    """Whether a step of tn taps x cl channels and its double buffers fit the scratch SRAM: its K within
    `_kmax`, or with `win` its staged input rows (and with 2 its gathered tile) within the room that K's
    windows would have (and a streamed weight tile of every tap within `_kmax`)."""
    kmax = _kmax(ctx, spec, ot, rt * ct, a_streamed)
    if not win:
        return tn * cl <= kmax
    if win == 2:
        room = _kmax(ctx, spec, ot, rt * ct, False) * rt * ct
        return tn * cl * rt * ct + cl * gather.staged(cv, rt, ct).size <= room and (not a_streamed or tn * cl <= kmax)
    hr, hc = halo(cv, rt, ct)
    return cl * hr * hc <= _kmax(ctx, spec, ot, rt * ct, False) * rt * ct and (not a_streamed or tn * cl <= kmax)


def _window_options(ctx: Ctx, cv: Conv, spec: Spec, ot: int, rt: int, ct: int, options: list[tuple[int, int]],
                    a_streamed: bool) -> list[tuple[int, int]]:
    """Steps of every tap that load their input rows once: all of a group's channels, or the chunks of
    them that the one-tap steps take (several steps per item, so that loads overlap the multiplies)."""
    if not _can_window(cv, cv.taps):
        return []
    chunks = sorted({cl for _, cl in options} | {cv.cg}, reverse=True)
    return [(cv.taps, cl) for cl in chunks if _fits(ctx, cv, spec, ot, rt, ct, cv.taps, cl, a_streamed, True)]


def _steps(cv: Conv, kmax: int) -> list[tuple[int, int]]:
    """Step shapes (taps per step, channels per step) with K <= kmax, largest first: several taps with
    all of a group's channels, or one tap with a chunk of them. More, smaller steps let a core start
    computing sooner (the cost model weighs that against the overhead per step)."""
    out: list[tuple[int, int]] = []
    if kmax >= cv.cg:
        tmax = min(cv.taps, kmax // cv.cg)
        out += [(ceil(cv.taps / ceil(cv.taps / t)), cv.cg) for t in splits(tmax, 1, (1, 2, 3, 4, 6, 9))]
    cmax = min(cv.cg, kmax)
    if cmax >= min(cv.cg, 8):
        out += [(1, ceil(cv.cg / ceil(cv.cg / c))) for c in splits(cmax, 8, (1, 2, 3, 4, 6, 8)) if c < cv.cg]
    return sorted(set(out), key=lambda tc: -tc[0] * tc[1])


def _item_cycles(ctx: Ctx, cv: Conv, spec: Spec, ot: int, pt: int, tn: int, cl: int, a_streamed: bool,
                 rt: int = 1, win: int = 0) -> int:
    """Core cycles of one item: per step its DMA issues, conversions (cfp8) and mma (with `win` 1, one load
    of rt output rows' input rows and one mma per output row and tap; with 2, that load, a copy per output
    row and tap, and one mma); then the epilogue."""
    m = ctx.machine
    k = tn * cl
    if win == 2:
        st = gather.staged(cv, rt, pt // rt)
        staged = cl * st.size
        e = spec.op.itemsize
        copy = vector_cycles(cl * (pt // rt), e, cl * (pt // rt) * e, cl * (pt // rt) * e, m) + 3 * m.scalar_cycles
        dmas = st.stride[1] * (m.issue_cycles + 3 * m.scalar_cycles)  # one per column phase
        step = matmul_cycles(ot, pt, k, spec.op, True, m) + rt * tn * copy + dmas
    elif win:
        hr, hc = halo(cv, rt, pt // rt)
        staged = cl * hr * hc
        step = rt * tn * (matmul_cycles(ot, pt // rt, cl, spec.op, True, m) + 3 * m.scalar_cycles) \
            + m.issue_cycles + 3 * m.scalar_cycles
    else:
        staged = k * pt
        step = matmul_cycles(ot, pt, k, spec.op, True, m) + tn * (m.issue_cycles + 3 * m.scalar_cycles)
    ex, ew, eop = spec.b_src.itemsize, spec.a_src.itemsize, spec.op.itemsize
    if spec.b_src is not spec.op:
        step += vector_cycles(staged, max(ex, eop), staged * ex, staged * eop, m)
    if a_streamed and spec.a_src is not spec.op:
        step += vector_cycles(k * ot, max(ew, eop), k * ot * ew, k * ot * eop, m)
    steps = ceil(cv.taps / tn) * ceil(cv.cg / cl)
    epi = vector_cycles(ot * pt, 4, ot * pt * 8, ot * pt * 4, m) if cv.bias is not None else 0
    epi += spec.epilogue_cycles(ot, pt, m)
    return steps * step + epi + vector_cycles(ot * pt, 4, ot * pt * 4, ot * pt * spec.out.itemsize, m)


def _estimate(ctx: Ctx, cv: Conv, spec: Spec, ot: int, rt: int, ct: int, tn: int, cl: int, cores: list[int],
              resident: bool, win: int = 0, stores: float = 1.0, res_dram: bool = True) -> tuple[int, Bound]:
    """The cost model's cycles and bound: compute per core against DRAM traffic (the input windows are
    re-read once per output-channel block, and once per tap unless a step loads its taps' input rows
    once (`win`); streamed weights once per item; the output's stores (the share `stores` of them that go
    to DRAM) and the residual's loads unless `res_dram` says it stays in SRAM, band.py)."""
    ex, ew, eo = spec.b_src.itemsize, spec.a_src.itemsize, spec.out.itemsize
    crt = band_rows(cv, rt)  # (the convolution rows of rt pooled ones, with a row_max step)
    pt = crt * ct
    items = cv.g * ceil(cv.og / ot) * cv.n * ceil(cv.out_rows / rt) * ceil(cv.ow / ct)
    run = ceil(items / len(cores))
    hr, hc = halo(cv, crt, ct)
    read = cv.cg * gather.staged(cv, crt, ct).size if win == 2 else cv.cg * hr * hc if win else pt * cv.k
    traffic = items * (read * ex + rt * ct * ot * eo * stores) + (0 if resident else items * ot * cv.k * ew) \
        + (items * pt * ot * spec.res_src.itemsize if spec.residual and res_dram else 0)
    compute = run * _item_cycles(ctx, cv, spec, ot, pt, tn, cl, not resident, crt, win)
    if cv.pool is not None:  # a vmax per pooled row and window row but one (in place on the FP32 tile)
        compute += run * rt * (cv.pool[0] - 1) * vector_cycles(ot * ct, 4, 2 * ot * ct * 4, ot * ct * 4, ctx.machine)
    steps = run * ceil(cv.taps / tn) * ceil(cv.cg / cl)
    return overlapped_bound(ctx, compute, traffic, steps, cores, run)


def _axes(cv: Conv, ot: int, rt: int, ct: int) -> tuple[tuple[str, int], ...]:
    return (("groups", cv.g), ("out_channels", ceil(cv.og / ot)), ("batch", cv.n),
            ("rows", ceil(cv.out_rows / rt)), ("cols", ceil(cv.ow / ct)))


_TILE = ("out_channels", "rows", "cols", "taps", "channels")


def _decide(ctx: Ctx, node: Node, cv: Conv, spec: Spec, weight: bool,
            search: Callable[[], tuple[Plan, int, Bound]]) -> Plan:
    """The op's decision (the user's, checked, or the cost model's: `search()`) as a Plan."""

    def default() -> OpMapping:
        plan, cycles, bound = search()
        tile = tuple(zip(_TILE, (plan.ot, plan.rt, plan.ct, plan.tn, plan.cl), strict=True))
        return OpMapping("", "conv2d", tuple(plan.cores), _axes(cv, plan.ot, plan.rt, plan.ct),
                         tile + ((("window", plan.window),) if plan.window else ()), plan.resident,
                         predicted_cycles=cycles, bound=bound)

    def check(om: OpMapping) -> OpMapping:
        ot, rt, ct, tn, cl = check_tile(om, dict(zip(_TILE, (min(cv.og, MAX_TILE), cv.out_rows,
                                                             min(cv.ow, MAX_TILE), cv.taps, cv.cg), strict=True)))
        check_split(om, _axes(cv, ot, rt, ct), weight)
        crt = band_rows(cv, rt)
        if crt * ct > MAX_TILE:
            raise MappingError(f"op {om.key}: tile rows x cols = {crt * ct} convolution pixels is above the "
                               f"{MAX_TILE} columns of an mma; make them smaller")
        win = om.tile_of("window", 0)
        if win not in (0, 1, 2) or (win == 1 and not _can_window(cv, tn)) \
                or (win == 2 and not (_can_gather(cv, spec) and tn == cv.taps and cl == cv.cg)):
            raise MappingError(f"op {om.key}: tile window={win}: give 0 (a load per tap), 1 (one load of the "
                               "input rows of a step's taps), which needs a step of every tap (taps="
                               f"{cv.taps}), a column stride of 1, no dilation and a row stride at most the "
                               "kernel's height, or 2 (those rows, and every tap's window copied out of them for "
                               f"one mma), which needs a step of every tap and all {cv.cg} channels, in bf16 or "
                               "fp32")
        if tn > 1 and cl != cv.cg and not win:
            raise MappingError(f"op {om.key}: a step of several taps ({tn}) must take all {cv.cg} channels of "
                               "its group, unless it loads their input rows once (window=1); set channels to "
                               "that, taps to 1, or window to 1")
        if not _fits(ctx, cv, spec, ot, crt, ct, tn, cl, not om.resident, win):
            raise MappingError(f"op {om.key}: a step of {tn} taps x {cl} channels and its double buffers do not "
                               f"fit the {ctx.scratch_bytes:,} bytes of SRAM scratch; take fewer",
                               node=node.name, shapes=node.signature(), source=node.source)
        cycles, bound = _estimate(ctx, cv, spec, ot, rt, ct, tn, cl, list(om.cores), om.resident, win)
        return replace(om, predicted_cycles=cycles, bound=bound)

    om = ctx.decide("conv2d", default, check)
    ot, rt, ct, tn, cl = (int(om.tile_of(a) or 0) for a in _TILE)
    return Plan(ot, rt, ct, tn, cl, list(om.cores), om.resident, int(om.tile_of("window", 0) or 0))


def _plan(ctx: Ctx, node: Node, cv: Conv, spec: Spec, weight: bool) -> tuple[Plan, int, Bound]:
    """Block and step sizes and cores minimising the estimated time (`_estimate`)."""
    region = Region(ctx)
    budget = resident_budget(ctx, node, ctx.graph.producers()) if weight else 0
    ew = spec.a_src.itemsize
    cts = [cv.ow] if cv.ow <= MAX_TILE else [c for c in splits(cv.ow) if c <= MAX_TILE]
    # a gathered step of a strided convolution stages its rows' input rows once for all their taps, so more
    # output rows of fewer columns re-read fewer input rows (those steps alone are searched there)
    can_gather = _can_gather(cv, spec)
    narrow = [c for c in splits(cv.ow) if 16 <= c < min(cts)] if can_gather and cv.stride[0] > 1 else []
    best: tuple[tuple[int, int], Plan, Bound] | None = None
    for ot in [c for c in splits(cv.og) if c <= MAX_TILE]:
        for ct in cts + narrow:
            for rt in [r for r in splits(cv.out_rows, 1) if band_rows(cv, r) * ct <= MAX_TILE]:
                crt = band_rows(cv, rt)  # (rt pooled rows read more convolution rows: a row_max step)
                pt = crt * ct
                options = _steps(cv, _kmax(ctx, spec, ot, pt, False))
                if not options:
                    continue
                per_block = cv.n * ceil(cv.out_rows / rt) * ceil(cv.ow / ct)  # items sharing one weight block
                items = cv.g * ceil(cv.og / ot) * per_block
                ncores = ctx.cores_for(items * _item_cycles(ctx, cv, spec, ot, pt, *options[0], False), items)
                run = ceil(items / ncores)
                blocks = min(ceil((run - 1) / per_block) + 1, cv.g * ceil(cv.og / ot))
                need = blocks * (ot * cv.k * ew + ot * 4 + 128)
                resident = weight and cv.k * ew <= MAX_STRIDE and region.fits(ncores, need) \
                    and need * ncores <= budget
                if not resident:
                    options = _steps(cv, _kmax(ctx, spec, ot, pt, True))
                cores = region.pick(ncores, need if resident else 0)
                wins = _window_options(ctx, cv, spec, ot, crt, ct, options, not resident)
                cands = [] if ct in narrow else [(tn, cl, 0) for tn, cl in options] + [(tn, cl, 1) for tn, cl in wins]
                if can_gather and _fits(ctx, cv, spec, ot, crt, ct, cv.taps, cv.cg, not resident, 2):
                    cands.append((cv.taps, cv.cg, 2))
                for tn, cl, win in (c for c in cands if best is None or ctx.costed()):  # (the first is priced)
                    cycles, bound = _estimate(ctx, cv, spec, ot, rt, ct, tn, cl, cores, resident, win)
                    key = (cycles, ncores)
                    if best is None or key < best[0]:
                        best = (key, Plan(ot, rt, ct, tn, cl, cores, resident, win), bound)
    if best is None:
        raise node.error(f"conv2d {node.name} fits no tile in {ctx.scratch_bytes:,} bytes of SRAM scratch",
                         SramOverflowError)
    return best[1], best[0][0], best[2]


def _geometry(ctx: Ctx, node: Node, wsrc: View, wbias: int, bias: View | None,
              bias_const: bool, views: dict[Value, View] | None = None) -> tuple[Conv, Spec]:
    """The convolution's geometry and pipeline spec, for weights read from `wsrc` (CFP bias `wbias`); its
    epilogue (residual, scaling, activation) from the node's attributes (passes/fuse.py)."""
    own, extra = split_inputs(node.inputs, node.attrs)
    x, w = own[:2]
    a = node.attrs
    op = operand_type(ctx)
    views = ctx.views if views is None else views
    rv = views[extra["residual"]] if "residual" in extra else None
    n, c, h, wd = x.type.shape
    o, cg, kh, kw = w.type.shape
    oh, ow = node.output.type.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    pool = next((tuple(st[1:]) for st in steps_of(a) if st[0] == ROW_MAX), None)
    if pool is not None:  # the output has the pooled rows; the convolution computes all of its own
        oh = shapes.conv2d([x.type, w.type], a)[0].shape[2]
    cv = Conv(views[x], wsrc, bias, bias_const, views[node.output], rv, n, c, h, wd, o, cg, kh, kw,
              a["groups"], oh, ow, (sh, sw), (ph, pw), (dh, dw), pool)
    spec = Spec(op, wsrc.dtype, cv.x.dtype, cv.out.dtype, wbias, act_bias(op, ctx, x), bias.dtype if bias else F32,
                steps_of(a), rv.dtype if rv is not None else F32)
    return cv, spec


def matrix_cycles(ctx: Ctx, node: Node) -> int:
    """This kernel's estimate for a convolution whose weights and bias are parameters, declaring nothing:
    their views stand in for the copies `weight_source` and the FP32 bias would make (the plan reads
    only their types)."""
    own, _ = split_inputs(node.inputs, node.attrs)
    wsrc = replace(ctx.views[own[1]], dtype=operand_type(ctx))
    bias = replace(ctx.views[own[2]], dtype=F32) if len(own) == 3 else None
    cv, spec = _geometry(ctx, node, wsrc, 0, bias, True)
    return _plan(ctx, node, cv, spec, True)[1]


@kernel(Op.CONV2D)
def conv2d(ctx: Ctx, node: Node) -> None:
    if depthwise.eligible(ctx, node) and depthwise.chosen(ctx, node, lambda: matrix_cycles(ctx, node)):
        depthwise.depthwise(ctx, node)
        return
    own, _ = split_inputs(node.inputs, node.attrs)
    w = own[1]
    op = operand_type(ctx)
    producers = ctx.graph.producers()
    warr = param_array(ctx, w, producers)
    wsrc, wbias = weight_source(ctx, w, warr, op, node.name) if warr is not None \
        else (ctx.views[w], act_bias(op, ctx, w))
    bias, barr = None, None
    if len(own) == 3:
        barr = param_array(ctx, own[2], producers)
        bias = ctx.weight(f"{node.name}_bias_f32", barr, F32) if barr is not None else ctx.views[own[2]]
    cv, spec = _geometry(ctx, node, wsrc, wbias, bias, barr is not None)
    if node.name in ctx.bands:  # a member of a chain kept in SRAM by rows
        from dojoc.codegen.kernels import band_emit

        band_emit.emit(ctx, node, cv, spec, ctx.bands[node.name])
        return
    found: list[tuple[Plan, int, Bound]] = []

    def search() -> tuple[Plan, int, Bound]:
        """This kernel's search, run once (summa compares with it; the decision takes it)."""
        if not found:
            found.append(_plan(ctx, node, cv, spec, warr is not None))
        return found[0]

    # (SUMMA's epilogue does not pool rows: a row_max step stays on this kernel)
    if warr is not None and cv.pool is None and _implicit_gemm(ctx, node, cv, spec, warr, search):
        return
    kept = held.kept_b(ctx)
    if kept is not None and kept.only:
        raise MappingError(f"op {node.name}: its input is kept in SRAM only, by {kept.name}, for the summa kernel, "
                           f"which cannot take this convolution; give {kept.name} tile keep=1")
    plan = _decide(ctx, node, cv, spec, warr is not None, search)
    items = [(gi, ob, b, ri, ci) for gi in range(cv.g) for ob in range(0, cv.og, plan.ot) for b in range(cv.n)
             for ri in range(0, cv.out_rows, plan.rt) for ci in range(0, cv.ow, plan.ct)]
    for core, (first, count) in zip(plan.cores, split(len(items), len(plan.cores)), strict=False):
        _emit_core(ctx, node, core, cv, plan, spec, items[first:first + count])


def _flat(v: View) -> bool:
    """Whether an NCHW view's pixels are evenly spaced (rows follow each other), so that one image is an
    [C, H * W] matrix."""
    return v.strides[2] == v.shape[3] * v.strides[3]


def _implicit_gemm(ctx: Ctx, node: Node, cv: Conv, spec: Spec, warr: np.ndarray,
                   search: Callable[[], tuple[Plan, int, Bound]]) -> bool:
    """Run the convolution as a SUMMA matmul over the whole mesh (im2col.py) when summa can take it and
    its cost model predicts it faster than this kernel's plan (or a given mapping names it): the weights,
    laid out [O, (tap, channel)], stay resident, each chunk on the core that multicasts it."""
    if cv.g != 1 or not _flat(cv.out) or (cv.residual is not None and not _flat(cv.residual)) \
            or (cv.bias is not None and not cv.bias_const):
        return False
    p, ps = gemm_problems(cv, spec)
    if ps is not None and not summa.eligible(ctx, ps, spec):
        ps = None
    if not summa.eligible(ctx, p, spec):
        return False
    budget = resident_budget(ctx, node, ctx.graph.producers())
    om = summa.decide(ctx, p, spec, lambda: search()[1], "a", budget, shifted=ps)
    if om is None:
        return False
    okc = np.ascontiguousarray(warr.transpose(0, 2, 3, 1).reshape(cv.o, cv.k))  # tap-major, as X_col's rows
    a = ctx.weight(f"{node.name}_okc", okc, spec.a_src)
    kb = with_kept_b(ctx, p) if om.tile_of("sram_b", 0) else None
    run = ps if om.tile_of("shift", 0) and ps is not None else kb if kb is not None else p
    summa.emit(ctx, node, replace(run, a=[a]), spec, om, "a")
    return True


def gemm_problems(cv: Conv, spec: Spec) -> tuple[Problem, Problem | None]:
    """The convolution as SUMMA's implicit GEMM (M = output channels, N = the batch's pixels, K = taps x
    channels), and the form that reads its padded input (its stride phases) once for every tap (or None)."""
    hw = cv.oh * cv.ow

    def per_image(v: View) -> list[View]:
        return [View(v.base + b * v.strides[0], (cv.o, hw), (v.strides[1], v.strides[3]), v.dtype) for b in range(cv.n)]

    geo = Im2col(cv.x, cv.c, cv.h, cv.wd, cv.kw, cv.oh, cv.ow, cv.stride, cv.pad, cv.dil)
    p = Problem([View.dense(0, (cv.o, cv.k), spec.a_src)], [], per_image(cv.out), cv.o, cv.n * hw, cv.k, False,
                r=per_image(cv.residual) if cv.residual is not None else None, im2col=geo, per_view=hw,
                row_bias=cv.bias)
    sh = Shifted.of(geo, cv.kh, cv.n)
    return p, (replace(p, n=sh.n, k=cv.c, im2col=None, per_view=sh.hp * sh.wp, shift=sh) if sh is not None else None)


def _resident(ctx: Ctx, node: Node, core: int, cv: Conv, plan: Plan, spec: Spec,
              run: list[tuple[int, int, int, int, int]]) -> dict[tuple[int, int], int]:
    """Allocate and load the weight blocks (and FP32 bias) of a core's items; a block that does not fit
    is left out (streamed)."""
    out: dict[tuple[int, int], int] = {}
    if not plan.resident:
        return out
    ew, w = spec.a_src.itemsize, cv.w
    so, sc, skh, skw = w.strides
    loads: list[Transfer] = []
    for gi, ob, *_ in run:
        if (gi, ob) in out:
            continue
        ol = min(plan.ot, cv.og - ob)
        wbytes = -(-ol * cv.k * ew // 64) * 64
        with_bias = cv.bias_const
        o0 = gi * cv.og + ob
        copy = transfers(w.base + o0 * so, 0, [(ol, so, cv.k * ew), (cv.kh, skh, cv.kw * cv.cg * ew),
                                               (cv.kw, skw, cv.cg * ew), (cv.cg, sc, ew)], ew)  # (at the copy's start)
        if with_bias and cv.bias is not None:
            copy += transfers(cv.bias.base + o0 * cv.bias.strides[0], wbytes, [(ol, cv.bias.strides[0], 4)], 4)
        addr, new = ctx.resident_copy(core, wbytes + (ol * 4 if with_bias else 0), copy)
        if addr is None:
            break
        out[(gi, ob)] = addr
        loads += new
    load_resident(ctx, core, node, loads)
    return out


def item_steps(cv: Conv, spec: Spec, plan: Plan, tn: int, cl: int, b: int, gi: int, o0: int, ol: int, r0: int,
               rl: int, c0: int, wl: int, res: int | None) -> list[Step]:
    """The steps of one item (image b, group gi, output channels o0.., convolution rows r0.., columns c0..)
    that load its input from DRAM: every tap's rows gathered into one tile (window 2), loaded once per
    channel chunk (window 1), or one window per tap; A from the resident weights at `res` or streamed."""
    ew, ex = spec.a_src.itemsize, spec.b_src.itemsize
    pt = rl * wl
    steps: list[Step] = []
    if plan.window == 2:
        aop = Operand(ol, cv.k, addr=res, stride=cv.k * ew) if res is not None \
            else Operand(ol, cv.k, loads=weights(cv, spec, o0, ol, 0, cv.taps, 0, cv.cg))
        steps = [gather.gathered_step(cv, b, gi, r0, rl, c0, wl, aop)]
    elif plan.window:
        steps = window_steps(cv, spec, b, gi, o0, ol, r0, rl, c0, wl, cl, res)
    for t0 in range(0, cv.taps if not plan.window else 0, tn):
        nt = min(tn, cv.taps - t0)
        for ch in range(0, cv.cg, cl):
            ncl = min(cl, cv.cg - ch)
            bop = Operand(nt * ncl, pt)
            for t in range(t0, t0 + nt):
                lds = tap_window(cv, b, gi * cv.cg + ch, ncl, t, r0, rl, c0, wl, (t - t0) * ncl * pt * ex)
                if lds is None:
                    bop.zero.append(((t - t0) * ncl, ncl))
                else:
                    bop.loads += lds
            if res is not None:
                aop = Operand(ol, nt * ncl, addr=res + (t0 * cv.cg + ch) * ew, stride=cv.k * ew)
            else:
                aop = Operand(ol, nt * ncl, loads=weights(cv, spec, o0, ol, t0, nt, ch, ncl))
            # a step whose taps all read padding adds nothing; keep one so the accumulator is written
            if bop.loads or (not steps and t0 + nt >= cv.taps and ch + ncl >= cv.cg):
                steps.append(Step(aop, bop))
    return steps


def residual_operand(cv: Conv, spec: Spec, b: int, o0: int, ol: int, r0: int, rl: int, c0: int,
                     wl: int) -> Operand | None:
    """The DMA of an item's residual tile, dense [ol, rl x wl] like the result tile (None without one)."""
    if cv.residual is None:
        return None
    rv, er = cv.residual, spec.res_src.itemsize
    rn, ro, rh, rw = rv.strides
    return Operand(ol, rl * wl, loads=[Load(t) for t in transfers(
        rv.base + b * rn + o0 * ro + r0 * rh + c0 * rw, 0, [(ol, ro, rl * wl * er), (rl, rh, wl * er), (wl, rw, er)],
        er)])


def _emit_core(ctx: Ctx, node: Node, core: int, cv: Conv, plan: Plan, spec: Spec,
               run: list[tuple[int, int, int, int, int]]) -> None:
    resident = _resident(ctx, node, core, cv, plan, spec, run)
    streamed = any((gi, ob) not in resident for gi, ob, *_ in run)
    tn, cl = plan.tn, plan.cl
    crt = band_rows(cv, plan.rt)
    kmax = _kmax(ctx, spec, plan.ot, crt * plan.ct, streamed)
    if not _fits(ctx, cv, spec, plan.ot, crt, plan.ct, tn, cl, streamed, plan.window):
        # some weight blocks did not fit the resident SRAM: smaller steps for streaming them
        options = _steps(cv, kmax)
        if not options:
            raise node.error(f"conv2d {node.name}: tiles of {plan.ot} channels x {crt * plan.ct} pixels do "
                             "not fit SRAM scratch", SramOverflowError)
        tn, cl = options[0]
        plan = replace(plan, window=0)
    ew, eo = spec.a_src.itemsize, spec.out.itemsize
    sn, so, sh, sw = cv.out.strides
    items = []
    for gi, ob, b, p0, c0 in run:
        ol, pl, wl = min(plan.ot, cv.og - ob), min(plan.rt, cv.out_rows - p0), min(plan.ct, cv.ow - c0)
        r0, rl, maxima = band(cv, p0, pl)  # the convolution rows of output rows p0 .. p0 + pl - 1
        pt, o0 = rl * wl, gi * cv.og + ob
        res = resident.get((gi, ob))
        steps = item_steps(cv, spec, plan, tn, cl, b, gi, o0, ol, r0, rl, c0, wl, res)
        bias = None
        if cv.bias is not None:
            if res is not None and cv.bias_const:
                bias = Operand(ol, 1, addr=res + -(-ol * cv.k * ew // 64) * 64)
            else:
                eb = cv.bias.dtype.itemsize
                bias = Operand(ol, 1, loads=[Load(t) for t in transfers(
                    cv.bias.base + o0 * cv.bias.strides[0], 0, [(ol, cv.bias.strides[0], eb)], eb)])
        # (the output rows lead each channel's rows of the tile, a row_max step's in place)
        stores = transfers(0, cv.out.base + b * sn + o0 * so + p0 * sh + c0 * sw,
                           [(ol, pt * eo, so), (pl, wl * eo, sh), (wl, eo, sw)], eo)
        rop = residual_operand(cv, spec, b, o0, ol, r0, rl, c0, wl)
        items.append(Item(ol, pt, steps, stores, bias, residual=rop, row_max=maxima, row_width=wl))
    Pipeline(ctx, core, node, spec, items).emit()
