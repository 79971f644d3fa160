"""Softmax, log_softmax, layer norm and (inference) batch norm.

Rows are the normalised slices (`rows.Matrix`: the softmax dim, or layer norm's trailing dims, permuted
innermost); all arithmetic is FP32. A row that fits one tile is loaded once: softmax is vrmax, subtract
(col broadcast), vexp, vrsum, divide; layer norm is the two-pass mean and variance over the tile, then
rsqrt(var + eps), and the weight and bias as row-broadcast operands. A longer row takes two passes over
its column chunks: the first gathers the statistics (softmax: a running max with the sum rescaled
online; layer norm: Chan's combination of the chunks' means and squared deviations), the second
normalises. Layer-norm weights and batch-norm scale/shift that are compile-time constants are folded to
FP32 vectors and kept resident in SRAM; runtime ones are converted in a short phase before the op.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from math import prod

import numpy as np

from dojoc.codegen.context import MAX_COLS, Ctx, box_view, boxes, load_view
from dojoc.codegen.kernels.reduce import var_chunk
from dojoc.codegen.kernels.rows import (
    APPLY,
    HUGE,
    LD_SEMS,
    STATS,
    WHOLE,
    WORK,
    Box,
    Lane,
    Matrix,
    Plan,
    Simd,
    Staged,
    Step,
    T,
    constant,
    plan,
    resident_or_scratch,
    tile_steps,
)
from dojoc.codegen.registry import kernel
from dojoc.codegen.view import View
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from isa.dtypes import DType
from isa.program import TensorKind

FLT_MAX = float(np.finfo(np.float32).max)


@kernel(Op.SOFTMAX, Op.LOG_SOFTMAX)
def softmax(ctx: Ctx, node: Node) -> None:
    """softmax / log_softmax along `dim`: a row per slice along it."""
    src, out = Matrix.pair(ctx, node, (node.attrs["dim"],))
    if src.rows == 0 or src.cols == 0:
        return
    dt = src.view.dtype
    p = plan(ctx, src, 3 * dt.itemsize, ctx.machine.transcendental_passes + 4)
    for core, (first, count) in zip(p.cores, p.runs, strict=False):
        _softmax_rows(Lane(ctx, core, node), src, out, p, p.blocks[first:first + count], node.op is Op.LOG_SOFTMAX)


def _softmax_rows(lane: Lane, src: Matrix, out: Matrix, p: Plan, blocks: list[Box], log: bool) -> None:
    """One core's row blocks: a row in one tile is max, subtract, exp, sum, divide (log: x - max - log
    sum); a longer row gathers its max and sum over the chunks (the sum rescaled online when the max
    grows), then normalises each chunk."""
    simd = lane.simd
    st = Staged(lane, src.view.dtype, p.tile_elems)
    vecs = [lane.alloc(p.max_rows * 4, "row statistics") for _ in range(3)]
    whole = len(p.chunks) == 1
    tmp = lane.alloc(p.tile_elems * 4, "exp tile") if log and whole else 0
    last = len(p.chunks) - 1

    def compute(s: int, bi: int, rb: Box, pas: int, j: int, cb: Box) -> None:
        rows, cols = prod(rb[1]), prod(cb[1])
        t = st.tile(s, rows, cols)
        m, sm, v = (T.vec(a, rows) for a in vecs)  # running max, running sum of exp(x - max), scratch
        if pas == WHOLE:
            simd.reduce("vrmax", m, t)
            simd.bin("sub", t, t, m, "col")
            if log:
                e = t.like(tmp)
                simd.un("vexp", e, t)
                simd.reduce("vrsum", sm, e)
                simd.un("vlog", sm, sm)
                simd.bin("sub", t, t, sm, "col")
            else:
                simd.un("vexp", t, t)
                simd.reduce("vrsum", sm, t)
                simd.bin("div", t, t, sm, "col")
            st.put(s, t, out.box(rb, cb))
        elif pas == STATS:
            # the running max is kept finite: a chunk of -inf (a mask) must not make exp(-inf - -inf) = NaN
            if j == 0:
                simd.reduce("vrmax", m, t)
                simd.imm("max", m, m, -FLT_MAX)
            else:  # online rescaling: sum *= exp(old max - new max)
                simd.reduce("vrmax", v, t)
                simd.bin("max", v, m, v)
                simd.bin("sub", m, m, v)
                simd.un("vexp", m, m)
                simd.bin("mul", sm, sm, m)
                simd.un("vmov", m, v)
            simd.bin("sub", t, t, m, "col")
            simd.un("vexp", t, t)
            if j == 0:
                simd.reduce("vrsum", sm, t)
            else:
                simd.reduce("vrsum", v, t)
                simd.bin("add", sm, sm, v)
            if j == last and log:
                simd.un("vlog", sm, sm)
        else:
            simd.bin("sub", t, t, m, "col")
            if log:
                simd.bin("sub", t, t, sm, "col")
            else:
                simd.un("vexp", t, t)
                simd.bin("div", t, t, sm, "col")
            st.put(s, t, out.box(rb, cb))

    lane.run(tile_steps(src, st.inb, blocks, p.chunks, (WHOLE,) if whole else (STATS, APPLY), compute))


# -- layer norm ----------------------------------------------------------------------------------------

@kernel(Op.LAYER_NORM)
def layer_norm(ctx: Ctx, node: Node) -> None:
    """Layer norm over the last `normalized_ndim` dims (biased variance), then weight and bias."""
    x, w, b = node.inputs
    k = node.attrs["normalized_ndim"]
    src, out = Matrix.pair(ctx, node, range(x.type.rank - k, x.type.rank))
    if src.rows == 0 or src.cols == 0:
        return
    # FP32 weight and bias vectors: folded constants (resident), or runtime values converted first;
    # an all-ones weight or all-zeros bias (LayerNorm without affine) is skipped
    pviews: dict[str, tuple[View, bool]] = {}
    runtime: list[tuple[str, Value]] = []
    for nm, v, skip in (("weight", w, 1.0), ("bias", b, 0.0)):
        c = constant(ctx, v)
        if c is None:
            runtime.append((nm, v))
        elif np.any(c != skip):
            pviews[nm] = (ctx.weight(f"{node.name}_{nm}_f32", c.astype(np.float32).ravel(), DType.F32), True)
    if runtime:
        def copy(simd: Simd, i: list[T], o: list[T]) -> None:
            for a, z in zip(o, i, strict=True):
                simd.un("vmov", a, z)

        conv = to_f32(ctx, node, [v for _, v in runtime], len(runtime), copy)
        pviews.update({nm: (cv, False) for (nm, _), cv in zip(runtime, conv, strict=True)})
    dt = src.view.dtype
    p = plan(ctx, src, 3 * dt.itemsize, ctx.machine.transcendental_passes / src.cols + 8)
    for core, (first, count) in zip(p.cores, p.runs, strict=False):
        _ln_rows(Lane(ctx, core, node), src, out, p, p.blocks[first:first + count], pviews, node.attrs["eps"])


def _ln_rows(lane: Lane, src: Matrix, out: Matrix, p: Plan, blocks: list[Box], pviews: dict[str, tuple[View, bool]],
             eps: float) -> None:
    """One core's row blocks: a row in one tile gets the exact two-pass mean and variance; a longer row
    folds its chunks into (mean, m2) with Chan's formula, then normalises each chunk."""
    simd = lane.simd
    st = Staged(lane, src.view.dtype, p.tile_elems)
    pw, pb = (resident_or_scratch(lane, *pviews[nm], what=nm) if nm in pviews else None
              for nm in ("weight", "bias"))
    vecs = [lane.alloc(p.max_rows * 4, "row statistics") for _ in range(5)]
    whole = len(p.chunks) == 1
    sq = lane.alloc(p.tile_elems * 4, "squares tile") if whole else 0
    n = src.cols
    last = len(p.chunks) - 1

    def compute(s: int, bi: int, rb: Box, pas: int, j: int, cb: Box) -> None:
        rows, cols = prod(rb[1]), prod(cb[1])
        t = st.tile(s, rows, cols)
        mean, m2, *rest = (T.vec(a, rows) for a in vecs)
        if pas == STATS:
            var_chunk(simd, t, m2, [mean] + rest, sum(prod(c[1]) for c in p.chunks[:j]))
        elif pas == WHOLE:  # two-pass statistics over the tile, leaving t centred
            simd.reduce("vrsum", mean, t)
            simd.imm("div", mean, mean, n)
            simd.bin("sub", t, t, mean, "col")
            simd.bin("mul", t.like(sq), t, t)
            simd.reduce("vrsum", m2, t.like(sq))
        if pas == WHOLE or (pas == STATS and j == last):  # m2 -> 1 / sqrt(m2 / n + eps)
            simd.imm("div", m2, m2, n)
            simd.imm("add", m2, m2, eps)
            simd.un("vrsqrt", m2, m2)
        if pas == STATS:
            return
        if pas == APPLY:
            simd.bin("sub", t, t, mean, "col")
        simd.bin("mul", t, t, m2, "col")
        c0 = src.col_offset(cb)
        if pw is not None:
            simd.bin("mul", t, t, T(pw + 4 * c0, 1, cols, WORK, 4 * cols), "row")
        if pb is not None:
            simd.bin("add", t, t, T(pb + 4 * c0, 1, cols, WORK, 4 * cols), "row")
        st.put(s, t, out.box(rb, cb))

    lane.run(tile_steps(src, st.inb, blocks, p.chunks, (WHOLE,) if whole else (STATS, APPLY), compute))


