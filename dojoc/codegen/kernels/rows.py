"""Shared machinery of the row-wise kernels (reductions, scans, softmax, normalisations).

A row-wise op sees its input as a matrix: the dims it reduces (or scans, or normalises) are permuted
innermost, so a *row* is one reduction and the *columns* are its elements (`Matrix`). The permutation is
only a `View.permute`, folded into the DMA. Rows are cut into blocks that cores take in contiguous runs;
a row longer than a tile (4,095 columns, or the SRAM budget) is cut into column chunks whose partial
results the kernel combines (`Plan`). Each core streams its (row block, column chunk) tiles through two
SRAM slots, so the DMA of the next tile overlaps the arithmetic of this one (`Lane.run`), and computes in
FP32 (`WORK`; integer tensors in I32) whatever the storage type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from math import ceil, prod

import numpy as np

from dojoc.codegen.builder import R_A, R_B, R_D, CoreCode
from dojoc.codegen.context import MAX_COLS, MAX_ROWS, Ctx, box_view, boxes, load_view, split, store_view
from dojoc.codegen.sems import LOAD, ROWS
from dojoc.codegen.view import View
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.build import record_shards
from isa.dtypes import DType

WORK = DType.F32
TILE_ELEMS = 8192  # elements of one working tile: 32 KiB in FP32, so a few tiles per slot fit any SRAM
LD_SEMS = ROWS.ids("load")  # load semaphores of the two streaming slots
ST_SEMS = ROWS.ids("store")  # store semaphores, one per buffer that stores leave from
LOAD_PHASE_SEM = LOAD.id("vectors")  # resident loading (before the first call); waited for at once
HUGE = 1 << 30

Box = tuple[tuple[int, ...], tuple[int, ...]]  # (starts, sizes), as `context.boxes` makes them


# -- the matrix view ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Matrix:
    """`view` whose first `nrow` dims index rows and the rest columns (at least one of each)."""

    view: View
    nrow: int

    @staticmethod
    def of(v: View, row_dims: Iterable[int], col_dims: Iterable[int]) -> Matrix:
        """`v` permuted to (row dims, col dims); a missing side becomes one size-1 dim."""
        rd, cd = tuple(row_dims), tuple(col_dims)
        p = v.permute(rd + cd)
        shape, strides, nrow = p.shape, p.strides, len(rd)
        if nrow == 0:
            shape, strides, nrow = (1,) + shape, (0,) + strides, 1
        if len(shape) == nrow:
            shape, strides = shape + (1,), strides + (0,)
        return Matrix(View(p.base, shape, strides, p.dtype), nrow)

    @staticmethod
    def pair(ctx: Ctx, node: Node, col_dims: Iterable[int]) -> tuple[Matrix, Matrix]:
        """The node's first input and its output (of the same shape) as matrices whose columns are
        `col_dims` and whose rows are the other dims."""
        cd = tuple(col_dims)
        rd = [i for i in range(node.inputs[0].type.rank) if i not in cd]
        return Matrix.of(ctx.views[node.inputs[0]], rd, cd), Matrix.of(ctx.views[node.output], rd, cd)

    @property
    def rshape(self) -> tuple[int, ...]:
        return self.view.shape[:self.nrow]

    @property
    def cshape(self) -> tuple[int, ...]:
        return self.view.shape[self.nrow:]

    @property
    def rows(self) -> int:
        return prod(self.rshape)

    @property
    def cols(self) -> int:
        return prod(self.cshape)

    def box(self, rb: Box, cb: Box) -> View:
        return box_view(self.view, rb[0] + cb[0], rb[1] + cb[1])

    def col_offset(self, cb: Box) -> int:
        """The flat column index where chunk `cb` starts (chunks are row-major runs of columns)."""
        return int(np.ravel_multi_index(cb[0], self.cshape)) if self.cols else 0


def drop_dims(v: View, dims: Iterable[int]) -> View:
    """`v` without the (size-1) dims `dims`: the per-row view of a keepdim reduction's output."""
    ds = set(dims)
    keep = [i for i in range(len(v.shape)) if i not in ds]
    return View(v.base, tuple(v.shape[i] for i in keep), tuple(v.strides[i] for i in keep), v.dtype)


FULL_CHUNK: Box = ((0,), (1,))  # the one column of a per-row result matrix


