"""Reductions (sum, mean, amax, amin, var) and cumsum.

The reduced dims are permuted innermost (`rows.Matrix`), so every output element is the reduction of
one row. A core reduces each tile of its row blocks with one row-reduction instruction (`vrsum`,
`vrmax`, `vrmin`, axis=row) into a column of partial results, and combines the partials of a row's
column chunks (add, max, min) when the row is longer than a tile. Sums run in FP32 (BF16 tiles are
widened first; the SIMD unit sums a tile in FP32 or wider); max and min are exact in any type, so they
run on the storage type, integers included. The variance combines the chunks' (count, mean, sum of
squared deviations) with Chan's parallel formula, so it never subtracts two large sums of squares.
cumsum scans each chunk (`vcumsum`, axis=row) and adds the previous chunk's last column as a carry.
"""

from __future__ import annotations

from dataclasses import replace
from math import prod

from dojoc.codegen.context import Ctx, split
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.kernels.rows import (
    FULL_CHUNK,
    WHOLE,
    Box,
    Lane,
    Matrix,
    Plan,
    Simd,
    Staged,
    T,
    drop_dims,
    plan,
    tile_steps,
    work_dtype,
)
from dojoc.codegen.registry import kernel
from dojoc.codegen.view import View
from dojoc.ir.graph import Node
from dojoc.ir.ops import Op
from isa.dtypes import DType
from isa.program import TensorKind

REDUCER = {Op.SUM: "vrsum", Op.MEAN: "vrsum", Op.VAR: "vrsum", Op.AMAX: "vrmax", Op.AMIN: "vrmin"}
COMBINE = {"vrsum": "add", "vrmax": "max", "vrmin": "min"}


@kernel(Op.SUM, Op.MEAN, Op.AMAX, Op.AMIN, Op.VAR)
def reduction(ctx: Ctx, node: Node) -> None:
    """Reduce over `dims`: one output element per row of the permuted input."""
    x = node.inputs[0]
    dims = tuple(node.attrs["dims"])
    kept = [d for d in range(x.type.rank) if d not in dims]
    src = Matrix.of(ctx.views[x], kept, dims)
    out_v = ctx.views[node.output]
    if node.attrs["keepdim"]:
        out_v = drop_dims(out_v, dims)
    out = Matrix.of(out_v, range(len(kept)), ())
    if src.rows == 0:
        return
    if src.cols == 0:  # an empty reduction: the identity of sum, and NaN for mean and var (as torch)
        fill(ctx, ctx.views[node.output], 0.0 if node.op is Op.SUM else float("nan"), node.name, node.source)
        return
    dt = src.view.dtype
    var = node.op is Op.VAR
    m = REDUCER[node.op]
    divisor: float | None = None
    if node.op is Op.MEAN:
        divisor = src.cols
    elif var:
        divisor = max(src.cols - node.attrs["correction"], 0.0)
    p = plan(ctx, src, dt.itemsize, (4.0 if var else 1.0) + (1 if dt == DType.BF16 else 0),  # + widening
             shrink=False)
    parts = min(p.want, len(p.chunks))  # splitting the columns pays when it reaches twice the cores
    split_cols = not var and parts >= 2 * len(p.runs)
    ctx.shrink_region(parts if split_cols else len(p.runs))
    if split_cols:
        _split_columns(ctx, node, src, out, p, parts, m, divisor)
        return
    for core, (first, count) in zip(p.cores, p.runs, strict=False):
        _reduce_rows(Lane(ctx, core, node), src, out, p, p.blocks[first:first + count], m, var, divisor)


def _split_columns(ctx: Ctx, node: Node, src: Matrix, out: Matrix, p: Plan, parts: int, m: str,
                   divisor: float | None) -> None:
    """Few rows, long ones (a full reduction): each of `parts` cores reduces a run of column chunks of
    every row into a row of partials in DRAM; after a barrier one pass reduces the partials."""
    wdt = src.view.dtype if m != "vrsum" else work_dtype(src.view.dtype)
    partials = ctx.dram(f"{node.name}_partials", TensorKind.SCRATCH, (parts,) + src.rshape, wdt)
    per_part = partials.nbytes // parts
    for i, (core, (first, count)) in enumerate(zip(p.cores, split(len(p.chunks), parts), strict=False)):
        # the i-th part's slot (not the core id's: a region need not be cores 0 .. parts - 1)
        dst = Matrix.of(View.dense(partials.base + i * per_part, src.rshape, wdt), range(src.nrow), ())
        sub = replace(p, chunks=p.chunks[first:first + count])
        _reduce_rows(Lane(ctx, core, node), src, dst, sub, p.blocks, m, False, None)
    ctx.builder.barrier()
    ctx.begin_op()
    psrc = Matrix.of(partials, range(1, 1 + src.nrow), (0,))
    pp = plan(ctx, psrc, wdt.itemsize, 1.0)
    for core, (first, count) in zip(pp.cores, pp.runs, strict=False):
        _reduce_rows(Lane(ctx, core, node), psrc, out, pp, pp.blocks[first:first + count], m, False, divisor)


