"""Matrix multiplication over a die as SUMMA: each operand byte read from DRAM once, panels
multicast along mesh rows and columns.

The output C [M, N] is cut into a grid of blocks that matches the mesh: row block i of M for mesh row i,
column block j of N for mesh column j, so core (i, j) accumulates C[i, j] in FP32 in its SRAM. K is cut
into chunks; for chunk t one core of each mesh row (rotating with t) DMAs A[i, t] from DRAM and multicasts
it to its row (`put ... cast=row`), and one core of each mesh column DMAs B[t, j] and multicasts it down
its column, so DRAM serves each byte of A and B once and the network carries it on to the cores that
share it. Chunks are double-buffered: chunk t + 1 is loaded and multicast while chunk t is multiplied
(its put goes out halfway through chunk t's multiply, so it arrives before it is needed); a core that
has finished with a buffer signals the loader that will refill it (semaphores FREE_A / FREE_B), so a
multicast never overwrites a buffer still being read.

A disabled core's block has no owner: it is cut into slices by columns, one per other core of its mesh
row, and each of those cores DMAs its slice of B[t, j] itself (a few columns) and multiplies it by the A
chunk it has anyway.

A weight operand (a parameter: `decide`'s `weight`) stays resident: each chunk of it is kept, from
the load phase on, by the one core that multicasts it (its loader), so a call reads from DRAM only the
activation operand, and the network carries the weight's chunks from SRAM (`put` from the resident copy
into the others' chunk buffers; the loader multiplies its own copy in place). Each weight byte is resident
once over the mesh. A chunk that finds no resident room is streamed from DRAM in every wave, as the cost
model counts it (`summa_grid.unkept` says which chunks find none, before the kernel allocates them).

Then each core applies the op's epilogue (bias per column, residual tile, scaling, activation) on its FP32
block, converts it to the output type and stores it. The kernel runs on the home die that DRAM port 0
enters (`place.home_die`: the whole mesh of a one-die machine), or on a rectangle of it when the problem is
too small for every core of the die to get MIN_BLOCK (3) rows and columns; on a machine of many dies, or on
a rectangle, its multicasts stop at the rectangle's edge (`put ... first, span`). summa_grid.py has the
rectangles and the grid of blocks over them.
It needs operands already in the mma's type (bf16 or fp32; cfp8 converts in SRAM: matmul.py).
`matmul.py` chooses it over its own tiled kernel when the cost model (`estimate`) predicts it faster, or
when a given mapping names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dojoc.codegen.context import MAX_ROWS, Ctx
from dojoc.codegen.kernels import attention_plan
from dojoc.codegen.kernels import held as held_
from dojoc.codegen.kernels.held import Held
from dojoc.codegen.kernels.mxu import F32, Spec, resident_free
from dojoc.codegen.kernels.summa_chunks import (
    a_width,
    b_dram_share,
    chunk_bounds,
    prefetches_residual,
    vectors,
    with_kept_b,
    x_cols,
    x_dram,
    x_windows,
)
from dojoc.codegen.kernels.summa_cost import link_cycles, request_cycles
from dojoc.codegen.kernels.summa_emit import MAX_DEPTH, CoreProgram
from dojoc.codegen.kernels.summa_grid import (
    MIN_BLOCK,
    Grid,
    grid,
    rect_of,
    rects,
    rotation,
    unkept,
    wave_block,
    wave_split,
)
from dojoc.codegen.kernels.summa_relay import relay
from dojoc.codegen.paths import port_path
from dojoc.codegen.sems import PIPELINE_DEPTH
from dojoc.codegen.sram import ALIGN, aligned
from dojoc.errors import CompileError, MappingError
from dojoc.ir.graph import Node
from dojoc.ir.ops import Op
from dojoc.mapping.model import Bound, OpMapping
from dojoc.mapping.place import Rect
from isa.costs import dram_cycles, matmul_cycles, vector_cycles

if False:  # typing only, without an import cycle
    from dojoc.codegen.kernels.matmul import Problem

KERNEL = "summa"
KC_CHOICES = (512, 384, 256, 192, 128, 96, 64, 32)
# chunk buffers: free semaphores are per buffer, so any line length takes each of these
DEPTHS = tuple(range(2, MAX_DEPTH + 1))
WAVES = (1, 2)  # more measured slower than the model predicts (docs/decisions.md)


def depths(ctx: Ctx) -> tuple[int, ...]:
    """The chunk buffers an op may take: in a pipeline stage at most `sems.PIPELINE_DEPTH` (the last
    buffer's semaphore counts the stage's handoffs there)."""
    return DEPTHS if ctx.lane_rect is None else tuple(d for d in DEPTHS if d <= PIPELINE_DEPTH)



def eligible(ctx: Ctx, p: Problem, spec: Spec) -> bool:
    """Whether this kernel can take the problem: a rectangle to run on (`rects`), one batch item (or a
    batch folded into M), operands in the mma's type."""
    return (len(p.a) == 1 and spec.a_src is spec.op and spec.b_src is spec.op and not spec.op.is_cfp
            and p.k * p.taps >= 8 and bool(rects(ctx, p)))