# -- batch norm ----------------------------------------------------------------------------------------

@kernel(Op.BATCH_NORM)
def batch_norm(ctx: Ctx, node: Node) -> None:
    """x * scale[c] + shift[c], scale = weight / sqrt(var + eps), shift = bias - mean * scale."""
    x = node.inputs[0]
    c = x.type.shape[1]
    eps = node.attrs["eps"]
    consts = [constant(ctx, v) for v in node.inputs[1:]]
    if all(a is not None for a in consts):  # fold at compile time, in float64
        wt, bs, mu, var = (np.broadcast_to(a, (c,)) for a in consts if a is not None)
        scale = wt / np.sqrt(var + eps)
        shift = bs - mu * scale
        vs = [ctx.weight(f"{node.name}_{nm}_f32", a.astype(np.float32), DType.F32)
              for nm, a in (("scale", scale), ("shift", shift))]
        resident = True
    else:
        def body(simd: Simd, i: list[T], o: list[T]) -> None:
            simd.imm("add", o[0], i[3], eps)
            simd.un("vrsqrt", o[0], o[0])
            simd.bin("mul", o[0], o[0], i[0])  # scale
            simd.bin("mul", o[1], i[2], o[0])
            simd.bin("sub", o[1], i[1], o[1])  # shift

        vs = to_f32(ctx, node, list(node.inputs[1:]), 2, body)
        resident = False
    rank = x.type.rank
    spatial = prod(x.type.shape[2:])
    xv, ov = ctx.views[x], ctx.views[node.output]
    if spatial > 1:  # rows are (n, c) planes; each row's scale and shift come with its tile
        src, out = Matrix.of(xv, (0, 1), range(2, rank)), Matrix.of(ov, (0, 1), range(2, rank))
        per_row = [View(v.base, (x.type.shape[0], c), (0, 4), DType.F32) for v in vs]
    else:  # [N, C(, 1, ...)]: rows are samples, channels are columns, scale and shift row-broadcast
        rdims = [0] + list(range(2, rank))
        src, out = Matrix.of(xv, rdims, (1,)), Matrix.of(ov, rdims, (1,))
        per_row = []
    if src.rows == 0 or src.cols == 0:
        return
    dt = src.view.dtype
    p = plan(ctx, src, 2 * dt.itemsize, 3)
    for core, (first, count) in zip(p.cores, p.runs, strict=False):
        lane = Lane(ctx, core, node)
        _bn_rows(lane, src, out, p, p.blocks[first:first + count], vs, resident, per_row)


