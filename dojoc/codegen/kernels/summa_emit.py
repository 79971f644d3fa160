"""The per-core program of the SUMMA kernel (summa.py plans it; this emits it).

A core runs `waves` x `chunks` steps. Step s is K chunk t = s % chunks of wave w = s // chunks; a wave is
one sub-block of the core's output block, cut along the streamed operand's dimension (rows of A when B is
the resident weight, columns of B when A is), so each streamed byte is still read from DRAM once, the
resident chunks are multicast again from SRAM once per wave, and wave w's stores leave while wave w + 1
multiplies (two output buffers alternate). With one wave and no weight, this is plain SUMMA.

Step s uses chunk buffer s % depth on every core. The loader of chunk t in a line (`summa.loader`) DMAs
it (or holds it resident) and multicasts it; a core done with a buffer signals the loader of step s + depth
on that buffer's free semaphore. Free semaphores are per buffer, so a loader's wait for "done with step
s - depth" can only take signals for that step: a signal for a later step on the same buffer (s - depth
+ k * depth, k >= 1) needs its sender to have had that step's data, multicast only after its own loader
saw every core done with the step before on that buffer, so every signal of step s - depth was sent first.

A layer norm in the epilogue (`_norm`) sums each row over the cores of its grid row (`_row_sum`): each
multicasts its partial sums into its slot of every core's gather buffer and adds the slots. Its two passes
count on different semaphores (NORM_SEMS), so a fast core's second partial is never taken for the first's;
a gather buffer is reused only by the next wave's same pass, after every core of the row has read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dojoc.codegen.builder import R_A, R_B, R_C, R_D, CoreCode
from dojoc.codegen.context import Ctx, split
from dojoc.codegen.epilogue import NormTile, emit_norm, emit_pointwise
from dojoc.codegen.kernels.held import ARRIVE, Held, Kept, kept_for, owned, strided_stores
from dojoc.codegen.kernels.im2col import Fill
from dojoc.codegen.kernels.mxu import F32, Load, Spec, load_resident
from dojoc.codegen.kernels.summa_chunks import (
    a_chunk,
    a_width,
    b_chunk,
    b_source,
    chunk_bounds,
    out_cols,
    prefetches_residual,
    vectors,
    x_cols,
    x_windows,
)
from dojoc.codegen.kernels.summa_grid import loader, resident_wants, wave_block, wave_split
from dojoc.codegen.kernels.summa_relay import RELAY_SRC, emit_step, relay
from dojoc.codegen.sems import SUMMA
from dojoc.codegen.sram import aligned
from dojoc.codegen.view import Transfer, transfers
from dojoc.ir.epilogue import NORM, RESIDUAL_STEPS
from dojoc.ir.graph import Node
from isa.table import Cast

if TYPE_CHECKING:
    from dojoc.codegen.kernels.matmul import Problem
    from dojoc.codegen.kernels.summa_grid import Grid

# semaphores, one per chunk buffer up to MAX_DEPTH (sems.SUMMA: each group's doc says what it counts)
DMA_A, DMA_B, ARR_A, ARR_B = SUMMA.ids("dma_a"), SUMMA.ids("dma_b"), SUMMA.ids("arr_a"), SUMMA.ids("arr_b")
SRC_A, SRC_B, DMA_X = SUMMA.ids("src_a"), SUMMA.ids("src_b"), SUMMA.ids("dma_x")
FREE_A, FREE_B = SUMMA.ids("free_a"), SUMMA.ids("free_b")
STORE, AUX = SUMMA.ids("store"), SUMMA.id("aux")
MAX_DEPTH = len(DMA_A)
# a layer norm's two exchanges (arrivals and sources), the second on AUX, whose loads are all waited for
# before the norm and issued again only after it
NORM_SEMS = (SUMMA.id("norm"), AUX)


class CoreProgram:
    """The program of one core."""

    def __init__(self, ctx: Ctx, node: Node, p: Problem, spec: Spec, g: Grid, kc: int, core: int,
                 resident: str | None, depth: int, waves: int, a_held: Held | None = None,
                 hold: Held | None = None, keep: Kept | None = None, rot: int = 0) -> None:
        self.ctx, self.p, self.spec, self.g, self.kc, self.me = ctx, p, spec, g, kc, core
        self.depth, self.waves, self.resident, self.rot = depth, waves, resident, rot
        self.a_held, self.hold = a_held, hold  # A held in SRAM by its producer; this op's output held
        self.kept_out = keep  # this op's output also kept in SRAM for a later op's residual
        self.res_kept = kept_for(ctx, p.r, g.rect, g.mblocks, g.nblocks)  # this op's residual, kept so
        if self.res_kept is not None:
            ctx.kept_used.add(node.name)
        self.bounds = chunk_bounds(p.k, kc, a_held, p.b_kept)
        self.chunks = len(self.bounds)
        self.cc: CoreCode = ctx.core(core)
        self.node, self.name, self.source = node, node.name, node.source
        r, c = g.local(ctx, core)
        self.r, self.c = r, c
        self.row, self.col = g.rows[r], g.cols[c]
        (self.m0, self.m), (self.n0, self.n) = g.mblocks[r], g.nblocks[c]
        self.x0, self.nx = g.extra.get(core, (0, 0))
        # waves cut the rows when B stays resident, the columns when A does
        self.by_rows = resident == "b"
        e, eo, name = spec.op.itemsize, spec.out.itemsize, node.name
        sram = ctx.sram[core]
        mm, nn, xx = wave_block(g, resident, waves)  # the same sizes on every core: the same addresses
        self.aw, self.halo = a_width(p, kc), p.halo  # A's chunk row; B's columns past a block's
        self.abuf = [sram.alloc(mm * self.aw * e, f"{name} A chunk") for _ in range(depth)]
        self.bbuf = [sram.alloc(p.phases * kc * (nn + self.halo) * e, f"{name} B chunk") for _ in range(depth)]
        self.direct = spec.out is F32
        nout = 2 if waves > 1 else 1
        self.acc = [sram.alloc(mm * nn * 4, f"{name} accumulator") for _ in range(nout if self.direct else 1)]
        self.out = self.acc if self.direct else [sram.alloc(mm * nn * eo, f"{name} output tile") for _ in range(nout)]
        self.xbuf: list[int] = []
        # (a relay puts a shifted convolution's slice halos, summa_relay.py; or a slice comes as tap windows)
        self.relay = relay(p, g, depth, spec, resident, a_held, hold)
        self.x_windows = x_windows(p, xx, self.relay)
        if xx:
            self.xbuf = [sram.alloc(kc * x_cols(p, xx, self.x_windows) * e, f"{name} B slice") for _ in range(depth)]
            self.xacc = [sram.alloc(mm * xx * 4, f"{name} slice accumulator")
                         for _ in range(nout if self.direct else 1)]
            self.xout = self.xacc if self.direct else [sram.alloc(mm * xx * eo, f"{name} slice output")
                                                       for _ in range(nout)]
        # the biases of the whole block (and slice): resident when they find room (`_keep_biases`), else
        # loaded once per call, after the first chunks' DMAs; the scratch is taken either way, so that every
        # core's buffers lie at the same addresses
        # (with a layer norm's weights and biases after them: `vectors` per column, `vstride` apart)
        self.vstride = g.n_max + xx
        self.bias = sram.alloc(vectors(p) * self.vstride * 4, f"{name} bias") if vectors(p) else -1
        self.rbias = sram.alloc(g.m_max * 4, f"{name} row bias") if p.row_bias is not None else -1
        if p.norm is not None:  # a layer norm's scratch (summa._scratch counts it)
            self.rmax = max(len(row) for row in g.rows)
            self.norm_sq = sram.alloc(mm * max(nn, xx) * 4, f"{name} norm squares")
            self.norm_stats = (sram.alloc(mm * 4, f"{name} row means"), sram.alloc(mm * 4, f"{name} row variances"),
                               sram.alloc(mm * 4, f"{name} row partial sums"))
            self.gather = [sram.alloc(mm * self.rmax * 4, f"{name} row sums of the mesh row") for _ in NORM_SEMS]
        self.bias_loads = 0
        self.bias_resident = False
        if p.r is not None:
            self.res = sram.alloc(mm * max(nn, xx) * spec.res_src.itemsize, f"{name} residual")
            self.res32 = sram.alloc(mm * max(nn, xx) * 4, f"{name} residual f32")
        self.res_loads = 0  # the DMAs of the wave's residual block in flight (on AUX)
        # (a residual kept in SRAM is not loaded at all)
        self.res_early = p.r is not None and self.res_kept is None \
            and prefetches_residual(g, resident, waves, spec.res_src.itemsize)
        self.src_pending = {sem: 0 for sem in (*SRC_A[:depth], *SRC_B[:depth])}
        self.stores = [0] * nout  # stores in flight per output buffer
        self.keep: dict[tuple[str, int], int] = {}  # ("a" | "b" | "x", chunk) -> its resident copy
        self.kstride: dict[tuple[str, int], int] = {}  # row strides of resident copies that are not kc wide
        loads = self._keep() if resident is not None else []
        # the chunks of a held A, or of a kept B, that this core has: it multicasts them from there
        owned(self.keep, self.kstride, a_held, p.b_kept, r, c, core, self.chunks)
        loads += self._keep_biases()
        if loads or resident is not None:  # one load phase for the op's resident chunks and biases
            load_resident(ctx, self.me, node, loads)
        # the disabled position of this core's row, whose block's slices go to their holder
        self.gone = next((j for j in range(len(g.nblocks)) if (r, j) not in g.at), -1)

    # -- the geometry of a step ----------------------------------------------------------------------
    def wave(self, w: int) -> tuple[int, int, int, int]:
        """(first row, rows, first column, columns) of this core's output in wave w."""
        if self.waves == 1:
            return self.m0, self.m, self.n0, self.n
        if self.by_rows:
            o, cnt = wave_split(self.m, self.waves)[w]
            return self.m0 + o, cnt, self.n0, self.n
        o, cnt = wave_split(self.n, self.waves)[w]
        return self.m0, self.m, self.n0 + o, cnt

    def x_in(self, w: int) -> bool:
        """Whether this core's slice beside a disabled core is computed in wave w: every wave when the
        waves cut rows, the first wave when they cut columns (the slice takes all of A's rows)."""
        return bool(self.nx) and (self.by_rows or w == 0)

    def la(self, t: int) -> int:
        """The core of this row that loads and multicasts A's chunk t (a held A's: the core holding it)."""
        if self.a_held is not None:
            return self.a_held.cores[(self.r, t)]
        return loader(self.row, self.r, t, self.rot if self.resident == "a" else 0)

    def lb(self, t: int) -> int:
        """The core of this column that loads and multicasts B's chunk t (a kept B's: the core that has the
        producer's block, unless that lies at a disabled position)."""
        owner = self.p.b_kept.owner(t, self.c) if self.p.b_kept is not None else None
        return owner if owner is not None else loader(self.col, self.c, t, self.rot if self.resident == "b" else 0)

    def _chunk(self, t: int) -> tuple[int, int]:
        return self.bounds[t]

    def _a_chunk(self, t: int, m0: int, m: int, dst: int) -> list[Transfer]:
        return a_chunk(self.p.a[0], self.spec.op.itemsize, self.kc, *self._chunk(t), m0, m, dst, self.p.taps, self.p.k)

    def _b_chunk(self, t: int, n0: int, n: int, dst: int) -> tuple[list[Load], list[Fill]]:
        return b_chunk(b_source(self.p), self.spec.op.itemsize, *self._chunk(t), n0, n + self.halo, dst)

    def _x_chunk(self, t: int, dst: int) -> tuple[list[Load], list[Fill]]:
        """The B slice beside a disabled core: its columns of chunk t (a shifted convolution's: a window
        per tap, tap after tap, since the halo would outweigh its few columns)."""
        e = self.spec.op.itemsize
        if self.p.shift is not None and self.x_windows:
            return self.p.shift.windows(e, *self._chunk(t), self.x0, self.nx, dst)
        if self.relay is not None and self.me in self.relay.relayed:  # (its halo: put by the relay)
            return b_chunk(b_source(self.p), e, *self._chunk(t), self.x0, self.nx, dst, self.nx + self.halo)
        return b_chunk(b_source(self.p), e, *self._chunk(t), self.x0, self.nx + self.halo, dst)

    def _b_resident(self, t: int, n0: int, n: int, dst: int) -> list[Transfer]:
        loads, fills = self._b_chunk(t, n0, n, dst)
        assert not fills and all(ld.pads is None for ld in loads), "a resident B is a weight's plain view"
        return [ld.t for ld in loads]

    def _keep(self) -> list[Transfer]:
        """Allocate, and return the load-phase DMAs of, the resident weight chunks that this core multicasts (and,
        beside a disabled core, its own slices of B); a chunk without room stays streamed (`unkept` predicts
        which, for the cost model)."""
        assert self.resident is not None
        loads: list[Transfer] = []
        cols = {"b": (self.n0, self.n), "x": (self.x0, self.nx)}
        for key, t, nbytes in resident_wants(self.ctx, self.g, self.me, self.bounds, self.kc, self.resident,
                                             self.spec.op.itemsize, self.p.taps, self.rot):
            chunk = self._a_chunk(t, self.m0, self.m, 0) if key == "a" else self._b_resident(t, *cols[key], 0)
            addr, new = self.ctx.resident_copy(self.me, nbytes, chunk)
            if addr is not None:
                self.keep[(key, t)] = addr
                loads += new
        return loads

    # -- loads and multicasts ------------------------------------------------------------------------
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

    def _addr(self, key: str, s: int, bufs: list[int]) -> int:
        """Where step s's chunk of an operand is on this core: its resident copy, or the chunk buffer."""
        return self.keep.get((key, s % self.chunks), bufs[s % self.depth])

    def _a_src(self, s: int) -> tuple[int, int]:
        """(address, row stride) of step s's A chunk on this core: a held block starts at the wave's rows."""
        w, t = divmod(s, self.chunks)
        if ("a", t) not in self.keep:
            return self.abuf[s % self.depth], self.aw * self.spec.op.itemsize
        stride = self.kstride.get(("a", t), self.aw * self.spec.op.itemsize)
        rows = self.wave(w)[0] - self.m0 if self.a_held is not None else 0
        return self.keep[("a", t)] + rows * stride, stride

    def _put(self, src: int, addr: int, rows: int, nbytes: int, stride: int, cast: Cast, seml: int,
             semr: int, src_stride: int | None = None) -> None:
        """Multicast to this core's grid row (`cast` row) or column: the grid's own, even when the mesh
        line runs on past the grid's rectangle (`Grid.cast`)."""
        cc = self.cc
        self.src_pending[seml] += 1
        first, span = self.g.cast(self.ctx, cast is Cast.ROW)
        cc.emit("put", rc=cc.reg(R_C, self.me), rd=cc.reg(R_D, addr), rs=cc.reg(R_A, src), rows=rows,
                bytes=nbytes, ss=stride if src_stride is None else src_stride, ds=stride, cast=cast, seml=seml,
                semr=semr, first=first, span=span)

    def _src_free(self, sem: int) -> None:
        self.cc.wait(sem, self.src_pending[sem])
        self.src_pending[sem] = 0

    def _prefetch(self, s: int, dmas: dict[tuple[str, int], int]) -> None:
        """Issue step s's DMAs that this core makes, into buffer s % depth."""
        q, (w, t) = s % self.depth, divmod(s, self.chunks)
        m0, m, n0, n = self.wave(w)
        # the DMA goes into this core's own buffer q: done with it since step s - depth (streams run in
        # order) once its last multicast from there has left; the others' buffers q are waited for only at
        # the multicast (`_publish`), so a loader does not stall on the slowest core of its line here
        if self.me == self.la(t):
            if self.a_held is None:  # (a held block is never overwritten: its puts need not have left)
                self._src_free(SRC_A[q])
            dmas[("a", s)] = 0 if ("a", t) in self.keep else \
                self._dma(self._a_chunk(t, m0, m, self.abuf[q]), DMA_A[q])
        if self.me == self.lb(t):
            self._src_free(SRC_B[q])
            dmas[("b", s)] = 0 if ("b", t) in self.keep else \
                self._dma_b(self._b_chunk(t, n0, n, self.bbuf[q]), DMA_B[q])
        if self.x_in(w):
            dmas[("x", s)] = 0 if ("x", t) in self.keep else self._dma_b(self._x_chunk(t, self.xbuf[q]), DMA_X[q])

    def _publish(self, s: int, dmas: dict[tuple[str, int], int]) -> None:
        """As the loader of step s's chunk: wait for its DMA, multicast it to the row (A) or column (B)."""
        q, e, (w, t) = s % self.depth, self.spec.op.itemsize, divmod(s, self.chunks)
        _, m, _, n = self.wave(w)
        _, kl = self._chunk(t)
        if ("a", s) in dmas:
            self.cc.wait(DMA_A[q], dmas.pop(("a", s)))
            if len(self.row) > 1:
                if s >= self.depth:
                    self.cc.wait(FREE_A[q], len(self.row) - 1)  # the row is done with step s - depth
                src, stride = self._a_src(s)
                self._put(src, self.abuf[q], m, (self.aw - self.kc + kl) * e, self.aw * e, Cast.ROW, SRC_A[q],
                          ARR_A[q], stride)
        if ("b", s) in dmas:
            self.cc.wait(DMA_B[q], dmas.pop(("b", s)))
            if len(self.col) > 1:
                if s >= self.depth:
                    self.cc.wait(FREE_B[q], len(self.col) - 1)  # the column is done with step s - depth
                nb = (n + self.halo) * e
                self._put(self._addr("b", s, self.bbuf), self.bbuf[q], self.p.phases * kl, nb, nb, Cast.COL, SRC_B[q],
                          ARR_B[q])

    # -- the program ---------------------------------------------------------------------------------
    def emit(self) -> None:
        cc, depth, chunks = self.cc, self.depth, self.chunks
        steps = self.waves * chunks
        early = depth > 2
        dmas: dict[tuple[str, int], int] = {}
        with cc.op(self.name, self.source):
            self._prefetch(0, dmas)
            self._publish(0, dmas)
            for s in range(1, min(depth - 1, steps)):  # the DMAs of the steps after it, but one buffer
                self._prefetch(s, dmas)
            self._load_biases()  # needed only by the first epilogue
            for s in range(steps):
                q, (w, t) = s % depth, divmod(s, chunks)
                m0, m, n0, n = self.wave(w)
                if s + depth - 1 < steps:
                    self._prefetch(s + depth - 1, dmas)
                self._prefetch_residual(w, t)  # the wave's residual block comes in while it multiplies
                # with 3 buffers, step s + 1's DMA left a step ago and the others are done with the buffer it
                # goes to (s + 1 - depth): multicast it now, so it arrives behind step s's whole multiply
                if early and s + 1 < steps:
                    self._publish(s + 1, dmas)
                if self.me != self.la(t):
                    cc.wait(ARR_A[q], 1)
                if self.me != self.lb(t):
                    cc.wait(ARR_B[q], 1)
                o = w % len(self.out)
                if t == 0 and self.direct:
                    self._stored(o)  # the accumulator is the output buffer: its previous stores have left
                acc = self.acc[o if self.direct else 0]
                _, kl = self._chunk(t)
                publishes = not early and (("a", s + 1) in dmas or ("b", s + 1) in dmas)
                # with 2 buffers, a loader multiplies in two halves and multicasts the next chunk between them
                pieces = self._pieces(kl, publishes)
                half = max(1, len(pieces) // 2) if publishes else len(pieces)
                (a, sa), b = self._a_src(s), self._addr("b", s, self.bbuf)
                for i, piece in enumerate(pieces):
                    if i == half and not early and s + 1 < steps:
                        self._publish(s + 1, dmas)  # halfway: the next chunk reaches the others in time
                    self._mma(acc, a, b, m, n, *piece, t > 0 or i > 0, sa)
                if half == len(pieces) and not early and s + 1 < steps:
                    self._publish(s + 1, dmas)
                if self.x_in(w):
                    cc.wait(DMA_X[q], dmas.pop(("x", s)))
                sent = 0 if self.relay is None or w else emit_step(  # the slices' halo pieces, out and in
                    cc, self.relay, self.g, self.me, s, self.p.phases * kl, self.spec.op.itemsize, self.halo,
                    self.xbuf[q] if self.xbuf else 0, self.bbuf[q], self.wave(0)[3])
                if self.x_in(w):
                    for i, piece in enumerate(self._pieces(kl, False)):
                        self._mma(self.xacc[o if self.direct else 0], a, self._addr("x", s, self.xbuf), m, self.nx,
                                  *piece, t > 0 or i > 0, sa, self.x_windows)
                if sent:  # (its buffers are refilled from the step after next)
                    cc.wait(RELAY_SRC, sent)
                if s + depth < steps:  # done with buffer q: tell the loaders that will refill it
                    la, lb = self.la((s + depth) % chunks), self.lb((s + depth) % chunks)
                    if la != self.me:
                        cc.emit("signal", rc=cc.reg(R_C, la), sem=FREE_A[q], cast=Cast.ONE)
                    if lb != self.me:
                        cc.emit("signal", rc=cc.reg(R_C, lb), sem=FREE_B[q], cast=Cast.ONE)
                if t == chunks - 1:  # the wave's epilogue; its stores overlap the next wave
                    if not self.direct:
                        self._stored(o)
                    # the block, and the slice, whose column vectors follow the block's in the bias buffer:
                    # (accumulator, output buffer, first column, columns, column vectors, is the slice)
                    tiles = [(acc, self.out[o], n0, n, self.bias + (n0 - self.n0) * 4, False)] \
                        + ([(self.xacc[o if self.direct else 0], self.xout[o], self.x0, self.nx,
                             self.bias + self.g.n_max * 4, True)] if self.x_in(w) else [])
                    norm = self.spec.norm is not None  # (the whole row's statistics before either is stored)
                    for t_acc, t_out, c0, cn, vec, is_slice in tiles:
                        self._steps(t_acc, m0, m, c0, cn, vec, is_slice)
                        if not norm:
                            self._finish(t_acc, t_out, m0, m, c0, cn, o, is_slice)
                    if norm:
                        w_off = self.vstride * 4 * (self.p.bias is not None)  # (its weights, then biases)
                        self._norm([NormTile(t_acc, cn, vec + w_off, vec + w_off + self.vstride * 4)
                                    for t_acc, _, _, cn, vec, _ in tiles], m)
                        for t_acc, t_out, c0, cn, _, is_slice in tiles:
                            self._finish(t_acc, t_out, m0, m, c0, cn, o, is_slice)
            for o in range(len(self.out)):
                self._stored(o)
            arrivals = self._arrivals()
            if arrivals:  # a holder: the row's slices are in its block
                cc.wait(ARRIVE, arrivals)
            for sem in self.src_pending:
                self._src_free(sem)

    def _bias_transfers(self, bias: int, rbias: int) -> list[Transfer]:
        """The DMAs of the column biases of the block and the slice, and of the row biases, into SRAM at
        `bias` and `rbias`."""
        p, ts = self.p, []
        vecs = ([p.bias.base] if p.bias is not None else []) \
            + ([p.norm.base, p.norm.base + p.n * 4] if p.norm is not None else [])
        for i, base in enumerate(vecs):  # vector i of the block's columns, then of the slice's
            ts += transfers(base + self.n0 * 4, bias + i * self.vstride * 4, [(self.n, 4, 4)], 4)
            if self.nx:
                ts += transfers(base + self.x0 * 4, bias + (i * self.vstride + self.g.n_max) * 4, [(self.nx, 4, 4)], 4)
        if p.row_bias is not None:
            ts += transfers(p.row_bias.base + self.m0 * 4, rbias, [(self.m, 4, 4)], 4)
        return ts

    def _keep_biases(self) -> list[Transfer]:
        """Keep the biases (parameters: FP32 copies made at compile time) resident, loaded in the load phase,
        when the core has room after the weight's chunks (which come first: `unkept` replays only them):
        otherwise every call's first DMAs would queue behind one tiny request per core at the port."""
        p = self.p
        if not vectors(p) and p.row_bias is None:
            return []
        cols = vectors(p) * (self.g.n_max + self.nx) * 4
        rows = self.g.m_max * 4 if p.row_bias is not None else 0
        scratch_stride, self.vstride = self.vstride, self.g.n_max + self.nx  # (resident: this core's slice only)
        addr, loads = self.ctx.resident_copy(self.me, aligned(cols) + rows,
                                             self._bias_transfers(0 if cols else -1, aligned(cols) if rows else -1))
        if addr is None:
            self.vstride = scratch_stride
            return []
        self.bias, self.rbias = (addr if cols else -1), (addr + aligned(cols) if rows else -1)
        self.bias_resident = True
        return loads

    def _load_biases(self) -> None:
        """DMA the biases into their scratch buffers, when they are not resident."""
        if not self.bias_resident:
            self.bias_loads = self._dma(self._bias_transfers(self.bias, self.rbias), AUX)

    def _stored(self, o: int) -> None:
        self.cc.wait(STORE[o], self.stores[o])
        self.stores[o] = 0

    def _pieces(self, kl: int, halves: bool = True) -> list[tuple[int, int, int]]:
        """A chunk's mma pieces (tap, first K row, K rows): one per tap of a shifted convolution; else the
        chunk, or with `halves` (for a loader that multicasts between them) its two halves."""
        if self.p.taps > 1:
            return [(i, 0, kl) for i in range(self.p.taps)]
        half = max(8, kl // 2 // 8 * 8) if kl > 16 and halves else kl
        return [(0, 0, half)] + ([(0, half, kl - half)] if half < kl else [])

    def _mma(self, acc: int, abuf: int, bbuf: int, m: int, n: int, tap: int, k0: int, kl: int, accumulate: bool,
             sa: int, windows: bool = False) -> None:
        """acc (+)= A[:, tap's k0 ..] @ B[k0 .., tap's window]: B's rows carry the shifted taps' halo, or with
        `windows` (a shifted convolution's slice) B holds each tap's window, kl rows after the last's."""
        cc, e = self.cc, self.spec.op.itemsize
        if windows:
            nb, b = n, bbuf + (tap * kl + k0) * n * e
        else:
            nb, sh = n + self.halo, self.p.shift
            b = bbuf + ((sh.phase[tap] * kl + k0) * nb + sh.offsets[tap] if sh is not None else k0 * nb) * e
        cc.emit("mma", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, abuf + (tap * self.kc + k0) * e), rb=cc.reg(R_B, b),
                m=m, n=n, k=kl, sd=n * 4, sa=sa, sb=nb * e, dt=self.spec.op, acc=int(accumulate))

    def _arrivals(self) -> int:
        """The slices this core receives as the holder of its row's disabled block: one per wave that
        computes them, from every other core with a slice."""
        if self.gone < 0 or self.hold is None or self.hold.cores[(self.r, self.gone)] != self.me:
            return 0
        per = self.waves if self.by_rows else 1
        return per * sum(1 for c in self.row if c != self.me and c in self.g.extra)

    def _keep_held(self, acc: int, out: int, m0: int, m: int, n0: int, n: int, o: int, is_slice: bool) -> None:
        """Leave the converted block (or slice) in the held output (held.py) instead of storing it: a block
        in this core's own, a slice in its holder's assembled block (a put, unless this core holds it)."""
        cc, h, eo = self.cc, self.hold, self.spec.out.itemsize
        assert h is not None
        if is_slice:
            holder, addr, stride = h.owner(self.r, self.gone)
            dst = addr + (m0 - self.m0) * stride + (n0 - h.kblocks[self.gone][0]) * eo
        else:
            holder, stride = self.me, self.n * eo
            dst = h.own + (m0 - self.m0) * stride + (n0 - self.n0) * eo
        if holder == self.me:
            cc.emit("vcvt", rd=cc.reg(R_D, dst), ra=cc.reg(R_A, acc), rows=m, cols=n, sd=stride, sa=n * 4,
                    dtd=self.spec.out, dts=F32)
            return
        if out != acc:
            cc.emit("vcvt", rd=cc.reg(R_D, out), ra=cc.reg(R_A, acc), rows=m, cols=n, sd=n * eo, sa=n * 4,
                    dtd=self.spec.out, dts=F32)
        cc.emit("put", rc=cc.reg(R_C, holder), rd=cc.reg(R_D, dst), rs=cc.reg(R_A, out), rows=m, bytes=n * eo,
                ss=n * eo, ds=stride, cast=Cast.ONE, seml=STORE[o], semr=ARRIVE)
        self.stores[o] += 1

    def _norm(self, tiles: list[NormTile], m: int) -> None:
        """The epilogue's layer norm over the wave's m rows, whose columns are `tiles` here and the rest on
        the other cores of the grid row."""
        eps = self.spec.norm
        assert eps is not None
        emit_norm(self.cc, tiles, m, self.p.n, eps, self.norm_stats, self.norm_sq,
                  (lambda vec: self._row_sum(vec, m)) if len(self.row) > 1 else None)

    def _row_sum(self, vec: int, m: int) -> None:
        """vec (m FP32 partial sums, one per row) summed over the grid row's cores, in place: this core's
        slot of every core's gather buffer, a multicast to the row, the slots added once all are in."""
        cc = self.cc
        i = self.norm_stats.index(vec)  # the pass: 0 sums the means, 1 the variances
        sem, slots = NORM_SEMS[i], self.gather[i]
        mine = slots + self.row.index(self.me) * 4
        stride = self.rmax * 4
        cc.emit("vmov", rd=cc.reg(R_D, mine), ra=cc.reg(R_A, vec), rows=m, cols=1, sd=stride, sa=4, dt=F32)
        first, span = self.g.cast(self.ctx, True)
        cc.emit("put", rc=cc.reg(R_C, self.me), rd=cc.reg(R_D, mine), rs=cc.reg(R_A, vec), rows=m, bytes=4, ss=4,
                ds=stride, cast=Cast.ROW, seml=sem, semr=sem, first=first, span=span)
        cc.wait(sem, len(self.row))  # the others' partial sums, and this one's left (vec is written next)
        cc.emit("vrsum", rd=cc.reg(R_D, vec), ra=cc.reg(R_A, slots), rows=m, cols=len(self.row), sd=4, sa=stride,
                dt=F32, axis="row")

    def _steps(self, acc: int, m0: int, m: int, n0: int, n: int, bias: int, is_slice: bool) -> None:
        """The epilogue's steps but a layer norm (`_norm`) on the FP32 block [m0.., n0..]: bias (its column
        biases at SRAM `bias`), residual, scaling and activation; `_finish` stores it."""
        cc, spec, p = self.cc, self.spec, self.p
        n4 = n * 4
        cc.wait(AUX, self.bias_loads)  # the biases, the first time
        self.bias_loads = 0
        if p.row_bias is not None:  # a convolution's, per output channel (row), before the epilogue
            cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, self.rbias + (m0 - self.m0) * 4),
                    rows=m, cols=n, sd=n4, sa=n4, sb=4, dt=F32, bcb="col")
        for step in spec.epilogue:
            if step[0] == "bias":
                cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, bias), rows=m,
                        cols=n, sd=n4, sa=n4, sb=0, dt=F32, bcb="row")
            elif step[0] in RESIDUAL_STEPS:
                self._residual(acc, m0, m, n0, n, "vsub" if step[0] == "sub_residual" else "vadd", is_slice)
            elif step[0] != NORM:
                emit_pointwise(cc, step, acc, m, n, n4, F32)

    def _finish(self, acc: int, out: int, m0: int, m: int, n0: int, n: int, o: int, is_slice: bool) -> None:
        """The FP32 block converted and stored (counted on output buffer o's semaphore), kept, or left in
        the held output."""
        cc, spec, p, k = self.cc, self.spec, self.p, self.kept_out
        n4, eo = n * 4, spec.out.itemsize
        if self.hold is not None:
            self._keep_held(acc, out, m0, m, n0, n, o, is_slice)
            return
        if out != acc:
            cc.emit("vcvt", rd=cc.reg(R_D, out), ra=cc.reg(R_A, acc), rows=m, cols=n, sd=n * eo, sa=n4,
                    dtd=spec.out, dts=F32)
        if k is not None:  # a copy of the block (or slice) stays for a later op's residual
            dst, stride = self._kept_at(k, m0, n0, is_slice, eo)
            cc.emit("vmov", rd=cc.reg(R_D, dst), ra=cc.reg(R_A, out), rows=m, cols=n, sd=stride, sa=n * eo, dt=spec.out)
        # kept only, it goes to DRAM only where a B reader cannot take it from SRAM (held.dram_cols), and
        # elsewhere only the pixels its strided readers read, if it has those (Kept.step)
        if k is not None and k.only and (self.gone if is_slice else self.c) not in k.dram_cols:
            ts = [tr for v, c0, off, cnt in out_cols(p, p.o, n0, n)
                  for tr in strided_stores(k, v, c0, off, cnt, out, m0, m, n, eo)] if k.step > 1 else []
        else:
            ts = [tr for v, c0, off, cnt in out_cols(p, p.o, n0, n)
                  for tr in transfers(out + off * eo, v.base + m0 * v.strides[0] + c0 * v.strides[1],
                                      [(m, n * eo, v.strides[0]), (cnt, eo, v.strides[1])], eo)]
        for tr in ts:
            cc.dma_store(tr, STORE[o])
        self.stores[o] += len(ts)

    def _kept_at(self, k: Kept, m0: int, n0: int, is_slice: bool, e: int) -> tuple[int, int]:
        """(SRAM address, row stride) of element (m0, n0) of this core's block, or slice, of a kept value."""
        if is_slice:
            return k.slices + ((m0 - self.m0) * self.nx + n0 - self.x0) * e, self.nx * e
        return k.addr + ((m0 - self.m0) * self.n + n0 - self.n0) * e, self.n * e

    def _res_transfers(self, m0: int, m: int, n0: int, n: int, dst: int) -> list[Transfer]:
        """The DMAs of the residual's rows m0.., columns n0.. from DRAM into the residual buffer at `dst`."""
        er = self.spec.res_src.itemsize
        assert self.p.r is not None
        return [tr for rv, c0, off, cnt in out_cols(self.p, self.p.r, n0, n)
                for tr in transfers(rv.base + m0 * rv.strides[0] + c0 * rv.strides[1], dst + off * er,
                                    [(m, rv.strides[0], n * er), (cnt, rv.strides[1], er)], er)]

    def _prefetch_residual(self, w: int, t: int) -> None:
        """In step t of wave w, DMA a share of the wave's residual block (when `prefetches_residual`): its
        rows spread over the wave's steps, one share per step after the step's chunk DMAs, so that no burst
        holds up the chunks' multicasts on the links (docs/decisions.md). The previous wave's epilogue is
        done with the buffer; this wave's waits for every share."""
        if not self.res_early:
            return
        m0, m, n0, n = self.wave(w)
        shares = split(m, self.chunks)  # (fewer than the steps when the block has fewer rows)
        if t < len(shares) and m:
            r0, rows = shares[t]
            dst = self.res + r0 * n * self.spec.res_src.itemsize
            self.res_loads += self._dma(self._res_transfers(m0 + r0, rows, n0, n, dst), AUX)

    def _residual(self, acc: int, m0: int, m: int, n0: int, n: int, mnemonic: str, is_slice: bool) -> None:
        """Add (subtract) the residual block: from this core's SRAM when its producer kept it here, else
        DMA'd from DRAM."""
        cc, er = self.cc, self.spec.res_src.itemsize
        assert self.p.r is not None
        if self.res_kept is not None:
            src, stride = self._kept_at(self.res_kept, m0, n0, is_slice, er)
            if self.spec.res_src is not F32:
                cc.emit("vcvt", rd=cc.reg(R_D, self.res32), ra=cc.reg(R_A, src), rows=m, cols=n, sd=n * 4,
                        sa=stride, dtd=F32, dts=self.spec.res_src)
                src, stride = self.res32, n * 4
            cc.emit(mnemonic, rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, src), rows=m, cols=n,
                    sd=n * 4, sa=n * 4, sb=stride, dt=F32)
            return
        if is_slice or not self.res_early:  # (else the block's came in during the steps: _prefetch_residual)
            self.res_loads = self._dma(self._res_transfers(m0, m, n0, n, self.res), AUX)
        cc.wait(AUX, self.res_loads)
        self.res_loads = 0
        src = self.res
        if self.spec.res_src is not F32:
            cc.emit("vcvt", rd=cc.reg(R_D, self.res32), ra=cc.reg(R_A, self.res), rows=m, cols=n, sd=n * 4,
                    sa=n * er, dtd=F32, dts=self.spec.res_src)
            src = self.res32
        cc.emit(mnemonic, rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, src), rows=m, cols=n,
                sd=n * 4, sa=n * 4, sb=n * 4, dt=F32)