def waves_for(g: Grid, resident: str | None, norm: bool = False, p: Problem | None = None) -> list[int]:
    """Legal numbers of waves: more than one only with a resident weight (the waves cut the other
    operand's dimension), and only as many as every core's block has rows (or columns) to cut. A layer
    norm in the epilogue (`norm`) needs whole rows in each wave: waves may not cut columns; nor may a B
    kept in its producer's blocks (`p.b_kept`), which its owners multicast whole."""
    if resident is None or (norm and resident == "a") or (p is not None and p.b_kept is not None):
        return [1]
    least = min(n for _, n in (g.mblocks if resident == "b" else g.nblocks))
    return [w for w in WAVES if w <= least]


def _scratch(g: Grid, spec: Spec, kc: int, p: Problem, depth: int = 2, resident: str | None = None,
             waves: int = 1) -> int:
    """Scratch bytes of one core (every core allocates the same, so buffers lie at the same addresses)."""
    e, eo, a = spec.op.itemsize, spec.out.itemsize, aligned
    m, n, x = wave_block(g, resident, waves)
    nout = 2 if waves > 1 else 1
    direct = spec.out is F32
    aw, h = a_width(p, kc), p.halo
    total = depth * (a(m * aw * e) + a(p.phases * kc * (n + h) * e)) + (nout if direct else 1) * a(m * n * 4) \
        + (0 if direct else nout * a(m * n * eo))
    if x:
        win = x_windows(p, x, relay(p, g, depth, spec, resident))
        total += depth * a(kc * x_cols(p, x, win) * e) + (nout if direct else 1) * a(m * x * 4) \
            + (0 if direct else nout * a(m * x * eo))
    if p.bias is not None or p.norm is not None:  # the column biases, a layer norm's weights and biases
        total += a(vectors(p) * (g.n_max + x) * 4)
    if p.norm is not None:  # its squares, row statistics and the row's partial sums (summa_emit._row_sum)
        total += a(m * max(n, x) * 4) + 3 * a(m * 4) + 2 * a(m * max(len(r) for r in g.rows) * 4)
    if p.row_bias is not None:
        total += a(g.m_max * 4)
    if p.r is not None:
        total += a(m * max(n, x) * spec.res_src.itemsize) + a(m * max(n, x) * 4)
    return total + 4 * ALIGN