def _bn_rows(lane: Lane, src: Matrix, out: Matrix, p: Plan, blocks: list[Box], vs: list[View], resident: bool,
             per_row: list[View]) -> None:
    """One core's row blocks of batch norm: t * scale + shift, the vectors col- or row-broadcast."""
    st = Staged(lane, src.view.dtype, p.tile_elems)
    simd = lane.simd
    if per_row:
        bufs = [lane.slots(p.max_rows * 4, "scale/shift column") for _ in per_row]
    else:
        res = [resident_or_scratch(lane, v, resident, what="scale/shift") for v in vs]

    def loads(s: int, rb: Box, cb: Box) -> list[tuple[View, int]]:
        ls = [(src.box(rb, cb), st.inb[s])]
        return ls + [(box_view(v, rb[0], rb[1]), b[s]) for v, b in zip(per_row, bufs, strict=True)] if per_row \
            else ls

    def compute(s: int, rb: Box, cb: Box) -> None:
        rows, cols = prod(rb[1]), prod(cb[1])
        t = st.tile(s, rows, cols)
        if per_row:
            sc, sh = (T.vec(b[s], rows) for b in bufs)
            bc = "col"
        else:
            c0 = src.col_offset(cb)
            sc, sh = (T(a + 4 * c0, 1, cols, WORK, 4 * cols) for a in res)
            bc = "row"
        simd.bin("mul", t, t, sc, bc)
        simd.bin("add", t, t, sh, bc)
        st.put(s, t, out.box(rb, cb))

    lane.run([Step(partial(loads, rb=rb, cb=cb), partial(compute, rb=rb, cb=cb)) for rb in blocks for cb in p.chunks])