def _reduce_rows(lane: Lane, src: Matrix, out: Matrix, p: Plan, blocks: list[Box], m: str, var: bool,
                 divisor: float | None) -> None:
    """One core's row blocks: stream the tiles, reduce each with `m` (Chan's moments when `var`),
    combine a row's chunks, divide by `divisor` (mean, var), store the rows."""
    dt = src.view.dtype
    odt = out.view.dtype
    exact = m != "vrsum"  # max and min need no widening
    wdt = dt if exact else work_dtype(dt)
    nr, el = p.max_rows, p.tile_elems
    inb = lane.slots(el * dt.itemsize, "input tile")
    work = None if wdt == dt else lane.alloc(el * wdt.itemsize, "work tile")
    acc = lane.slots(nr * wdt.itemsize, "row results")  # one per block parity: a store may still read it
    res = None if odt == wdt else lane.slots(nr * odt.itemsize, "narrowed row results")
    vec = [lane.alloc(nr * wdt.itemsize, "partials") for _ in range(4 if var else 1)]
    simd = lane.simd
    last = len(p.chunks) - 1

    def compute(s: int, bi: int, rb: Box, pas: int, j: int, cb: Box) -> None:
        rows, cols = prod(rb[1]), prod(cb[1])
        t = T.dense(inb[s], rows, cols, dt)
        if work is not None:
            w = t.like(work, wdt)
            simd.cvt(w, t)
            t = w
        a = T.vec(acc[bi % 2], rows, wdt)
        if j == 0:
            lane.ready(a.addr)
        if var:
            seen = sum(prod(c[1]) for c in p.chunks[:j])
            var_chunk(simd, t, a, [T.vec(v, rows, wdt) for v in vec], seen)
        elif j == 0:
            simd.reduce(m, a, t)
        else:
            part = T.vec(vec[0], rows, wdt)
            simd.reduce(m, part, t)
            simd.bin(COMBINE[m], a, a, part)
        if j < last:
            return
        if divisor is not None:  # var: x / 0 -> inf or nan, as torch
            simd.imm("div", a, a, divisor)
        if res is None:
            lane.store(a.addr, out.box(rb, FULL_CHUNK))
        else:
            r = T.vec(res[bi % 2], rows, odt)
            lane.ready(r.addr)
            simd.cvt(r, a)
            lane.store(r.addr, out.box(rb, FULL_CHUNK))

    lane.run(tile_steps(src, inb, blocks, p.chunks, (WHOLE,), compute))


def var_chunk(simd: Simd, t: T, m2: T, vecs: list[T], seen: int) -> None:
    """Fold tile t (a chunk of each row) into the running (mean, m2) of its rows, `seen` columns so far.

    vecs = [mean, chunk mean, chunk m2, scratch]. A chunk's own mean and sum of squared deviations are
    exact two-pass results over the tile (t is overwritten); Chan et al. combine them with the totals.
    """
    mean, cmean, cm2, d = vecs
    n_b = t.cols
    first = seen == 0
    mv, sv = (mean, m2) if first else (cmean, cm2)
    simd.reduce("vrsum", mv, t)
    simd.imm("div", mv, mv, n_b)
    simd.bin("sub", t, t, mv, "col")
    simd.bin("mul", t, t, t)
    simd.reduce("vrsum", sv, t)
    if first:
        return
    n = seen + n_b
    simd.bin("sub", d, cmean, mean)  # delta = chunk mean - mean
    simd.imm("mul", cmean, d, n_b / n)
    simd.bin("add", mean, mean, cmean)  # mean += delta * n_b / n
    simd.bin("mul", d, d, d)
    simd.imm("mul", d, d, seen * n_b / n)
    simd.bin("add", m2, m2, cm2)
    simd.bin("add", m2, m2, d)  # m2 += m2_b + delta^2 * n_a * n_b / n


@kernel(Op.CUMSUM)
def cumsum(ctx: Ctx, node: Node) -> None:
    """Inclusive prefix sum along `dim`: rows are the other dims, each chunk carries the previous one's
    last column."""
    src, out = Matrix.pair(ctx, node, (node.attrs["dim"],))
    if src.rows == 0 or src.cols == 0:
        return
    dt = src.view.dtype
    p = plan(ctx, src, 2 * dt.itemsize, 2.0)
    for core, (first, count) in zip(p.cores, p.runs, strict=False):
        _cumsum_rows(Lane(ctx, core, node), src, out, p, p.blocks[first:first + count])


def _cumsum_rows(lane: Lane, src: Matrix, out: Matrix, p: Plan, blocks: list[Box]) -> None:
    """One core's row blocks: scan each chunk, add the carry, keep the last column as the next carry."""
    st = Staged(lane, src.view.dtype, p.tile_elems)
    carry = lane.alloc(p.max_rows * st.wdt.itemsize, "carry")
    last = len(p.chunks) - 1
    simd = lane.simd

    def compute(s: int, bi: int, rb: Box, pas: int, j: int, cb: Box) -> None:
        rows, cols = prod(rb[1]), prod(cb[1])
        t = st.tile(s, rows, cols)
        c = T.vec(carry, rows, st.wdt)
        simd.scan("vcumsum", t, t)
        if j > 0:
            simd.bin("add", t, t, c, "col")
        if j < last:
            simd.un("vmov", c, t.col(cols - 1))
        st.put(s, t, out.box(rb, cb))

    lane.run(tile_steps(src, st.inb, blocks, p.chunks, (WHOLE,), compute))