def estimate(ctx: Ctx, p: Problem, spec: Spec, kc: int, resident: str | None = None, depth: int = 2,
             waves: int = 1, held: Held | None = None, holding: float = 0.0,
             rect: Rect | None = None, rot: int = 0) -> tuple[int, Bound]:
    """Predicted cycles and bound for K chunks of `kc` in `waves` waves: per step the longest of a core's
    multiplies, the DRAM port's time for every row's A chunk and every column's B chunk (but a `resident`
    operand's, "a" or "b") and for its share of the previous wave's stores and of its own residual tiles,
    the busiest link out of the port's entry routers, a core's ejection port taking both multicasts, and
    the way of a chunk (DMA and multicast) shared over the `depth` - 1 steps it is issued ahead; plus
    filling the pipeline (the first steps' DMAs at once), the epilogues, and the last wave's stores."""
    m = ctx.machine
    g = grid(ctx, p.m, p.n, rect)
    e, eo = spec.op.itemsize, spec.out.itemsize
    mx, nx, xx = wave_block(g, resident, waves)
    way = port_path(m, g.cores)
    bounds = chunk_bounds(p.k, kc, held, p.b_kept)
    chunks = len(bounds)
    by_rows = resident == "b"
    a_dram = resident != "a" and held is None
    # the slice beside a disabled core: in every step when waves cut rows, else in the first wave's
    # (the slowest row's step: rows beside a disabled core have fewer rows of M, balanced_rows)
    # a shifted convolution multiplies each chunk once per tap; its B chunks have a block of rows per phase
    taps, halo, ph = p.taps, p.halo, p.phases
    xm = taps * matmul_cycles(mx, xx, kc, spec.op, True, m) if xx else 0
    every = by_rows or waves == 1

    def wave_mma(w: int) -> int:  # a step's multiplies in wave w (summa_grid.wave_split: the last is smallest)
        shapes = {(wave_split(k, waves)[w][1] if by_rows else k, max((g.extra[c][1] for c in row if c in g.extra),
                                                                      default=0))
                  for row, (_, k) in zip(g.rows, g.mblocks, strict=True)}
        n = nx if by_rows else wave_split(g.n_max, waves)[w][1]
        return taps * max(matmul_cycles(r, n, kc, spec.op, True, m)
                          + (matmul_cycles(r, x, kc, spec.op, True, m) if x and every else 0) for r, x in shapes)

    mmas = [wave_mma(w) for w in range(waves)]
    mma = mmas[0]
    x_mma = 0 if every else chunks * xm
    # B's columns that the cores beside a disabled one fetch again (a shifted convolution's with their halo or
    # a window per tap), and the halo of every column block's chunk in every wave
    # (a relay brings the slices' halos of a shifted convolution with two buffers: summa_relay.py)
    rl = relay(p, g, depth, spec, resident, held)
    extra = sum(x_dram(p, core, n, x_windows(p, xx, rl), rl) for core, (_, n) in g.extra.items())
    # (a B kept in its producer's blocks comes from DRAM only at disabled positions: `b_share` of it)
    b_share = b_dram_share(g, p)
    streamed = (p.m * taps * kc / (waves if by_rows else 1) if a_dram else 0) \
        + (kc * (ph * (p.n * b_share + halo * len(g.cols) * waves) + extra) / waves if resident != "b" else 0)
    # (a residual kept in SRAM for this op, in this grid's blocks, costs no DRAM)
    kept = p.r is None or held_.kept_for(ctx, p.r, g.rect, g.mblocks, g.nblocks) is not None
    res = 0 if kept else p.m * p.n * spec.res_src.itemsize
    # the epilogue's DRAM traffic: results out (unless they stay in SRAM), each wave's after it; a wave's
    # residual tiles come in during its steps (summa_emit._prefetch_residual)
    # (`holding`: the share of the output that stays in SRAM only, 1 when it is held or kept whole)
    out_bytes = p.m * p.n * eo * (1 - holding)
    early = res > 0 and prefetches_residual(g, resident, waves, spec.res_src.itemsize)
    res_steps, res_tail = (res, 0) if early else (0, res)
    out_bytes += res_tail
    eject = (mx * taps * kc + ph * kc * (nx + halo)) * e / m.eject_bytes_per_cycle
    hops = max(mx * taps * kc, ph * kc * (nx + halo)) * e / m.link_bytes_per_cycle + sum(g.rect.shape) * m.hop_latency
    # a resident chunk that finds no room (summa_grid.unkept) is streamed in every wave, by its loader
    missing = _missing(ctx, g, bounds, kc, resident, e, taps, rot, _scratch(g, spec, kc, p, depth, resident, waves)) \
        if resident is not None else [() for _ in bounds]
    base_link = link_cycles(ctx, p, g, kc, e, resident, held is not None, rl=rl)
    # a loader's streamed chunk
    loaded = max(mx * taps * kc if a_dram else 0, ph * kc * (nx + halo) if resident != "b" and b_share else 0) * e
    # the port serves one request at a time, each in whole cycles: a step's many small DMAs (a convolution's
    # windows, the slices beside a disabled core) take it longer than their bytes alone
    requests = request_cycles(ctx, p, spec, g, bounds, resident, held, waves, b_share, rl)
    bpc = m.dram_ports[0].bytes_per_cycle
    # per chunk: (step cycles, its DRAM cycles, its elements, its cycles but the multiplies)
    pers: list[tuple[float, float, float, float]] = []
    for lost in missing:
        moved = streamed + sum(b for _, b in lost) / e
        dram = max(moved * e * way.cycles_per_byte, requests + sum(dram_cycles(round(b), bpc) for _, b in lost)) \
            + ((out_bytes / waves / chunks if waves > 1 else 0) + res_steps / waves / chunks) * way.cycles_per_byte
        link = (link_cycles(ctx, p, g, kc, e, resident, held is not None, lost, rl) if lost else base_link) / waves
        # a chunk's DMA is issued depth - 1 steps before the others need it: its latency, the multicast's
        # time and the hops to the far end of the line are hidden only behind that many steps of work
        # (and the DMA itself: a loader's chunk comes in through its ejection port before it goes on)
        way_t = (way.latency + max((loaded, *(b for _, b in lost))) / m.eject_bytes_per_cycle if moved else 0.0) \
            + hops
        pers.append((max(mma, dram, eject, link, way_t / (depth - 1)), dram, moved, max(dram, eject, link,
                                                                                       way_t / (depth - 1))))
    steps = sum(max(mw, rest) for mw in mmas for _, _, _, rest in pers)  # every wave's chunks
    per = max(pers)[0]
    dram, moved0 = max(d for _, d, _, _ in pers), pers[0][2]
    # the pipeline fills with the first depth - 1 steps' DMAs at once, through the port
    fill = (way.latency if moved0 else 0.0) + hops + (depth - 1) * moved0 * e * way.cycles_per_byte
    tile = mx * (nx + xx)
    # a layer norm's two exchanges of row sums along the grid row (summa_emit._row_sum): a put to the far
    # end of the row, then the slots added
    exchange = 0 if spec.norm is None or len(g.cols) < 2 else 2 * (
        m.hop_latency * g.rect.cols + vector_cycles(mx * len(g.cols), 4, mx * len(g.cols) * 4, mx * 4, m))
    epi = exchange + vector_cycles(tile, 4, tile * 4, tile * eo, m) + spec.epilogue_cycles(mx, nx + xx, m) \
        + (vector_cycles(tile, 4, tile * 8, tile * 4, m) if p.bias is not None else 0)
    stores = out_bytes / waves * way.cycles_per_byte + way.latency * ((2 if res_tail else 1) - (holding >= 1))
    total = fill + steps + x_mma + waves * epi + stores
    bound = Bound.COMPUTE if per == mma else (Bound.DRAM if per == dram else Bound.LINK)
    return round(total), bound


