"""Matrix multiplication, [..., M, K] @ [..., K, N] with broadcast batch dims, on a region of cores.

The output is cut into tiles [Mt, Nt] of one batch item (the *items*); a cost model on `isa.costs`
picks the tile size and `ctx.cores_for` the number of cores, and each core takes a contiguous run of
items. Per item the core loops over K in chunks: A [Mt, Kc] and B [Kc, Nt] arrive by DMA (double
buffered, see mxu.Pipeline), one mma per chunk accumulates in FP32, then the node's epilogue (put there
by the fuse pass) runs on the FP32 tile and the tile is converted to the output type and stored: a linear
layer's bias (one row of FP32 biases repeated down the tile), a residual tile DMA'd in with the item's
first step, scaling, an activation. When B is a weight (a PARAM) each core keeps the B columns of its
items resident in SRAM (with the FP32 bias of those columns), loaded once before the call; a core whose
resident SRAM is full streams them instead.

When B is shared by every batch item (x [B, S, K] @ w [K, N], a linear layer) and A and the output
merge their batch dims into rows, the batch folds into M: fewer, taller tiles and one copy of each B tile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import ceil, prod

import numpy as np

from dojoc.codegen.context import MAX_ROWS, Ctx, split
from dojoc.codegen.kernels import held, shared_a, summa
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.kernels.im2col import Im2col, Shifted
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
    resident_free,
    weight_source,
)
from dojoc.codegen.kernels.mxu_plan import check_split, check_tile, overlapped_bound, splits
from dojoc.codegen.paths import port_path
from dojoc.codegen.registry import kernel
from dojoc.codegen.view import Transfer, View, transfers
from dojoc.errors import MappingError, SramOverflowError
from dojoc.ir.epilogue import split_inputs, steps_of
from dojoc.ir.graph import Node
from dojoc.ir.ops import Op
from dojoc.mapping.model import Bound, OpMapping
from isa.costs import matmul_cycles, vector_cycles

MAX_TILE = MAX_ROWS  # rows, columns and k of an mma
SLACK = 1024  # scratch bytes left for alignment of the pipeline's buffers


@dataclass(frozen=True)
class Problem:
    """A batch of 2-D matmuls: per batch item the A [M, K], B [K, N] and output [M, N] views."""

    a: list[View]
    b: list[View]
    o: list[View]
    m: int
    n: int
    k: int
    shared_b: bool  # every batch item reads the same B
    bias: View | None = None  # the FP32 bias per column [N]
    norm: View | None = None  # a layer_norm step's FP32 weights then biases [2, N]
    r: list[View] | None = None  # the epilogue's residual [M, N] per batch item
    # a convolution as implicit GEMM (summa only): B is its input's shifted windows, never a view; the
    # output and residual are one [O, pixels] view per image of `per_view` pixels; the bias is per row
    im2col: Im2col | None = None
    per_view: int = 0
    row_bias: View | None = None
    # a convolution whose B is its padded input (its stride phases), read once for every tap
    # (im2col.Shifted): K is its input channels, A [M, taps x K] its weights tap-major, N its grid
    shift: Shifted | None = None
    # a 1 x 1 convolution whose input its producer keeps in SRAM in SUMMA's blocks (held.b_reader): K's chunks
    # are the producer's row blocks, and chunk t of column block j comes from the core that has block (t, j)
    b_kept: held.Kept | None = None

    @property
    def taps(self) -> int:
        """Multiplies per K chunk: one per tap of a shifted convolution, else one."""
        return self.shift.taps if self.shift is not None else 1

    @property
    def phases(self) -> int:
        """Row blocks of a B chunk: one per stride phase of a shifted convolution's input, else one."""
        return self.shift.phases if self.shift is not None else 1

    @property
    def halo(self) -> int:
        """Columns a B chunk carries past its block's (a shifted convolution's last tap offset)."""
        return self.shift.halo if self.shift is not None else 0


@dataclass(frozen=True)
class Plan:
    mt: int
    nt: int
    kc: int  # K chunk of a step
    cores: list[int]
    resident: bool  # try to keep B tiles resident
    share_a: bool = False  # every core keeps the whole A, multicast once (shared_a.py)


