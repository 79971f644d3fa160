"""Matrix multiplication over the whole mesh as SUMMA: each operand byte read from DRAM once, panels
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
once over the mesh. A chunk that finds no resident room is streamed from DRAM as before.

Then each core applies the op's epilogue (bias per column, residual tile, scaling, activation) on its FP32
block, converts it to the output type and stores it. The kernel needs one die whose every core takes part
(`eligible`), operands already in the mma's type (bf16 or fp32; cfp8 converts in SRAM: matmul.py), and a
problem big enough for every core to get at least 8 rows and columns. `matmul.py` chooses it over its own
tiled kernel when the cost model (`estimate`) predicts it faster, or when a given mapping names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from math import ceil

from dojoc.codegen.builder import R_A, R_B, R_C, R_D, CoreCode
from dojoc.codegen.context import ALIGN, Ctx, split
from dojoc.codegen.epilogue import emit_pointwise
from dojoc.codegen.kernels.im2col import Fill
from dojoc.codegen.kernels.mxu import F32, Load, Spec, load_resident
from dojoc.codegen.paths import port_path
from dojoc.codegen.view import Transfer, View, transfers
from dojoc.errors import MappingError
from dojoc.ir.epilogue import RESIDUAL_STEPS
from dojoc.ir.graph import Node
from dojoc.mapping.model import Bound, OpMapping
from isa.costs import matmul_cycles, vector_cycles
from isa.table import Cast

if False:  # typing only, without an import cycle
    from dojoc.codegen.kernels.matmul import Problem

KERNEL = "summa"
# semaphores: the loader's DMAs and the multicast arrivals per buffer parity, the free signals, the
# source-free semaphores of the loader's puts, the DMAs of the disabled core's slice, stores, bias/residual
# (one per chunk buffer, up to MAX_DEPTH of them)
DMA_A, DMA_B, ARR_A, ARR_B = (0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)
FREE_A, FREE_B = 12, 13
SRC_A, SRC_B = (14, 15, 16), (17, 18, 19)
DMA_X = (20, 21, 22)
STORE, AUX = 23, 24
MAX_DEPTH = len(DMA_A)
KC_CHOICES = (512, 384, 256, 192, 128, 96, 64, 32)



@dataclass(frozen=True)
class Grid:
    """The mesh as a grid of blocks: the enabled cores of each mesh row and column (ids in order), the
    row blocks of M and column blocks of N (start, count), and each disabled position's column slices."""

    rows: tuple[tuple[int, ...], ...]
    cols: tuple[tuple[int, ...], ...]
    mblocks: tuple[tuple[int, int], ...]
    nblocks: tuple[tuple[int, int], ...]
    extra: dict[int, tuple[int, int]]  # core -> (first column, count) of the slice it takes, in N

    @property
    def cores(self) -> tuple[int, ...]:
        return tuple(c for row in self.rows for c in row)

    @property
    def m_max(self) -> int:
        return max(n for _, n in self.mblocks)

    @property
    def n_max(self) -> int:
        return max(n for _, n in self.nblocks)

    @property
    def x_max(self) -> int:
        return max((n for _, n in self.extra.values()), default=0)


def grid(ctx: Ctx, m: int, n: int) -> Grid:
    mach = ctx.machine
    rows_n, cols_n = mach.mesh
    at = {rc: i for i, rc in enumerate(mach.coords)}
    rows = tuple(tuple(at[(r, c)] for c in range(cols_n) if (r, c) in at) for r in range(rows_n))
    cols = tuple(tuple(at[(r, c)] for r in range(rows_n) if (r, c) in at) for c in range(cols_n))
    mblocks, nblocks = tuple(split(m, rows_n)), tuple(split(n, cols_n))
    extra: dict[int, tuple[int, int]] = {}
    for r in range(rows_n):
        for c in range(cols_n):
            if (r, c) not in at:  # a disabled core's block: its columns, sliced over the row's cores
                first, count = nblocks[c]
                for core, (s, k) in zip(rows[r], split(count, len(rows[r])), strict=False):
                    extra[core] = (first + s, k)
    return Grid(rows, cols, mblocks, nblocks, extra)