# -- the plan: row blocks, column chunks, cores ----------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """Row blocks (boxes over the row dims), column chunks (boxes over the column dims), and each
    core's contiguous run of row blocks (first, count)."""

    blocks: list[Box]
    chunks: list[Box]
    runs: list[tuple[int, int]]
    want: int  # the cores the work deserves, were there rows enough
    cores: list[int]  # the region: runs[i] runs on cores[i]

    @property
    def max_rows(self) -> int:
        return max(prod(b[1]) for b in self.blocks)

    @property
    def max_cols(self) -> int:
        return max(prod(c[1]) for c in self.chunks)

    @property
    def tile_elems(self) -> int:
        return self.max_rows * self.max_cols


def plan(ctx: Ctx, m: Matrix, bytes_per_elem: float, simd_passes: float, max_cols: int = MAX_COLS,
         tile_elems: int = TILE_ELEMS, shrink: bool = True) -> Plan:
    """Cut `m` into tiles of at most `tile_elems` elements and `max_cols` columns, and choose the cores
    from the work: `bytes_per_elem` of DRAM traffic and `simd_passes` FP32 SIMD passes per element."""
    cap = max(1, min(max_cols, MAX_COLS, tile_elems))
    chunks = boxes(m.cshape, cap, max_rows=HUGE, max_cols=HUGE)
    widest = max(prod(c[1]) for c in chunks)
    nr_max = max(1, min(MAX_ROWS, tile_elems // widest))
    n = m.rows * m.cols
    cycles = n * bytes_per_elem / ctx.machine.link_bytes_per_cycle + n * 4 * simd_passes / ctx.machine.simd_bytes
    cores = ctx.region("rows", cycles, HUGE, axis="rows", dram_bytes=n * bytes_per_elem)
    want = len(cores)
    nr = max(1, min(nr_max, ceil(m.rows / want)))  # enough blocks for every core we want
    blocks = boxes(m.rshape, nr, max_rows=HUGE, max_cols=HUGE)
    runs = split(len(blocks), min(want, len(blocks)))
    if shrink:  # the region records the cores that get rows (a caller that may use more shrinks it itself)
        ctx.shrink_region(len(runs))
    return Plan(blocks, chunks, runs, want, cores)


# -- tiles and the SIMD instructions over them -----------------------------------------------------------

@dataclass(frozen=True)
class T:
    """A rows x cols tile of `dt` at SRAM `addr` with row stride `stride` bytes (elements contiguous)."""

    addr: int
    rows: int
    cols: int
    dt: DType
    stride: int

    @staticmethod
    def dense(addr: int, rows: int, cols: int, dt: DType) -> T:
        return T(addr, rows, cols, dt, cols * dt.itemsize)

    @staticmethod
    def vec(addr: int, n: int, dt: DType = WORK) -> T:
        """A column of n values, one per row: the result of a row reduction, or a col-broadcast operand."""
        return T(addr, n, 1, dt, dt.itemsize)

    def col(self, j: int) -> T:
        return T(self.addr + j * self.dt.itemsize, self.rows, 1, self.dt, self.stride)

    def like(self, addr: int, dt: DType | None = None) -> T:
        """A dense tile of the same extent at another address."""
        return T.dense(addr, self.rows, self.cols, dt or self.dt)


class Simd:
    """Emits SIMD instructions over tiles on one core."""

    def __init__(self, cc: CoreCode) -> None:
        self.cc = cc

    def _ext(self, d: T) -> dict[str, object]:
        return {"rows": d.rows, "cols": d.cols, "sd": d.stride}

    def un(self, m: str, d: T, a: T) -> None:
        """d = m(a): vexp, vlog, vrsqrt, vrecip, vmov, ..."""
        cc = self.cc
        cc.emit(m, rd=cc.reg(R_D, d.addr), ra=cc.reg(R_A, a.addr), sa=a.stride, dt=d.dt, **self._ext(d))

    def bin(self, op: str, d: T, a: T, b: T, bcb: str = "none") -> None:
        """d = a op b; b is a tile like d (none), a [rows, 1] column (col) or a [1, cols] row (row)."""
        cc = self.cc
        sb = 0 if bcb in ("row", "scalar") else b.stride
        cc.emit(f"v{op}", rd=cc.reg(R_D, d.addr), ra=cc.reg(R_A, a.addr), rb=cc.reg(R_B, b.addr), sa=a.stride,
                sb=sb, dt=d.dt, bcb=bcb, **self._ext(d))

    def imm(self, op: str, d: T, a: T, value: float) -> None:
        """d = a op value (the scalar-immediate form)."""
        cc = self.cc
        cc.emit(f"v{op}s", rd=cc.reg(R_D, d.addr), ra=cc.reg(R_A, a.addr), imm=float(value), sa=a.stride,
                dt=d.dt, **self._ext(d))

    def reduce(self, m: str, d: T, a: T) -> None:
        """d[r] = m over row r of a (vrsum, vrmax, vrmin); d is a column of a.rows values of a's type."""
        cc = self.cc
        cc.emit(m, rd=cc.reg(R_D, d.addr), ra=cc.reg(R_A, a.addr), rows=a.rows, cols=a.cols, sd=d.stride,
                sa=a.stride, dt=a.dt, axis="row")

    def scan(self, m: str, d: T, a: T) -> None:
        cc = self.cc
        cc.emit(m, rd=cc.reg(R_D, d.addr), ra=cc.reg(R_A, a.addr), rows=a.rows, cols=a.cols, sd=d.stride,
                sa=a.stride, dt=a.dt, axis="row")

    def cvt(self, d: T, a: T) -> None:
        """d = a converted to d's type (RNE)."""
        cc = self.cc
        cc.emit("vcvt", rd=cc.reg(R_D, d.addr), ra=cc.reg(R_A, a.addr), rows=a.rows, cols=a.cols, sd=d.stride,
                sa=a.stride, dtd=d.dt, dts=a.dt)


# -- one core's stream -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One tile of a core's stream: the DMAs into streaming slot `s` (`loads(s)` gives (DRAM view, SRAM
    address) pairs), then the arithmetic on slot `s` (`compute(s)`), which may store results."""

    loads: Callable[[int], list[tuple[View, int]]]
    compute: Callable[[int], None]


WHOLE, STATS, APPLY = 0, 1, 2  # passes over a row: all of it in one tile; gather statistics; apply them


def tile_steps(src: Matrix, inb: tuple[int, int], blocks: list[Box], chunks: list[Box], passes: Iterable[int],
               fn: Callable[..., None]) -> list[Step]:
    """A step per (row block, pass, column chunk), in that order: the tile of `src` is loaded into the
    slot's input buffer `inb[s]`, then `fn(s, bi=, rb=, pas=, j=, cb=)` computes on it (bi, j: indices
    of the block and the chunk)."""
    return [Step(partial(_load_tile, src, inb, rb, cb), partial(fn, bi=bi, rb=rb, pas=pas, j=j, cb=cb))
            for bi, rb in enumerate(blocks) for pas in tuple(passes) for j, cb in enumerate(chunks)]


def _load_tile(src: Matrix, inb: tuple[int, int], rb: Box, cb: Box, s: int) -> list[tuple[View, int]]:
    return [(src.box(rb, cb), inb[s])]


class Lane:
    """The code of one core in a row-wise kernel: scratch buffers, stores in flight, the tile stream."""

    def __init__(self, ctx: Ctx, core: int, node: Node) -> None:
        self.ctx = ctx
        self.core = core
        self.node = node
        self.cc = ctx.core(core)
        self.simd = Simd(self.cc)
        self._store_sem: dict[int, int] = {}  # buffer address -> its store semaphore
        self._pending: dict[int, int] = {}  # store semaphore -> stores in flight

    def alloc(self, nbytes: int, what: str) -> int:
        return self.ctx.sram[self.core].alloc(nbytes, f"{self.node.name} {what}")

    def slots(self, nbytes: int, what: str) -> tuple[int, int]:
        """A buffer per streaming slot."""
        return self.alloc(nbytes, f"{what} (slot 0)"), self.alloc(nbytes, f"{what} (slot 1)")

    # -- stores and the buffers they read -----------------------------------------------------------------

    def store(self, addr: int, view: View) -> None:
        """DMA the dense tile at `addr` to `view` (asynchronously: `ready(addr)` before rewriting it)."""
        sem = self._store_sem.get(addr)
        if sem is None:
            used = set(self._store_sem.values())
            sem = next(s for s in ST_SEMS if s not in used)  # a kernel stores from at most len(ST_SEMS) buffers
            self._store_sem[addr] = sem
        self._pending[sem] = self._pending.get(sem, 0) + store_view(self.cc, addr, view, sem)

    def ready(self, addr: int) -> None:
        """Wait until no store reads the buffer at `addr` (before a DMA or an instruction writes it)."""
        sem = self._store_sem.get(addr)
        if sem is not None and self._pending.get(sem):
            self.cc.wait(sem, self._pending.pop(sem))

    def drain(self) -> None:
        for sem, n in sorted(self._pending.items()):
            self.cc.wait(sem, n)
        self._pending.clear()

    def load_now(self, view: View, addr: int) -> None:
        """A blocking load (setup, outside the stream)."""
        self.ready(addr)
        self.cc.wait(LD_SEMS[0], load_view(self.cc, view, addr, LD_SEMS[0]))

    # -- the stream ---------------------------------------------------------------------------------------

    def run(self, steps: list[Step]) -> None:
        """Run the steps in order, loading step i + 1 into the other slot while step i computes."""
        with self.cc.op(self.node.name, self.node.source):
            counts = [0, 0]

            def issue(i: int) -> None:
                s = i % 2
                n = 0
                for view, addr in steps[i].loads(s):
                    self.ready(addr)
                    n += load_view(self.cc, view, addr, LD_SEMS[s])
                counts[s] = n

            if steps:
                issue(0)
            for i, st in enumerate(steps):
                s = i % 2
                self.cc.wait(LD_SEMS[s], counts[s])
                if i + 1 < len(steps):
                    issue(i + 1)
                st.compute(s)
            self.drain()


def work_dtype(dt: DType) -> DType:
    """The arithmetic type of a storage type: FP32 for floats, the integer type itself otherwise."""
    return WORK if dt.is_float else dt


class Staged:
    """Input tiles in storage type, widened to the FP32 work type when they are not already FP32, and
    output tiles narrowed back: the per-slot and shared buffers that implement that."""

    def __init__(self, lane: Lane, dt: DType, elems: int, out_dt: DType | None = None) -> None:
        self.lane = lane
        self.dt = dt
        self.wdt = work_dtype(dt)
        self.out_dt = out_dt or dt
        self.inb = lane.slots(elems * dt.itemsize, "input tile")
        # FP32 (and integer) tiles are worked on where they land; others are widened into one work tile
        self.work = None if self.wdt == dt else lane.alloc(elems * self.wdt.itemsize, "work tile")
        self.outb = None if self.out_dt == self.wdt else lane.slots(elems * self.out_dt.itemsize, "output tile")

    def tile(self, s: int, rows: int, cols: int) -> T:
        """The work tile of slot s, widened from the input tile when needed."""
        src = T.dense(self.inb[s], rows, cols, self.dt)
        if self.work is None:
            return src
        t = src.like(self.work, self.wdt)
        self.lane.simd.cvt(t, src)
        return t

    def put(self, s: int, t: T, view: View) -> None:
        """Store work tile t (of slot s) to DRAM `view`, narrowed to the output type."""
        if self.outb is None:
            self.lane.store(t.addr, view)
            return
        o = t.like(self.outb[s], self.out_dt)
        self.lane.ready(o.addr)
        self.lane.simd.cvt(o, t)
        self.lane.store(o.addr, view)


# -- constants -----------------------------------------------------------------------------------------------

def constant(ctx: Ctx, v: Value) -> np.ndarray | None:
    """The compile-time value of `v` (a parameter, a scalar constant or a broadcast one), or None."""
    if v in ctx.consts:
        return np.full(v.type.shape, ctx.consts[v], dtype=np.float64)
    node = next((n for n in ctx.graph.nodes if v in n.outputs), None)
    if node is None:
        return None
    if node.op is Op.PARAM:
        return np.asarray(ctx.graph.parameters[node.attrs["name"]], dtype=np.float64)
    if node.op is Op.EXPAND and node.inputs[0] in ctx.consts:
        return np.full(v.type.shape, ctx.consts[node.inputs[0]], dtype=np.float64)
    return None


def resident_or_scratch(lane: Lane, view: View, resident: bool, what: str) -> int:
    """Put dense FP32 DRAM vector `view` in this core's SRAM: in the resident region, loaded once before
    the first call, when `resident` (a constant) and it fits; otherwise in scratch, loaded now."""
    nbytes = view.nbytes
    plan_ = lane.ctx.sram[lane.core]
    # small vectors only: the resident region is mostly for the matrix ops' weights
    if resident and nbytes <= plan_.resident_free() // 8:
        addr = plan_.alloc_resident(nbytes)
        if addr is not None:
            record_shards(lane.ctx, lane.core, [(view.base, addr, nbytes)])
            ld = lane.ctx.load[lane.core]
            with ld.op(lane.node.name, lane.node.source):
                ld.wait(LOAD_PHASE_SEM, load_view(ld, view, addr, LOAD_PHASE_SEM))
            return addr
    addr = lane.alloc(nbytes, what)
    with lane.cc.op(lane.node.name, lane.node.source):
        lane.load_now(view, addr)
    return addr


def vec_pieces(n: int) -> list[tuple[int, int]]:
    """(start, count) pieces of a dense vector of n elements, each one row of at most MAX_COLS."""
    return [(s, min(MAX_COLS, n - s)) for s in range(0, n, MAX_COLS)]