def _views2d(v: View, batch: tuple[int, ...]) -> list[View]:
    """The 2-D views of each batch item of a [*batch, R, C] view, in row-major batch order."""
    out = []
    for idx in np.ndindex(*batch) if batch else [()]:
        base = v.base + sum(i * s for i, s in zip(idx, v.strides, strict=False))
        out.append(View(base, v.shape[-2:], v.strides[-2:], v.dtype))
    return out


def _problem(a: View, b: View, o: View, batch: tuple[int, ...], r: View | None = None) -> Problem:
    m, k = a.shape[-2:]
    n = b.shape[-1]
    shared = all(s == 0 for s in b.strides[:-2])
    if batch and shared:  # fold the batch into M when the strides allow it
        bt = prod(batch)
        a2, o2 = a.reshape((bt * m, k)), o.reshape((bt * m, n))
        r2 = r.reshape((bt * m, n)) if r is not None else None
        if a2 is not None and o2 is not None and (r is None or r2 is not None):
            return Problem([a2], _views2d(b, batch)[:1], [o2], bt * m, n, k, True, r=[r2] if r2 is not None else None)
    return Problem(_views2d(a, batch), _views2d(b, batch), _views2d(o, batch), m, n, k, shared,
                   r=_views2d(r, batch) if r is not None else None)