def loader(line: tuple[int, ...], index: int, t: int) -> int:
    """The core of a mesh row (or column) `line`, the index-th, that loads chunk t: rotating with t, and
    staggered by the line's index, so the columns' B loaders of one chunk sit in different rows and their
    DMAs enter the mesh through different routers of the DRAM port (not all through one row's links)."""
    return line[(t + index) % len(line)]


def _link_cycles(ctx: Ctx, g: Grid, kc: int, e: int, resident: str | None = None) -> float:
    """Cycles of one chunk on the busiest first link out of a DRAM entry router: every mesh row carries its
    A chunk and the B chunks (and slices) its cores load for chunk 0 (the load is the same every chunk);
    a resident operand's chunks come from SRAM, not from the port."""
    mach = ctx.machine
    port = mach.dram_ports[0]
    load: dict[tuple[int, int], float] = {}

    def add(core: int, nbytes: float) -> None:
        r, c = mach.coords[core]
        entry = port.entry_router(mach, r, c)
        if entry != (r, c):
            load[entry] = load.get(entry, 0.0) + nbytes

    for i, row in enumerate(g.rows):
        if row and resident != "a":
            add(loader(row, i, 0), g.mblocks[i][1] * kc * e)
    for j, col in enumerate(g.cols):
        if col and resident != "b":
            add(loader(col, j, 0), kc * g.nblocks[j][1] * e)
    for core, (_, n) in g.extra.items():
        add(core, kc * n * e)
    return max(load.values(), default=0.0) / mach.link_bytes_per_cycle


def eligible(ctx: Ctx, p: Problem, spec: Spec) -> bool:
    """Whether this kernel can take the problem: one die, every one of its cores in the compile, one batch
    item (or a batch folded into M), operands in the mma's type, at least 8 rows and columns per block."""
    mach = ctx.machine
    rows_n, cols_n = mach.mesh
    return (mach.die == mach.mesh and len(ctx.builder.ids) == mach.num_cores and len(p.a) == 1
            and spec.a_src is spec.op and spec.b_src is spec.op and not spec.op.is_cfp
            and p.m >= 8 * rows_n and p.n >= 8 * cols_n and p.k >= 8 and rows_n * cols_n > 1)


def depths(g: Grid) -> list[int]:
    """Legal numbers of chunk buffers: 2, and 3 when every mesh line has at least 3 cores (a core's free
    signal for chunk t then cannot be taken for an earlier chunk's: the loader of chunk t + len(line) needs
    every core done with chunk t + len(line) - depth, so len(line) >= depth keeps the counts in order)."""
    shortest = min(len(line) for line in (*g.rows, *g.cols) if len(line) > 1) if g.cores else 0
    return [d for d in range(2, MAX_DEPTH + 1) if d == 2 or shortest >= d]


def _scratch(g: Grid, spec: Spec, kc: int, p: Problem, depth: int = 2) -> int:
    """Scratch bytes of one core (every core allocates the same, so buffers lie at the same addresses)."""
    e, eo, a = spec.op.itemsize, spec.out.itemsize, _aligned
    m, n, x = g.m_max, g.n_max, g.x_max
    total = depth * (a(m * kc * e) + a(kc * n * e)) + a(m * n * 4) + (a(m * n * eo) if spec.out is not F32 else 0)
    if x:
        total += depth * a(kc * x * e) + a(m * x * 4) + (a(m * x * eo) if spec.out is not F32 else 0)
    if p.bias is not None:
        total += a(n * 4) + a(x * 4)
    if p.row_bias is not None:
        total += a(m * 4)
    if p.r is not None:
        total += a(m * n * spec.res_src.itemsize) + a(m * n * 4)
    return total + 4 * ALIGN