def _missing(ctx: Ctx, g: Grid, bounds: tuple[tuple[int, int], ...], kc: int, resident: str,
             e: int, taps: int = 1, rot: int = 0, scratch: int = 0) -> list[tuple[tuple[int, float], ...]]:
    """Per chunk, the resident copies that find no room beside the op's `scratch` bytes (its buffers come
    first): (loader core, bytes) of each."""
    # the common case without replaying the allocation: every core has room for the most a core keeps
    # (a line's loaders rotate, so a core loads at most ceil(chunks / line) of them, plus its B slices)
    lines, blocks = (g.cols, g.nblocks) if resident == "b" else (g.rows, g.mblocks)
    widest = max(kl for _, kl in bounds) if resident == "b" else taps * kc
    most = -(-len(bounds) // min(len(line) for line in lines if line)) * aligned(max(n for _, n in blocks) * widest * e)
    if resident == "b" and g.extra:
        most += len(bounds) * aligned(widest * g.x_max * e)
    if all(resident_free(ctx, c, scratch) >= most for c in g.cores):
        return [() for _ in bounds]
    return unkept(ctx, g, bounds, kc, resident, e, taps, rot, scratch)


def resident_bytes(ctx: Ctx, p: Problem, spec: Spec, kc: int, weight: str, held: Held | None = None,
                   rect: Rect | None = None) -> int:
    """SRAM bytes that keeping the weight operand resident takes over the mesh: each chunk once, as
    `_keep` allocates it (A's chunks m x kc, B's kl x n, each rounded to the allocator's alignment)."""
    g = grid(ctx, p.m, p.n, rect)
    e = spec.op.itemsize
    lengths = [kl for _, kl in chunk_bounds(p.k, kc, held, p.b_kept)]
    if weight == "a":
        return sum(aligned(n * a_width(p, kc) * e) for _, n in g.mblocks) * len(lengths)
    # B's column blocks, and the slices that the cores beside a disabled core keep (each its own)
    return sum(aligned(kl * n * e) for _, n in (*g.nblocks, *g.extra.values()) for kl in lengths)


def rotate(ctx: Ctx, p: Problem, spec: Spec, kc: int, resident: str | None, held: Held | None = None,
           rect: Rect | None = None) -> int:
    """The default rotation of a resident operand's loaders for K chunks of `kc` (summa_grid.rotation);
    0 without one."""
    if resident is None:
        return 0
    bounds = chunk_bounds(p.k, kc, held, p.b_kept)
    return rotation(ctx, grid(ctx, p.m, p.n, rect), bounds, kc, resident, spec.op.itemsize, p.taps)


def _best_kc(ctx: Ctx, p: Problem, spec: Spec, resident: str | None, held: Held | None = None,
             holding: float = 0.0, room: int | None = None,
             rect: Rect | None = None) -> tuple[int, int, int, int, Bound] | None:
    """The K chunk, chunk buffers and waves the cost model predicts fastest on `rect`: (kc, depth, waves,
    cycles, bound), their buffers within `room` bytes of scratch (default: all of it). A held A fixes the
    chunks."""
    g = grid(ctx, p.m, p.n, rect)
    room = ctx.scratch_bytes if room is None else room
    best: tuple[int, int, int, int, Bound] | None = None
    fixed = held.kblocks if held is not None else p.b_kept.mblocks if p.b_kept is not None else None
    kcs = [max(n for _, n in fixed)] if fixed is not None \
        else sorted({min(c, p.k) for c in KC_CHOICES if c * p.phases <= MAX_ROWS}, reverse=True)
    for kc in kcs:
        rot = rotate(ctx, p, spec, kc, resident, held, rect)
        for depth in depths(ctx):
            for waves in waves_for(g, resident, spec.norm is not None, p):
                if _scratch(g, spec, kc, p, depth, resident, waves) > room or not ctx.costed():
                    continue
                cyc, bound = estimate(ctx, p, spec, kc, resident, depth, waves, held, holding, rect, rot)
                if best is None or cyc < best[3]:
                    best = (kc, depth, waves, cyc, bound)
    return best


def reader_fits(ctx: Ctx, g: Grid, e: int, reader: Node, hold_bytes: int) -> bool:
    """Whether the reader of a held output (of `e`-byte elements, on grid `g`) finds room for its smallest
    plan (2 chunk buffers of the held blocks, its accumulator and output tile, a residual) beside the held
    bytes."""
    nc = -(-reader.output.type.shape[-1] // len(g.cols)) + 1
    kc = g.n_max
    need = 2 * (aligned(g.m_max * kc * e) + aligned(kc * nc * e)) + 3 * aligned(g.m_max * nc * 4) \
        + 2 * aligned(g.m_max * nc * e) + aligned(nc * 4) + 8 * ALIGN
    return need + hold_bytes <= ctx.scratch_bytes


# Kept only, an output binds its B reader to the producer's row blocks as K chunks, which for a small
# output are a few rows (MobileNetV2's 5 and 8: the reader took 2.4 x its DRAM plan, +2,000 cycles, to save
# the producer 60-130 cycles of stores). The producer decides first and cannot price its reader, so it keeps
# only when the stores it saves take the port at least this long: ResNet-50's block outputs (2,800-21,000
# cycles at batch 8) but not its stride-2 pairs (700-1,300), whose readers lost 1,400 each.
MIN_KEEP_SAVING = 2048


def decide(ctx: Ctx, p: Problem, spec: Spec, other: Callable[[], int], weight: str | None = None,
           budget: int = 0, held: Held | None = None, reader: tuple[Node | None, str] = (None, ""),
           shifted: Problem | None = None) -> OpMapping | None:
    """The op's decision when it runs here: a given mapping's (kernel "summa", checked), or the cost
    model's when it predicts this kernel faster than `other()` (the tiled kernel's estimate); else None.
    `weight` names the operand ("a" or "b") that is a parameter: it stays resident when it fits `budget`
    resident bytes over the mesh. A `held` A (held.py) must be taken here, in its producer's column blocks;
    `reader` is (the op that may take this op's output held, or None and why not): then tile field
    `hold` says whether the output stays in SRAM for it (by default it does). A convolution may also be
    `shifted` (im2col.Shifted): then tile field `shift` says which form runs (1: the padded input read once
    for every tap; 0: a window per tap), whichever the cost model predicts faster by default. A 1 x 1
    convolution whose input its producer keeps (held.b_reader) may take B from there (tile field `sram_b`;
    it must when the input is kept only)."""
    key = ctx.scope[0]
    given = ctx.given.get(key)
    # a residual or an input (B) in SRAM alone: this op must take it
    only, b_only = held_.only_kept(ctx.kept.get(key)), held_.only_kept(held_.kept_b(ctx))
    if given is not None and given.kernel != KERNEL:
        for k, what in ((only, "residual"), (b_only, "input")):
            if k is not None:
                raise MappingError(f"op {key}: its {what} is kept in SRAM only, by {k.name}, for the summa kernel "
                                   f"on that op's cores; give it kernel \"summa\", or {k.name} tile keep=1")
        return None
    home = ctx.home

    variants = [p] if shifted is None or only is not None else [p, shifted]
    kb = with_kept_b(ctx, p)
    if kb is not None:
        variants = [kb] if b_only is not None else [*variants, kb]
    elif b_only is not None:
        raise CompileError(f"internal error: op {key}'s input is kept in SRAM only, by {b_only.name}, but it cannot "
                           f"take it; give {b_only.name} tile keep=1 in the mapping, and report this")
    keeper, why_no_keep, sole = held_.residual_reader(ctx, key) if reader[0] is None else (None, "", False)
    # (a later 1 x 1 convolution may multiply this output from SRAM as its B; its chunks at disabled
    # positions come from the DRAM copy: whole with keep 1, those column blocks only with keep 2)
    breader = held_.b_reader(ctx, key, p) if reader[0] is None else None
    b_given = ctx.given.get(breader.name) if breader is not None else None
    if b_given is not None and (b_given.kernel != KERNEL or not b_given.tile_of("sram_b", 0)):
        why_no_keep += f"; its 1 x 1 reader {b_given.key} reads it from DRAM (the mapping gives it " \
            + ("sram_b=0)" if b_given.kernel == KERNEL else f"kernel {b_given.kernel!r})")
        breader = None

    if breader is not None:  # kept only, when its readers are these two (its DRAM copy: what they cannot take)
        sole = held_.sram_only(ctx, key, keeper, breader)
    # (and the strided 1 x 1 readers beside them, for which the other column blocks store every step-th pixel)
    step = held_.strided_step(ctx, key, [r for r in (keeper, breader) if r is not None]) if sole else 1

    def kept_share(g: Grid) -> float:
        """The share of the output that a kept-only copy keeps out of DRAM: all, or with a B reader all but
        the column blocks of disabled positions (held.dram_cols), and with strided readers all but every
        step-th row and column of the others."""
        gone = len(held_.dram_cols(g.at, g.rect.shape)) / len(g.cols) if breader is not None else 0.0
        return (1 - gone) * (1 - 1 / step ** 2 if step > 1 else 1.0)

    def only_by_default(g: Grid) -> bool:
        """Whether the default keeps the output only (a given keep 2 needs `sole` alone): with a B reader, when
        the port time its stores would take pays for binding that reader to its chunks (MIN_KEEP_SAVING)."""
        saved = p.m * p.n * spec.out.itemsize * kept_share(g) / ctx.machine.dram_ports[0].bytes_per_cycle
        return sole and (breader is None or saved >= MIN_KEEP_SAVING)

    def plan_on(rect: Rect, p: Problem) -> _OnRect:
        """The kernel on one rectangle: its grid, whether its output may be held, its best plan."""
        g = grid(ctx, p.m, p.n, rect)
        hold_bytes = 2 * aligned(g.m_max * g.n_max * spec.out.itemsize)
        # (a held output lives on the reader's grid: the home die's, where a reader that can take it runs)
        can_hold = reader[0] is not None and rect == home and (
            attention_plan.held_fits(ctx, reader[0], hold_bytes, len(g.cores)) if reader[0].op is Op.SDPA
            else reader_fits(ctx, g, spec.out.itemsize, reader[0], hold_bytes))
        why_not = reader[1] if reader[0] is None else "its reader would not fit its chunk buffers beside it" \
            if rect == home else "it runs on part of the die, and a held value lives on the whole die"

        # (a residual kept for a later op lives in the block layout of the home die's grid, unpadded)
        can_keep = (keeper is not None or breader is not None) and rect == home and p.shift is None
        keep_bytes = aligned(g.m_max * g.n_max * spec.out.itemsize) + aligned(g.m_max * g.x_max * spec.out.itemsize) \
            if can_keep else 0

        def search(res: str | None) -> tuple[int, int, int, int, Bound] | None:
            room = ctx.scratch_bytes - (hold_bytes if can_hold else 0) - keep_bytes
            share = 1.0 if can_hold else kept_share(g) if can_keep and only_by_default(g) else 0.0
            return _best_kc(ctx, p, spec, res, held, share, room, rect)

        best = search(None)
        resident = False
        if weight is not None:
            fits = search(weight)
            # (a resident plan whose chunks partly find no room may predict slower than streaming them all)
            if fits is not None and resident_bytes(ctx, p, spec, fits[0], weight, held, rect) <= budget \
                    and (best is None or fits[3] <= best[3]):
                best, resident = fits, True
        return _OnRect(rect, g, hold_bytes, can_hold, why_not, best, resident, p, keep_bytes)

    def legal(rect: Rect, p: Problem) -> bool:
        """Whether a given region's rectangle can take the problem: each core at least MIN_BLOCK rows and
        columns, a core on every line, every core in the compile; a held A's reader on its producer's."""
        g = grid(ctx, p.m, p.n, rect)
        ids = set(ctx.builder.ids)
        # (a line of the mesh takes fewer rows or columns: the rectangles the kernel itself offers, summa_grid.rects)
        return ((p.m >= MIN_BLOCK * rect.rows or rect.rows == 1) and (p.n >= MIN_BLOCK * rect.cols or rect.cols == 1)
                and rect.rows * rect.cols > 1
                and all(g.rows) and all(g.cols) and all(c in ids for c in g.cores) and g.within_fields
                and (held is None or rect == held.rect) and (only is None or rect == only.rect)
                and (p.b_kept is None or rect == p.b_kept.rect))

    def cycles(o: _OnRect) -> int:
        assert o.best is not None
        return o.best[3]

    areas = [only.rect] if only is not None else [b_only.rect] if b_only is not None else None
    viable = [o for o in (plan_on(r, q) for q in variants
                          for r in (areas or ([q.b_kept.rect] if q.b_kept is not None else rects(ctx, q))))
              if o.best is not None]
    on = min(viable, key=cycles) if viable else None
    if held is not None and (on is None or on.best is None):
        raise MappingError(f"op {key}: its left operand is held in SRAM, but no plan of the summa kernel fits "
                           "beside it; give its producer tile hold=0")
    if b_only is not None and (on is None or on.best is None):
        raise MappingError(f"op {key}: its input is kept in SRAM only, by {b_only.name}, but no plan of the summa "
                           f"kernel fits beside it; give {b_only.name} tile keep=1")
    if only is not None and (on is None or on.best is None):
        raise MappingError(f"op {key}: its residual is kept in SRAM only, by {only.name}, but no plan of the summa "
                           f"kernel fits beside it on that op's cores; give {only.name} tile keep=1")
    bound_here = held is not None or only is not None or b_only is not None  # (it must run here)
    if given is None and not bound_here and (on is None or on.best is None or on.best[3] >= other()):
        return None

    def tile(o: _OnRect, kc: int, depth: int, waves: int, hold: int, keep: int = 0,
             rot: int | None = None) -> tuple[tuple[str, int], ...]:
        t = (("m", o.g.m_max), ("n", o.g.n_max), ("k", kc), ("buffers", depth), ("waves", waves))
        return t + ((("rotate", rot),) if rot is not None else ()) + ((("hold", hold),) if o.can_hold else ()) \
            + ((("shift", int(o.p is shifted)),) if shifted is not None else ()) \
            + ((("sram_b", int(o.p is kb)),) if kb is not None else ()) \
            + ((("keep", keep),) if keeper is not None or breader is not None else ())

    def default() -> OpMapping:
        assert on is not None and on.best is not None
        kc, depth, waves, cycles, bound = on.best
        rot = rotate(ctx, on.p, spec, kc, weight, held, on.rect) if on.resident else None
        keep = (2 if only_by_default(on.g) else 1) if on.keep_bytes else 0
        return OpMapping("", KERNEL, on.g.cores, on.axes, tile(on, kc, depth, waves, int(on.can_hold), keep, rot),
                         on.resident,
                         predicted_cycles=cycles, bound=bound)

    def check(om: OpMapping) -> OpMapping:
        shift = om.tile_of("shift", 0)
        if shift not in (0, 1) or (shift and shifted is None):
            raise MappingError(f"op {om.key}: tile shift={shift}: give 0 (a window of the input per tap)"
                               + (", or 1 (the padded input, read once for every tap)" if shifted is not None else
                                  "; reading the input once for every tap needs a convolution with more taps than "
                                  "stride phases"))
        sram_b = om.tile_of("sram_b", 0)
        if sram_b not in (0, 1) or (sram_b and kb is None) or (sram_b and shift):
            raise MappingError(f"op {om.key}: tile sram_b={sram_b}: give 0 (B comes from DRAM)"
                               + (", or 1 (B's chunks come from its producer's blocks kept in SRAM) with shift 0"
                                  if kb is not None else "; its input is not kept in SRAM by its producer (a "
                                  "convolution that summa runs with keep=1, read by this 1 x 1 convolution)"))
        if b_only is not None and not sram_b:
            raise MappingError(f"op {om.key}: its input is kept in SRAM only, by {b_only.name}: give tile sram_b=1, or "
                               f"{b_only.name} tile keep=1")
        p = shifted if shift and shifted is not None else kb if sram_b and kb is not None else variants[0]
        rect = rect_of(ctx, tuple(om.cores))
        if rect is None or not legal(rect, p):
            hint = f"the home die's {len(grid(ctx, p.m, p.n, home).cores)} cores" if held is None \
                else "its held left operand's cores"
            raise MappingError(f"op {om.key}: the summa kernel runs on every enabled core of a rectangle of the "
                               f"mesh, row by row, with at least {MIN_BLOCK} rows of M ({p.m}) and columns of N "
                               f"({p.n}) per core; give such a region (for example {hint}) or kernel \"matmul\"")
        o = plan_on(rect, p)
        g = o.g
        if dict(om.split) != dict(o.axes):
            raise MappingError(f"op {om.key}: the summa kernel splits the output as its region's rows and "
                               f"columns: split {{\"rows\": {len(g.rows)}, \"cols\": {len(g.cols)}}}")
        kc, depth, waves = om.tile_of("k"), om.tile_of("buffers") or 2, om.tile_of("waves") or 1
        hold = om.tile_of("hold", 0)
        if hold not in (0, 1):
            raise MappingError(f"op {om.key}: tile hold={hold}: give 1 (the output stays in SRAM for its reader) "
                               "or 0 (it goes to DRAM)")
        if hold and not o.can_hold:
            raise MappingError(f"op {om.key}: tile hold=1, but its output cannot stay in SRAM: {o.why_not}; "
                               "set hold to 0")
        keep = om.tile_of("keep", 0)
        if keep not in (0, 1, 2) or (keep and not o.keep_bytes) or (keep == 2 and not sole):
            why = why_no_keep if keeper is None and breader is None \
                else "it runs on part of the die, or in its shifted form" if not o.keep_bytes \
                else "its reader is not its only reader, or not a convolution that summa takes"
            raise MappingError(f"op {om.key}: tile keep={keep}: give 0 (its output goes to DRAM only)"
                               + (", 1 (a copy stays in SRAM for its reader's residual or B)" if o.keep_bytes else "")
                               + (", 2 (it stays in SRAM only)" if o.keep_bytes and sole else "")
                               + ("" if o.keep_bytes and sole else f"; {why}"))
        if held is not None and kc != max(n for _, n in held.kblocks):
            raise MappingError(f"op {om.key}: its left operand {held.name} is held in SRAM in blocks of "
                               f"{max(n for _, n in held.kblocks)} columns: give tile k="
                               f"{max(n for _, n in held.kblocks)}, or give the producer tile hold=0")
        if p.b_kept is not None and kc != max(n for _, n in p.b_kept.mblocks):
            k = max(n for _, n in p.b_kept.mblocks)
            raise MappingError(f"op {om.key}: its input {p.b_kept.name} is kept in SRAM in blocks of {k} rows: give "
                               f"tile k={k}, or sram_b=0")
        if om.resident and weight is None:
            raise MappingError(f"op {om.key}: resident is true but neither operand is a weight (a parameter); "
                               "set resident to false")
        res = weight if om.resident else None
        if depth not in depths(ctx):
            why = " (in a pipeline stage the last buffer's semaphore counts the stage's handoffs)" \
                if depth in DEPTHS else ""
            raise MappingError(f"op {om.key}: tile buffers={depth}: give {' or '.join(map(str, depths(ctx)))} "
                               f"chunk buffers{why}")
        legal_waves = waves_for(g, res, spec.norm is not None, p)
        if waves not in legal_waves:
            raise MappingError(f"op {om.key}: tile waves={waves}: give {' or '.join(map(str, legal_waves))} "
                               "(more than one wave needs a resident weight, and a block to cut into that many; "
                               "a layer norm in the epilogue needs waves that cut rows)")
        room = ctx.scratch_bytes - (o.hold_bytes if hold else 0) - (o.keep_bytes if keep else 0)
        too_big = kc is not None and _scratch(g, spec, kc, p, depth, res, waves) > room
        top = min(p.k, MAX_ROWS // p.phases)  # (a B chunk is a tile of rows: kc per stride phase)
        if kc is None or not 1 <= kc <= top or too_big:
            raise MappingError(f"op {om.key}: tile k={kc}: a K chunk must be between 1 and {top} and "
                               f"its {depth} chunk buffers must fit the {room:,} bytes of SRAM scratch")
        rot = om.tile_of("rotate")
        if res is None and rot is not None:
            raise MappingError(f"op {om.key}: tile rotate={rot} places a resident weight's chunks, but resident is "
                               "false: remove rotate")
        if res is not None and rot is None:
            rot = rotate(ctx, p, spec, kc, res, held, rect)
        span = max(len(line) for line in (g.cols if res == "b" else g.rows))
        if rot is not None and not 0 <= rot < span:
            raise MappingError(f"op {om.key}: tile rotate={rot}: the resident weight's chunk t of line i is kept "
                               f"by the line's core (t + i + rotate) mod its length: give 0 to {span - 1}")
        share = 1.0 if hold else kept_share(g) if keep == 2 else 0.0
        cyc, bound = estimate(ctx, p, spec, kc, res, depth, waves, held, share, rect, rot or 0)
        return replace(om, tile=tile(o, kc, depth, waves, hold, keep, rot), predicted_cycles=cyc, bound=bound)

    return ctx.decide(KERNEL, default, check)


@dataclass(frozen=True)
class _OnRect:
    """`decide`'s view of the kernel on one rectangle."""

    rect: Rect
    g: Grid
    hold_bytes: int  # SRAM an output held for its reader takes on every core
    can_hold: bool
    why_not: str  # why the output cannot be held, when it cannot
    best: tuple[int, int, int, int, Bound] | None  # (kc, depth, waves, cycles, bound)
    resident: bool
    p: Problem  # the problem it runs (a convolution's shifted form, or not)
    keep_bytes: int  # SRAM a copy of the output kept for a later op's residual takes on every core (or 0)

    @property
    def axes(self) -> tuple[tuple[str, int], ...]:
        return ("rows", len(self.g.rows)), ("cols", len(self.g.cols))


def emit(ctx: Ctx, node: Node, p: Problem, spec: Spec, om: OpMapping, weight: str | None = None,
         held: Held | None = None) -> None:
    """Emit the decided SUMMA matmul on every core of its region (summa_emit.py): with a `held` A, which
    it releases; holding its output for its reader when the decision says so."""
    rect = rect_of(ctx, tuple(om.cores))
    assert rect is not None, "decide checked the region"
    g = grid(ctx, p.m, p.n, rect)
    kc, depth, waves, rot = (int(om.tile_of(f) or d) for f, d in (("k", 0), ("buffers", 2), ("waves", 1),
                                                                    ("rotate", 0)))
    out = held_.hold(ctx, node, p, spec, g.rect, g.at, g.mblocks, g.nblocks) if om.tile_of("hold") else None
    # (decide checked that there is a reader to keep it for)
    reader = held_.residual_reader(ctx, node.name)[0] if om.tile_of("keep") else None
    breader = held_.b_reader(ctx, node.name, p) if om.tile_of("keep") else None
    only = om.tile_of("keep") == 2
    wanted = [r for r in (reader, breader) if r is not None]
    step = held_.strided_step(ctx, node.name, wanted) if only else 1
    kept = held_.keep(ctx, node.name, reader.name if reader else "", p.o, spec, g.rect, g.at, g.mblocks, g.nblocks,
                      g.x_max, only, breader.name if breader else "", step, p.im2col.ow if p.im2col else 0) \
        if wanted else None
    for core in g.cores:
        CoreProgram(ctx, node, p, spec, g, kc, core, weight if om.resident else None, depth, waves,
                    held, out, kept, rot).emit()
    if held is not None:
        held_.release(ctx, held)