def _fit_kc(ctx: Ctx, spec: Spec, mt: int, nt: int, k: int, b_streamed: bool, panel: int = 0) -> int | None:
    """The K chunk that fits the scratch SRAM with double-buffered tiles (and a shared A's `panel` bytes,
    which are not staged), or None."""
    direct = spec.out is F32
    fixed = mt * nt * 4 * (2 if direct else 1) + (0 if direct else 2 * mt * nt * spec.out.itemsize) + panel
    if spec.col_bias:  # the two staging buffers of streamed column biases
        fixed += 2 * (-(-nt * 4 // 64) * 64)
    fixed += spec.epilogue_bytes(mt * nt, mt, nt)
    per_k = 0 if panel else 2 * mt * spec.a_src.itemsize + (mt * spec.op.itemsize if spec.a_src is not spec.op else 0)
    if b_streamed:
        per_k += 2 * nt * spec.b_src.itemsize + (nt * spec.op.itemsize if spec.b_src is not spec.op else 0)
    room = ctx.scratch_bytes - SLACK - fixed
    kc = min(k, MAX_TILE, (room // per_k if per_k else k) if room > 0 else 0)
    if kc < min(k, 8):
        return None
    return ceil(k / ceil(k / kc))


def _item_cycles(ctx: Ctx, spec: Spec, mt: int, nt: int, k: int, kc: int, b_streamed: bool) -> int:
    """Core cycles of one item: a conversion (cfp8) and an mma per K chunk, then the epilogue."""
    m = ctx.machine
    step = matmul_cycles(mt, nt, kc, spec.op, True, m)
    ea, eb, eop = spec.a_src.itemsize, spec.b_src.itemsize, spec.op.itemsize
    if spec.a_src is not spec.op:
        step += vector_cycles(mt * kc, max(ea, eop), mt * kc * ea, mt * kc * eop, m)
    if b_streamed and spec.b_src is not spec.op:
        step += vector_cycles(nt * kc, max(eb, eop), nt * kc * eb, nt * kc * eop, m)
    eo = spec.out.itemsize
    bias = vector_cycles(mt * nt, 4, mt * nt * 4 + nt * 4, mt * nt * 4, m) if spec.col_bias else 0
    return (ceil(k / kc) * step + bias + spec.epilogue_cycles(mt, nt, m)
            + vector_cycles(mt * nt, 4, mt * nt * 4, mt * nt * eo, m))


def _estimate(ctx: Ctx, p: Problem, spec: Spec, mt: int, nt: int, kc: int, cores: list[int],
              resident: bool, bc: shared_a.Broadcast | None = None) -> tuple[int, Bound]:
    """The cost model's cycles and bound for tiles mt x nt, K chunk kc on ncores: compute per core
    (isa.costs) against DRAM traffic (A is re-read once per column tile, or with `bc` once for the region,
    B once per row tile unless it is resident); a shared A's first item follows its chunks' multicasts."""
    nb = len(p.a)
    ea, eb, eo = spec.a_src.itemsize, spec.b_src.itemsize, spec.out.itemsize
    items = nb * ceil(p.m / mt) * ceil(p.n / nt)
    run = ceil(items / len(cores))
    a_bytes = shared_a.dram_bytes(p, spec, bc) if bc is not None else items * mt * p.k * ea
    traffic = a_bytes + nb * p.m * p.n * eo + (0 if resident else items * p.k * nt * eb) \
        + (nb * p.m * p.n * spec.res_src.itemsize if spec.residual else 0)
    item = _item_cycles(ctx, spec, mt, nt, p.k, kc, not resident)
    # (a step loads its B chunk unless B is resident; with a shared A and resident B, only items store)
    steps = run * ceil(p.k / kc) if bc is None or not resident else run
    t, bound = overlapped_bound(ctx, run * item, traffic, steps, cores, run)
    if bc is None:
        return t, bound
    whole, first = shared_a.link_cycles(ctx, p, spec, bc, kc)
    way = port_path(ctx.machine, tuple(cores))
    # the first chunk's DMA and multicasts come before any multiply; the first item waits for chunks that
    # the links bring more slowly; every core ends at once, and their last tiles' stores queue at the port
    late = way.latency + first + max(0.0, whole - item) \
        + max(0.0, len(cores) * mt * nt * eo * way.cycles_per_byte - item)
    return round(t + late), Bound.LINK if whole > item else bound


def _axes(p: Problem, mt: int, nt: int) -> tuple[tuple[str, int], ...]:
    return (("batch", len(p.a)), ("rows", ceil(p.m / mt)), ("cols", ceil(p.n / nt)))


def _decide(ctx: Ctx, node: Node, p: Problem, spec: Spec, weight: bool,
            search: Callable[[], tuple[Plan, int, Bound]]) -> Plan:
    """The op's decision (the user's, checked, or the cost model's: `search()`) as a Plan."""

    def default() -> OpMapping:
        plan, cycles, bound = search()
        return OpMapping("", "matmul", tuple(plan.cores), _axes(p, plan.mt, plan.nt),
                         (("m", plan.mt), ("n", plan.nt), ("k", plan.kc)) + ((("share_a", 1),) if plan.share_a else ()),
                         plan.resident, predicted_cycles=cycles, bound=bound)

    def check(om: OpMapping) -> OpMapping:
        mt, nt, kc = check_tile(om, {"m": min(p.m, MAX_TILE), "n": min(p.n, MAX_TILE), "k": min(p.k, MAX_TILE)})
        check_split(om, _axes(p, mt, nt), weight)
        bc = _shared_region(ctx, node, om, p, spec, mt)
        panel = shared_a.panel_bytes(p, spec) if bc is not None else 0
        fit = _fit_kc(ctx, spec, mt, nt, p.k, not om.resident, panel)
        if bc is not None and fit is None and panel >= ctx.scratch_bytes:
            raise MappingError(f"op {om.key}: tile share_a=1: the shared A alone ({panel:,} "
                               f"bytes) is larger than the {ctx.scratch_bytes:,} bytes of SRAM scratch; set share_a "
                               "to 0", node=node.name, shapes=node.signature(), source=node.source)
        if fit is None or kc > fit:
            raise MappingError(f"op {om.key}: tiles m={mt} n={nt} with k={kc} and their double buffers "
                               f"{'and the shared A ' if bc is not None else ''}do not fit the "
                               f"{ctx.scratch_bytes:,} bytes of SRAM scratch; the largest k that fits is {fit or 0}",
                               node=node.name, shapes=node.signature(), source=node.source)
        cycles, bound = _estimate(ctx, p, spec, mt, nt, kc, list(om.cores), om.resident, bc)
        return replace(om, predicted_cycles=cycles, bound=bound)

    om = ctx.decide("matmul", default, check)
    mt, nt, kc = (int(om.tile_of(a) or 0) for a in ("m", "n", "k"))
    return Plan(mt, nt, kc, list(om.cores), om.resident, bool(om.tile_of("share_a", 0)))


def _shared_region(ctx: Ctx, node: Node, om: OpMapping, p: Problem, spec: Spec, mt: int) -> shared_a.Broadcast | None:
    """A given decision's shared-A region (tile field share_a = 1), checked; None without it."""
    share = om.tile_of("share_a", 0)
    if share not in (0, 1):
        raise MappingError(f"op {om.key}: tile share_a={share}: give 0 (each core reads its A tiles) or 1 (one "
                           "read of A, multicast to every core)")
    if not share:
        return None
    why = shared_a.ineligible(p, spec)
    if not why and mt != p.m:
        why = f"every tile must take all {p.m} rows of A (m={p.m}), not m={mt}"
    bc, where = shared_a.of_cores(ctx, list(om.cores))
    if not why and bc is None:
        why = where
    if why:
        raise MappingError(f"op {om.key}: tile share_a=1: {why}; set share_a to 0", node=node.name,
                           shapes=node.signature(), source=node.source)
    return bc


def _plan(ctx: Ctx, node: Node, p: Problem, spec: Spec, weight: bool) -> tuple[Plan, int, Bound]:
    """Choose the tile size and the cores with the cost model (`_estimate`)."""
    region = Region(ctx)
    budget = resident_budget(ctx, node, ctx.graph.producers()) if weight else 0
    nb = len(p.a)
    eb = spec.b_src.itemsize
    best: tuple[tuple[int, int], Plan, Bound] | None = None
    for mt in [c for c in splits(p.m) if c <= MAX_TILE]:
        # (a layer norm in the epilogue normalises whole rows: one tile spans N)
        for nt in [c for c in splits(p.n) if c <= MAX_TILE and (spec.norm is None or c == p.n)]:
            nm, nn = ceil(p.m / mt), ceil(p.n / nt)
            items = nb * nm * nn
            kc = _fit_kc(ctx, spec, mt, nt, p.k, False)
            if kc is None:
                continue
            ncores = ctx.cores_for(items * _item_cycles(ctx, spec, mt, nt, p.k, kc, False), items)
            run = ceil(items / ncores)
            per_block = (nb if p.shared_b else 1) * nm  # consecutive items that share one B tile
            blocks = min(ceil((run - 1) / per_block) + 1, nn * (1 if p.shared_b else nb))
            need = blocks * (p.k * nt * eb + (nt * 4 if p.bias is not None else 0)
                             + (2 * nt * 4 if p.norm is not None else 0))
            resident = weight and region.fits(ncores, need) and need * ncores <= budget
            if not resident:
                kc = _fit_kc(ctx, spec, mt, nt, p.k, True)
                if kc is None:
                    continue
            cores = region.pick(ncores, need if resident else 0)
            for kcd in {ceil(p.k / ceil(p.k / c)) for c in splits(kc, 8, (1, 2, 3, 4, 6, 8))}:
                if best is not None and not ctx.costed():  # (the first candidate is always priced)
                    continue
                cycles, bound = _estimate(ctx, p, spec, mt, nt, kcd, cores, resident)
                key = (cycles, ncores)
                if best is None or key < best[0]:
                    best = (key, Plan(mt, nt, kcd, cores, resident), bound)
    for plan, cycles, bound in _shared_plans(ctx, p, spec, weight, budget):
        if best is None or (cycles, len(plan.cores)) < best[0]:
            best = ((cycles, len(plan.cores)), plan, bound)
    if best is None:
        raise node.error(f"matmul {node.name} fits no tile in {ctx.scratch_bytes:,} bytes of SRAM scratch",
                         SramOverflowError)
    return best[1], best[0][0], best[2]


def _shared_plans(ctx: Ctx, p: Problem, spec: Spec, weight: bool, budget: int) -> list[tuple[Plan, int, Bound]]:
    """Candidates that share A (shared_a.py): tiles of all M rows, over the whole die rows that give every
    core a tile, B resident when it is a weight and fits, the K chunks that the panel leaves room for."""
    if not shared_a.eligible(p, spec) or p.m > MAX_TILE:
        return []
    panel, eb = shared_a.panel_bytes(p, spec), spec.b_src.itemsize
    out: list[tuple[Plan, int, Bound]] = []
    # (and the widths that give every core of the die the same number of tiles)
    rows = shared_a.die_rows(ctx)
    die = sum(map(len, rows))
    even = {ceil(p.n / (die * r)) for r in range(1, 9)}
    for nt in sorted(set(splits(p.n)) | even, reverse=True):
        if nt > MAX_TILE or nt < shared_a.MIN_COLS or (spec.norm is not None and nt != p.n):
            continue
        bc = shared_a.region(ctx, rows, ceil(p.n / nt))
        if bc is None:
            continue
        cores = bc.cores
        run = ceil(ceil(p.n / nt) / len(cores))
        need = run * (p.k * nt * eb + (nt * 4 if p.bias is not None else 0) + (2 * nt * 4 if p.norm is not None else 0))
        resident = weight and need * len(cores) <= budget and all(resident_free(ctx, c) >= need for c in cores)
        kc = _fit_kc(ctx, spec, p.m, nt, p.k, not resident, panel)
        if kc is None:
            continue
        for kcd in sorted({ceil(p.k / ceil(p.k / c)) for c in splits(kc, 8, (1, 2, 3, 4, 6, 8))}):
            if out and not ctx.costed():
                break
            cycles, bound = _estimate(ctx, p, spec, p.m, nt, kcd, cores, resident, bc)
            out.append((Plan(p.m, nt, kcd, cores, resident, True), cycles, bound))
    return out


@kernel(Op.MATMUL)
def matmul(ctx: Ctx, node: Node) -> None:
    (x, w), extra = split_inputs(node.inputs, node.attrs)
    out = node.output
    ov = ctx.views[out]
    if prod(out.type.shape) == 0:
        return
    m, k = x.type.shape[-2:]
    n = w.type.shape[-1]
    if k == 0:
        fill(ctx, ov, 0.0, node.name, node.source)
        return
    batch = out.type.shape[:-2]
    op = operand_type(ctx)
    producers = ctx.graph.producers()
    # a weight operand is read in the mma's type (for cfp8 quantised at compile time with its own bias);
    # an activation in its storage type, converted in SRAM when that differs
    xarr, arr = param_array(ctx, x, producers), param_array(ctx, w, producers)
    asrc, abias = weight_source(ctx, x, xarr, op, f"{node.name}_a") if xarr is not None \
        else (ctx.views[x], act_bias(op, ctx, x))
    bsrc, bbias = weight_source(ctx, w, arr, op, node.name) if arr is not None \
        else (ctx.views[w], act_bias(op, ctx, w))
    av = asrc.expand(batch + (m, k))
    rv = ctx.views[extra["residual"]] if "residual" in extra else None
    p = _problem(av, bsrc.expand(batch + (k, n)), ov, batch, rv)
    if "bias" in extra:
        col = param_array(ctx, extra["bias"], producers)
        if col is None:
            raise node.error("the bias of a matmul's epilogue must be a parameter (the fuse pass makes it one)")
        p = replace(p, bias=ctx.weight(f"{node.name}_bias_f32", col.astype(np.float32), F32))
    if "norm_weight" in extra:
        vecs = [param_array(ctx, extra[k], producers) for k in ("norm_weight", "norm_bias")]
        got = [np.ravel(v) for v in vecs if v is not None]
        if len(got) != 2:
            raise node.error("the layer norm weight and bias of a matmul's epilogue must be parameters "
                             "(the fuse pass makes them so)")
        p = replace(p, norm=ctx.weight(f"{node.name}_norm_f32", np.concatenate(got).astype(np.float32), F32))
    spec = Spec(op, av.dtype, bsrc.dtype, ov.dtype, abias, bbias, epilogue=steps_of(node.attrs),
                res_src=rv.dtype if rv is not None else F32)
    found: list[tuple[Plan, int, Bound]] = []

    def search() -> tuple[Plan, int, Bound]:
        """The tiled kernel's search, run once (summa compares with it; the decision takes it)."""
        if not found:
            found.append(_plan(ctx, node, p, spec, arr is not None))
        return found[0]

    # A held in SRAM by its producer (held.py), which checked that this op can take it so
    held_a = ctx.held.get(p.a[0].base)
    assert held_a is None or p.a[0] == View.dense(held_a.base, (held_a.m, held_a.n), held_a.dtype), node.name
    if summa.eligible(ctx, p, spec):
        weight = "b" if arr is not None else None
        budget = resident_budget(ctx, node, producers) if weight else 0
        reader = held.offer(ctx, node, p, spec)
        om = summa.decide(ctx, p, spec, lambda: search()[1], weight, budget, held_a, reader)
        if om is not None:
            summa.emit(ctx, node, p, spec, om, weight, held_a)
            return
    assert held_a is None, f"{node.name}: its held left operand needs the summa kernel"
    plan = _decide(ctx, node, p, spec, arr is not None, search)
    nb, nm, nn = len(p.a), ceil(p.m / plan.mt), ceil(p.n / plan.nt)
    # item order keeps the items that share a B tile together, so a core keeps few of them resident
    if p.shared_b:
        order = [(b, mi, ni) for ni in range(nn) for b in range(nb) for mi in range(nm)]
    else:
        order = [(b, mi, ni) for b in range(nb) for ni in range(nn) for mi in range(nm)]
    senders: dict[int, shared_a.Sender] = {}
    if plan.share_a:
        bc, why = shared_a.of_cores(ctx, plan.cores)
        assert bc is not None, f"{node.name}: {why}"
        panel = {c: ctx.sram[c].alloc(shared_a.panel_bytes(p, spec), f"{node.name} shared A") for c in plan.cores}
        assert len(set(panel.values())) == 1, f"{node.name}: a multicast needs the panel at one address"
        senders = {c: shared_a.Sender(ctx, c, bc, p, spec, panel[c], plan.kc) for c in plan.cores}
    for core, (first, count) in zip(plan.cores, split(len(order), len(plan.cores)), strict=False):
        _emit_core(ctx, node, core, p, plan, spec, order[first:first + count], senders.get(core))


def _vector(v: View | None, rows: int, nl: int, n0: int, addr: int | None) -> Operand | None:
    """An item's FP32 column vectors (`rows` of them, its nl columns from n0: the bias; a layer norm's
    weights then biases, whole rows): resident at `addr`, or streamed with the item (None)."""
    if v is None:
        return None
    if addr is not None:
        return Operand(rows, nl, addr=addr)
    return Operand(rows, nl, loads=[Load(t) for t in transfers(v.base + n0 * 4, 0, [(rows * nl, 4, 4)], 4)])


def _emit_core(ctx: Ctx, node: Node, core: int, p: Problem, plan: Plan, spec: Spec,
               run: list[tuple[int, int, int]], sender: shared_a.Sender | None = None) -> None:
    ea, eb, eo = spec.a_src.itemsize, spec.b_src.itemsize, spec.out.itemsize
    resident: dict[tuple[int, int], int] = {}
    if plan.resident:
        loads: list[Transfer] = []
        for b, _, ni in run:
            bv, n0 = p.b[b], ni * plan.nt
            key = (bv.base, n0)
            if key in resident:
                continue
            nl = min(plan.nt, p.n - n0)
            wbytes = -(-p.k * nl * eb // 64) * 64
            vbytes = (nl * 4 if p.bias is not None else 0) + (2 * nl * 4 if p.norm is not None else 0)
            copy = transfers(bv.base + n0 * bv.strides[1], 0, [(p.k, bv.strides[0], nl * eb), (nl, bv.strides[1], eb)],
                             eb)  # (at the copy's start: resident_copy places it)
            if p.bias is not None:
                copy += transfers(p.bias.base + n0 * 4, wbytes, [(nl, 4, 4)], 4)
            if p.norm is not None:  # (whole rows: the weights then the biases, as in DRAM)
                copy += transfers(p.norm.base, wbytes + (nl * 4 if p.bias is not None else 0), [(2 * nl, 4, 4)], 4)
            addr, new = ctx.resident_copy(core, wbytes + vbytes, copy)
            if addr is None:
                break
            resident[key] = addr
            loads += new
        load_resident(ctx, core, node, loads)
    streamed = any((p.b[b].base, ni * plan.nt) not in resident for b, _, ni in run)
    kc = plan.kc
    if streamed:  # some B tiles did not fit the resident SRAM: the K chunk must leave room to stream them
        fit = _fit_kc(ctx, spec, plan.mt, plan.nt, p.k, True, shared_a.panel_bytes(p, spec) if sender else 0)
        if fit is None:
            raise node.error(f"matmul {node.name}: tiles of {plan.mt}x{plan.nt} do not fit SRAM scratch",
                             SramOverflowError)
        kc = min(kc, fit)
    items = []
    for b, mi, ni in run:
        av, bv, ov = p.a[b], p.b[b], p.o[b]
        m0, n0 = mi * plan.mt, ni * plan.nt
        ml, nl = min(plan.mt, p.m - m0), min(plan.nt, p.n - n0)
        res = resident.get((bv.base, n0))
        steps = []
        for k0 in range(0, p.k, kc):
            kl = min(kc, p.k - k0)
            if sender is not None:  # the shared panel, row-major [M, K]
                a = Operand(ml, kl, addr=sender.panel + (m0 * p.k + k0) * ea, stride=p.k * ea)
            else:
                a = Operand(ml, kl, loads=[Load(t) for t in transfers(
                    av.base + m0 * av.strides[0] + k0 * av.strides[1], 0,
                    [(ml, av.strides[0], kl * ea), (kl, av.strides[1], ea)], ea)])
            if res is not None:
                bop = Operand(kl, nl, addr=res + k0 * nl * eb, stride=nl * eb)
            else:
                bop = Operand(kl, nl, loads=[Load(t) for t in transfers(
                    bv.base + k0 * bv.strides[0] + n0 * bv.strides[1], 0,
                    [(kl, bv.strides[0], nl * eb), (nl, bv.strides[1], eb)], eb)])
            steps.append(Step(a, bop))
        stores = transfers(0, ov.base + m0 * ov.strides[0] + n0 * ov.strides[1],
                           [(ml, nl * eo, ov.strides[0]), (nl, eo, ov.strides[1])], eo)
        rop = None
        if p.r is not None:  # the residual tile, dense [ml, nl] like the result tile
            rv, er = p.r[b], spec.res_src.itemsize
            rop = Operand(ml, nl, loads=[Load(t) for t in transfers(
                rv.base + m0 * rv.strides[0] + n0 * rv.strides[1], 0,
                [(ml, rv.strides[0], nl * er), (nl, rv.strides[1], er)], er)])
        vecs = res + -(-p.k * nl * eb // 64) * 64 if res is not None else None  # (after the resident B tile)
        cb = _vector(p.bias, 1, nl, n0, vecs)
        nop = _vector(p.norm, 2, nl, n0, vecs + nl * 4 * (p.bias is not None) if vecs is not None else None)
        items.append(Item(ml, nl, steps, stores, col_bias=cb, residual=rop, norm=nop))
    if sender is None:
        Pipeline(ctx, core, node, spec, items).emit()
        return
    # the first item multiplies each chunk of the panel as soon as it is here (and passed on)
    for k0, st in zip(range(0, p.k, kc), items[0].steps, strict=True):
        st.before = functools.partial(sender.before, min(k0 + kc, p.k))
    pipe = Pipeline(ctx, core, node, spec, items)
    with sender.cc.op(node.name, node.source):
        sender.issue()
    pipe.emit()
    with sender.cc.op(node.name, node.source):
        sender.finish()