def estimate(ctx: Ctx, p: Problem, spec: Spec, kc: int, resident: str | None = None,
             depth: int = 2) -> tuple[int, Bound]:
    """Predicted cycles and bound for K chunks of `kc`: per chunk the longest of a core's multiplies, the
    DRAM port's time for every row's A chunk and every column's B chunk (but a `resident` operand's, "a" or
    "b"), the busiest link out of the port's entry routers, and a core's ejection port taking both
    multicasts, and the way of a chunk (DMA and multicast) shared over the `depth` - 1 chunks it is issued
    ahead; plus filling the pipeline (the first chunk's DMA and put) and the epilogue's stores."""
    m = ctx.machine
    g = grid(ctx, p.m, p.n)
    e, eo = spec.op.itemsize, spec.out.itemsize
    mx, nx, xx = g.m_max, g.n_max, g.x_max
    way = port_path(m, g.cores)
    chunks = ceil(p.k / kc)
    mma = matmul_cycles(mx, nx, kc, spec.op, True, m) + (matmul_cycles(mx, xx, kc, spec.op, True, m) if xx else 0)
    extra = sum(n for _, n in g.extra.values())  # B's columns that the cores beside a disabled one fetch again
    streamed = (p.m * kc if resident != "a" else 0) + (kc * (p.n + extra) if resident != "b" else 0)
    dram = streamed * e * way.cycles_per_byte
    eject = (mx * kc + kc * nx) * e / m.eject_bytes_per_cycle
    link = _link_cycles(ctx, g, kc, e, resident)
    # a chunk's DMA is issued depth - 1 chunks before the others need it: its latency, the multicast's time
    # and the hops to the far end of the line are hidden only behind that many chunks of work
    way_t = way.latency + max(mx * kc, kc * nx) * e / m.link_bytes_per_cycle + sum(m.mesh) * m.hop_latency
    per = max(mma, dram, eject, link, way_t / (depth - 1))
    # the pipeline fills with the first depth - 1 chunks' DMAs at once, through the port
    fill = way_t + (depth - 1) * dram
    tile = mx * (nx + xx)
    epi = vector_cycles(tile, 4, tile * 4, tile * eo, m) + spec.epilogue_cycles(mx, nx + xx, m) \
        + (vector_cycles(tile, 4, tile * 8, tile * 4, m) if p.bias is not None else 0)
    # the epilogue's DRAM traffic: the residual tiles in, the result out (every core at once)
    res = p.m * p.n * spec.res_src.itemsize if p.r is not None else 0
    stores = (p.m * p.n * eo + res) * way.cycles_per_byte + way.latency * (2 if res else 1)
    total = fill + chunks * per + epi + stores
    bound = Bound.COMPUTE if per == mma else (Bound.DRAM if per == dram else Bound.LINK)
    return round(total), bound


def resident_bytes(ctx: Ctx, p: Problem, spec: Spec, kc: int, weight: str) -> int:
    """SRAM bytes that keeping the weight operand resident takes over the mesh: each chunk once, as
    `_keep` allocates it (A's chunks m x kc, B's kl x n, each rounded to the allocator's alignment)."""
    g = grid(ctx, p.m, p.n)
    e = spec.op.itemsize
    lengths = [min(kc, p.k - k0) for k0 in range(0, p.k, kc)]
    if weight == "a":
        return sum(_aligned(n * kc * e) for _, n in g.mblocks) * len(lengths)
    # B's column blocks, and the slices that the cores beside a disabled core keep (each its own)
    return sum(_aligned(kl * n * e) for _, n in (*g.nblocks, *g.extra.values()) for kl in lengths)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _best_kc(ctx: Ctx, p: Problem, spec: Spec, resident: str | None) -> tuple[int, int, int, Bound] | None:
    """The K chunk and number of chunk buffers the cost model predicts fastest: (kc, depth, cycles, bound)."""
    g = grid(ctx, p.m, p.n)
    best: tuple[int, int, int, Bound] | None = None
    for kc in sorted({min(c, p.k) for c in KC_CHOICES}, reverse=True):
        for depth in depths(g):
            if _scratch(g, spec, kc, p, depth) > ctx.scratch_bytes:
                continue
            cyc, bound = estimate(ctx, p, spec, kc, resident, depth)
            if best is None or cyc < best[2]:
                best = (kc, depth, cyc, bound)
    return best