# -- runtime vectors ---------------------------------------------------------------------------------

def to_f32(ctx: Ctx, node: Node, ins: list[Value], nout: int,
           body: Callable[[Simd, list[T], list[T]], None]) -> list[View]:
    """`nout` dense FP32 DRAM vectors computed by `body` from runtime vectors `ins` (all of one size),
    piece by piece on core 0, in a phase of its own before the op (ended by a barrier)."""
    n = ins[0].type.numel
    outs = [ctx.dram(f"{node.name}_f32_{i}", TensorKind.SCRATCH, (n,), DType.F32) for i in range(nout)]
    lane = Lane(ctx, 0, node)
    piece = min(n, MAX_COLS)
    dts = [ctx.views[v].dtype for v in ins]
    inb = [lane.alloc(piece * d.itemsize, "runtime vector") for d in dts]
    wk = [lane.alloc(piece * 4, "runtime vector (fp32)") if d != WORK else a for d, a in zip(dts, inb, strict=True)]
    ob = [lane.alloc(piece * 4, "folded vector") for _ in range(nout)]
    cuts = [boxes(ctx.views[v].shape, piece, max_rows=HUGE, max_cols=HUGE) for v in ins]
    with lane.cc.op(node.name, node.source):
        at = 0
        for pieces in zip(*cuts, strict=True):  # same shapes: the same pieces
            m = prod(pieces[0][1])
            cnt = 0
            for v, (starts, sizes), a in zip(ins, pieces, inb, strict=True):
                cnt += load_view(lane.cc, box_view(ctx.views[v], starts, sizes), a, LD_SEMS[0])
            lane.cc.wait(LD_SEMS[0], cnt)
            it = [T.dense(w, 1, m, WORK) for w in wk]
            for a, d, w in zip(inb, dts, it, strict=True):
                if d != WORK:
                    lane.simd.cvt(w, T.dense(a, 1, m, d))
            ot = [T.dense(o, 1, m, WORK) for o in ob]
            for o in ot:
                lane.ready(o.addr)
            body(lane.simd, it, ot)
            for o, dst in zip(ot, outs, strict=True):
                lane.store(o.addr, dst.slice(0, at, at + m))
            at += m
        lane.drain()
    ctx.builder.barrier()
    ctx.begin_op()
    return outs