def decide(ctx: Ctx, p: Problem, spec: Spec, other: Callable[[], int], weight: str | None = None,
           budget: int = 0) -> OpMapping | None:
    """The op's decision when it runs here: a given mapping's (kernel "summa", checked), or the cost
    model's when it predicts this kernel faster than `other()` (the tiled kernel's estimate); else None.
    `weight` names the operand ("a" or "b") that is a parameter: it stays resident when it fits `budget`
    resident bytes over the mesh."""
    key = ctx.scope[0]
    given = ctx.given.get(key)
    if given is not None and given.kernel != KERNEL:
        return None
    g = grid(ctx, p.m, p.n)
    axes = (("rows", len(g.rows)), ("cols", len(g.cols)))
    best = _best_kc(ctx, p, spec, None)
    resident = False
    if weight is not None:
        fits = _best_kc(ctx, p, spec, weight)
        if fits is not None and resident_bytes(ctx, p, spec, fits[0], weight) <= budget:
            best, resident = fits, True
    if given is None and (best is None or best[2] >= other()):
        return None

    def default() -> OpMapping:
        assert best is not None
        return OpMapping("", KERNEL, g.cores, axes, (("m", g.m_max), ("n", g.n_max), ("k", best[0]),
                                                     ("buffers", best[1])), resident,
                         predicted_cycles=best[2], bound=best[3])

    def check(om: OpMapping) -> OpMapping:
        if tuple(om.cores) != g.cores:
            raise MappingError(f"op {om.key}: the summa kernel runs on every core of the mesh, in order "
                               f"({len(g.cores)} cores); give that region or kernel \"matmul\"")
        if dict(om.split) != dict(axes):
            raise MappingError(f"op {om.key}: the summa kernel splits the output as the mesh does: split "
                               f"{{\"rows\": {len(g.rows)}, \"cols\": {len(g.cols)}}}")
        kc, depth = om.tile_of("k"), om.tile_of("buffers") or 2
        if depth not in depths(g):
            raise MappingError(f"op {om.key}: tile buffers={depth}: this mesh takes {' or '.join(map(str, depths(g)))} "
                               "chunk buffers (3 needs at least 3 cores in every mesh row and column)")
        if kc is None or not 1 <= kc <= min(p.k, 4095) or _scratch(g, spec, kc, p, depth) > ctx.scratch_bytes:
            raise MappingError(f"op {om.key}: tile k={kc}: a K chunk must be between 1 and {min(p.k, 4095)} and "
                               f"its {depth} chunk buffers must fit the {ctx.scratch_bytes:,} bytes of SRAM scratch")
        if om.resident and weight is None:
            raise MappingError(f"op {om.key}: resident is true but neither operand is a weight (a parameter); "
                               "set resident to false")
        cyc, bound = estimate(ctx, p, spec, kc, weight if om.resident else None, depth)
        return replace(om, tile=(("m", g.m_max), ("n", g.n_max), ("k", kc), ("buffers", depth)),
                       predicted_cycles=cyc, bound=bound)

    return ctx.decide(KERNEL, default, check)


class _Core:
    """The program of one core."""

    def __init__(self, ctx: Ctx, node: Node, p: Problem, spec: Spec, g: Grid, kc: int, core: int,
                 resident: str | None, depth: int) -> None:
        self.ctx, self.p, self.spec, self.g, self.kc, self.me = ctx, p, spec, g, kc, core
        self.depth = depth
        self.cc: CoreCode = ctx.core(core)
        self.node, self.name, self.source = node, node.name, node.source
        name = node.name
        self.resident = resident
        r, c = ctx.machine.coords[core]
        self.r, self.c = r, c
        self.row, self.col = g.rows[r], g.cols[c]
        (self.m0, self.m), (self.n0, self.n) = g.mblocks[r], g.nblocks[c]
        self.x0, self.nx = g.extra.get(core, (0, 0))
        e, eo = spec.op.itemsize, spec.out.itemsize
        sram = ctx.sram[core]
        mm, nn, xx = g.m_max, g.n_max, g.x_max  # the same sizes on every core: the same addresses
        self.abuf = [sram.alloc(mm * kc * e, f"{name} A chunk") for _ in range(depth)]
        self.bbuf = [sram.alloc(kc * nn * e, f"{name} B chunk") for _ in range(depth)]
        self.acc = sram.alloc(mm * nn * 4, f"{name} accumulator")
        self.out = sram.alloc(mm * nn * eo, f"{name} output tile") if spec.out is not F32 else self.acc
        self.xbuf: list[int] = []
        if xx:
            self.xbuf = [sram.alloc(kc * xx * e, f"{name} B slice") for _ in range(depth)]
            self.xacc = sram.alloc(mm * xx * 4, f"{name} slice accumulator")
            self.xout = sram.alloc(mm * xx * eo, f"{name} slice output") if spec.out is not F32 else self.xacc
        self.bias = sram.alloc(nn * 4, f"{name} bias") if p.bias is not None else -1
        self.xbias = sram.alloc(max(xx, 1) * 4, f"{name} slice bias") if p.bias is not None else -1
        self.rbias = sram.alloc(mm * 4, f"{name} row bias") if p.row_bias is not None else -1
        if p.r is not None:
            self.res = sram.alloc(mm * nn * spec.res_src.itemsize, f"{name} residual")
            self.res32 = sram.alloc(mm * nn * 4, f"{name} residual f32")
        self.src_pending = {sem: 0 for sem in (*SRC_A[:depth], *SRC_B[:depth])}
        self.keep: dict[tuple[str, int], int] = {}  # ("a" | "b" | "x", chunk) -> its resident copy
        if resident is not None:
            self._keep()

    # -- loads and multicasts ------------------------------------------------------------------------
    def la(self, t: int) -> int:
        """The core of this row that loads and multicasts A's chunk t (`loaders`)."""
        return loader(self.row, self.r, t)

    def lb(self, t: int) -> int:
        """The core of this column that loads and multicasts B's chunk t."""
        return loader(self.col, self.c, t)

    def _chunk(self, t: int) -> tuple[int, int]:
        k0 = t * self.kc
        return k0, min(self.kc, self.p.k - k0)

    def _a_chunk(self, t: int, dst: int) -> list[Transfer]:
        a, e = self.p.a[0], self.spec.op.itemsize
        k0, kl = self._chunk(t)
        return transfers(a.base + self.m0 * a.strides[0] + k0 * a.strides[1], dst,
                         [(self.m, a.strides[0], self.kc * e), (kl, a.strides[1], e)], e)

    def _b_chunk(self, t: int, n0: int, n: int, dst: int) -> tuple[list[Load], list[Fill]]:
        """The DMAs (and zero fills) of B's chunk t, columns n0 .. n0 + n - 1, into a tile at `dst`: from
        B's view, or a convolution's shifted input windows (im2col.py)."""
        e = self.spec.op.itemsize
        k0, kl = self._chunk(t)
        if self.p.im2col is not None:
            return self.p.im2col.chunk(k0, kl, n0, n, dst, n * e)
        b = self.p.b[0]
        return [Load(tr) for tr in transfers(b.base + k0 * b.strides[0] + n0 * b.strides[1], dst,
                                             [(kl, b.strides[0], n * e), (n, b.strides[1], e)], e)], []

    def _b_resident(self, t: int, n0: int, n: int, dst: int) -> list[Transfer]:
        loads, fills = self._b_chunk(t, n0, n, dst)
        assert not fills and all(ld.pads is None for ld in loads), "a resident B is a weight's plain view"
        return [ld.t for ld in loads]

    def _keep(self) -> None:
        """Allocate and load, in the load phase, the resident weight chunks that this core multicasts (and,
        beside a disabled core, its own slices of B); a chunk without room stays streamed."""
        e, sram = self.spec.op.itemsize, self.ctx.sram[self.me]
        loads: list[Transfer] = []
        for t in range(ceil(self.p.k / self.kc)):
            _, kl = self._chunk(t)
            wanted: list[tuple[str, int, int, int]] = []  # (operand, bytes, first column, columns) of B
            if self.resident == "a" and self.me == self.la(t):
                wanted.append(("a", self.m * self.kc * e, 0, 0))
            if self.resident == "b" and self.me == self.lb(t):
                wanted.append(("b", kl * self.n * e, self.n0, self.n))
            if self.resident == "b" and self.nx:
                wanted.append(("x", kl * self.nx * e, self.x0, self.nx))
            for key, nbytes, n0, n in wanted:
                addr = sram.alloc_resident(nbytes)
                if addr is not None:
                    self.keep[(key, t)] = addr
                    loads += self._a_chunk(t, addr) if key == "a" else self._b_resident(t, n0, n, addr)
        load_resident(self.ctx, self.me, self.node, loads)

    def _dma(self, ts: list[Transfer], sem: int) -> int:
        for tr in ts:
            self.cc.dma_load(tr, sem)
        return len(ts)

    def _dma_b(self, chunk: tuple[list[Load], list[Fill]], sem: int) -> int:
        cc, dt = self.cc, self.spec.op
        loads, fills = chunk
        for f in fills:  # windows wholly in the padding
            cc.emit("vfill", rd=cc.reg(R_D, f.dst), imm=0.0, rows=f.rows, cols=f.cols, sd=f.stride, dt=dt)
        for ld in loads:
            cc.dma_load(ld.t, sem, ld.pads, 0.0, dt if ld.pads else None)
        return len(loads)

    def _cols(self, views: list[View], n0: int, n: int) -> list[tuple[View, int, int, int]]:
        """Columns n0 .. n0 + n - 1 of the output (or residual) as (view, its first column, offset in the
        block, count): one view, or for a batched convolution one per image of `per_view` pixels each."""
        if len(views) == 1:
            return [(views[0], n0, 0, n)]
        w, out, c = self.p.per_view, [], n0
        while c < n0 + n:
            count = min(w - c % w, n0 + n - c)
            out.append((views[c // w], c % w, c - n0, count))
            c += count
        return out

    def _addr(self, key: str, t: int, bufs: list[int]) -> int:
        """Where chunk t of an operand is on this core: its resident copy, or the chunk buffer."""
        return self.keep.get((key, t), bufs[t % self.depth])

    def _put(self, src: int, addr: int, rows: int, nbytes: int, stride: int, cast: Cast, seml: int,
             semr: int) -> None:
        cc = self.cc
        self.src_pending[seml] += 1
        cc.emit("put", rc=cc.reg(R_C, self.me), rd=cc.reg(R_D, addr), rs=cc.reg(R_A, src), rows=rows,
                bytes=nbytes, ss=stride, ds=stride, cast=cast, seml=seml, semr=semr)

    def _src_free(self, sem: int) -> None:
        self.cc.wait(sem, self.src_pending[sem])
        self.src_pending[sem] = 0

    def _prefetch(self, t: int, dmas: dict[tuple[str, int], int]) -> None:
        """Issue chunk t's DMAs that this core makes, into buffer t % depth."""
        q = t % self.depth
        if self.me == self.la(t):
            if t >= self.depth and len(self.row) > 1:
                self.cc.wait(FREE_A, len(self.row) - 1)  # the row is done with chunk t - depth
            self._src_free(SRC_A[q])
            dmas[("a", t)] = 0 if ("a", t) in self.keep else self._dma(self._a_chunk(t, self.abuf[q]), DMA_A[q])
        if self.me == self.lb(t):
            if t >= self.depth and len(self.col) > 1:
                self.cc.wait(FREE_B, len(self.col) - 1)
            self._src_free(SRC_B[q])
            dmas[("b", t)] = 0 if ("b", t) in self.keep else \
                self._dma_b(self._b_chunk(t, self.n0, self.n, self.bbuf[q]), DMA_B[q])
        if self.nx:
            dmas[("x", t)] = 0 if ("x", t) in self.keep else \
                self._dma_b(self._b_chunk(t, self.x0, self.nx, self.xbuf[q]), DMA_X[q])

    def _publish(self, t: int, dmas: dict[tuple[str, int], int]) -> None:
        """As the loader of chunk t: wait for its DMA, multicast it to the row (A) or column (B)."""
        q, e = t % self.depth, self.spec.op.itemsize
        _, kl = self._chunk(t)
        if ("a", t) in dmas:
            self.cc.wait(DMA_A[q], dmas.pop(("a", t)))
            if len(self.row) > 1:
                self._put(self._addr("a", t, self.abuf), self.abuf[q], self.m, kl * e, self.kc * e, Cast.ROW,
                          SRC_A[q], ARR_A[q])
        if ("b", t) in dmas:
            self.cc.wait(DMA_B[q], dmas.pop(("b", t)))
            if len(self.col) > 1:
                self._put(self._addr("b", t, self.bbuf), self.bbuf[q], kl, self.n * e, self.n * e, Cast.COL,
                          SRC_B[q], ARR_B[q])

    # -- the program ---------------------------------------------------------------------------------
    def emit(self) -> None:
        cc, p = self.cc, self.p
        chunks = ceil(p.k / self.kc)
        dmas: dict[tuple[str, int], int] = {}
        with cc.op(self.name, self.source):
            self._prefetch(0, dmas)
            self._publish(0, dmas)
            for t in range(1, min(self.depth - 1, chunks)):  # the DMAs of the chunks after it, but one buffer
                self._prefetch(t, dmas)
            for t in range(chunks):
                q = t % self.depth
                if t + self.depth - 1 < chunks:
                    self._prefetch(t + self.depth - 1, dmas)
                # with 3 buffers, chunk t + 1's DMA left a chunk ago and the others are done with the buffer
                # it goes to (t + 1 - depth): multicast it now, so it arrives behind chunk t's whole multiply
                early = self.depth > 2
                if early and t + 1 < chunks:
                    self._publish(t + 1, dmas)
                if self.me != self.la(t):
                    cc.wait(ARR_A[q], 1)
                if self.me != self.lb(t):
                    cc.wait(ARR_B[q], 1)
                _, kl = self._chunk(t)
                publishes = not early and (("a", t + 1) in dmas or ("b", t + 1) in dmas)
                # with 2, a loader multiplies in two halves and multicasts the next chunk between them
                half = max(8, kl // 2 // 8 * 8) if kl > 16 and publishes else kl
                a, b = self._addr("a", t, self.abuf), self._addr("b", t, self.bbuf)
                self._mma(self.acc, a, b, self.n, 0, half, t > 0)
                if not early and t + 1 < chunks:
                    self._publish(t + 1, dmas)  # halfway: the next chunk reaches the others in time
                if half < kl:
                    self._mma(self.acc, a, b, self.n, half, kl - half, True)
                if self.nx:
                    cc.wait(DMA_X[q], dmas.pop(("x", t)))
                    self._mma(self.xacc, a, self._addr("x", t, self.xbuf), self.nx, 0, kl, t > 0)
                if t + self.depth < chunks:  # done with buffer q: tell the loaders that will refill it
                    la, lb = self.la(t + self.depth), self.lb(t + self.depth)
                    if la != self.me:
                        cc.emit("signal", rc=cc.reg(R_C, la), sem=FREE_A, cast=Cast.ONE)
                    if lb != self.me:
                        cc.emit("signal", rc=cc.reg(R_C, lb), sem=FREE_B, cast=Cast.ONE)
            stores = self._epilogue(self.acc, self.out, self.n0, self.n, self.bias)
            if self.nx:
                stores += self._epilogue(self.xacc, self.xout, self.x0, self.nx, self.xbias)
            cc.wait(STORE, stores)
            for sem in self.src_pending:
                self._src_free(sem)

    def _mma(self, acc: int, abuf: int, bbuf: int, n: int, k0: int, kl: int, accumulate: bool) -> None:
        cc, e = self.cc, self.spec.op.itemsize
        cc.emit("mma", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, abuf + k0 * e), rb=cc.reg(R_B, bbuf + k0 * n * e),
                m=self.m, n=n, k=kl, sd=n * 4, sa=self.kc * e, sb=n * e, dt=self.spec.op, acc=int(accumulate))

    def _epilogue(self, acc: int, out: int, n0: int, n: int, bias: int) -> int:
        """Bias, residual, scaling and activation on the FP32 block, conversion, stores; the store count."""
        cc, spec, p = self.cc, self.spec, self.p
        n4 = n * 4
        if p.row_bias is not None:  # a convolution's, per output channel (row), before the epilogue
            for tr in transfers(p.row_bias.base + self.m0 * 4, self.rbias, [(self.m, 4, 4)], 4):
                cc.dma_load(tr, AUX)
                cc.wait(AUX, 1)
            cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, self.rbias), rows=self.m,
                    cols=n, sd=n4, sa=n4, sb=4, dt=F32, bcb="col")
        for step in spec.epilogue:
            if step[0] == "bias":
                assert p.bias is not None
                for tr in transfers(p.bias.base + n0 * 4, bias, [(n, 4, 4)], 4):
                    cc.dma_load(tr, AUX)
                    cc.wait(AUX, 1)
                cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, bias), rows=self.m,
                        cols=n, sd=n4, sa=n4, sb=0, dt=F32, bcb="row")
            elif step[0] in RESIDUAL_STEPS:
                assert p.r is not None
                self._residual(acc, n0, n, "vsub" if step[0] == "sub_residual" else "vadd")
            else:
                emit_pointwise(cc, step, acc, self.m, n, n4, F32)
        eo = spec.out.itemsize
        if out != acc:
            cc.emit("vcvt", rd=cc.reg(R_D, out), ra=cc.reg(R_A, acc), rows=self.m, cols=n, sd=n * eo, sa=n4,
                    dtd=spec.out, dts=F32)
        ts = [tr for o, c0, off, cnt in self._cols(p.o, n0, n)
              for tr in transfers(out + off * eo, o.base + self.m0 * o.strides[0] + c0 * o.strides[1],
                                  [(self.m, n * eo, o.strides[0]), (cnt, eo, o.strides[1])], eo)]
        for tr in ts:
            cc.dma_store(tr, STORE)
        return len(ts)

    def _residual(self, acc: int, n0: int, n: int, mnemonic: str) -> None:
        cc, er = self.cc, self.spec.res_src.itemsize
        assert self.p.r is not None
        ts = [tr for rv, c0, off, cnt in self._cols(self.p.r, n0, n)
              for tr in transfers(rv.base + self.m0 * rv.strides[0] + c0 * rv.strides[1], self.res + off * er,
                                  [(self.m, rv.strides[0], n * er), (cnt, rv.strides[1], er)], er)]
        for tr in ts:
            cc.dma_load(tr, AUX)
        cc.wait(AUX, len(ts))
        src = self.res
        if self.spec.res_src is not F32:
            cc.emit("vcvt", rd=cc.reg(R_D, self.res32), ra=cc.reg(R_A, self.res), rows=self.m, cols=n, sd=n * 4,
                    sa=n * er, dtd=F32, dts=self.spec.res_src)
            src = self.res32
        cc.emit(mnemonic, rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, src), rows=self.m, cols=n,
                sd=n * 4, sa=n * 4, sb=n * 4, dt=F32)


def emit(ctx: Ctx, node: Node, p: Problem, spec: Spec, om: OpMapping, weight: str | None = None) -> None:
    """Emit the decided SUMMA matmul on every core of the mesh."""
    g = grid(ctx, p.m, p.n)
    kc, depth = int(om.tile_of("k") or 0), int(om.tile_of("buffers") or 2)
    for core in g.cores:
        _Core(ctx, node, p, spec, g, kc, core, weight if om.resident else None, depth).emit()
