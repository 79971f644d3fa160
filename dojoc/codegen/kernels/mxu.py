"""Shared machinery of the matrix kernels (matmul.py, conv.py): operand types, weight residency, the cost
model that sizes a region, and the double-buffered multiply-accumulate pipeline.

Both kernels reduce to the same per-core program: a list of *items*, each an FP32 accumulator tile
[m, n] built by a sequence of *steps* (one `mma` each: A [m, k] @ B [k, n]), then an epilogue (bias per
row, the node's epilogue steps, conversion to the output type, DMA store). An operand is either resident
in SRAM (a weight, loaded once in the load phase) or streamed: its DMAs fill one of two staging buffers,
and step i+1's DMAs are issued before step i's mma, so loads overlap compute. Semaphores (sems.MXU): one per
staging parity counts its arrivals, one per result buffer its stores, one per parity the loads of an item's
epilogue operands (bias per row or column, residual tile), issued with its first step into one of two
buffers each, so they too overlap its steps.

Precisions: bf16 and fp32 multiply in their storage type. cfp8 multiplies CF8E4 operands. Weights are
quantised at compile time with a per-tensor bias chosen from their real values (`formats.choose_bias`);
activations are converted at run time by `vcvt` with one fixed bias, chosen for |x| <= ACT_AMAX, because
`lower_graph` sees no data to calibrate on (nor could the core, which has no SRAM-to-register load, compute
it at run time). Values beyond ACT_AMAX saturate; values below ~2^-11 flush towards zero.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from dojoc.codegen.builder import R_A, R_B, R_BIAS, R_D, CoreCode
from dojoc.codegen.context import Ctx
from dojoc.codegen.epilogue import NormTile, emit_norm, emit_pointwise, norm_cycles, pointwise_cycles
from dojoc.codegen.paths import port_path
from dojoc.codegen.sems import LOAD, MXU
from dojoc.codegen.view import Transfer, View
from dojoc.ir.epilogue import NORM, RESIDUAL_STEPS, ROW_MAX, split_inputs
from dojoc.ir.epilogue import Step as EpiStep
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.build import record_shards
from isa import formats
from isa.costs import vector_cycles
from isa.dtypes import DType
from isa.machine import Machine
from isa.program import TensorKind

F32 = DType.F32
OPERAND = {"fp32": DType.F32, "bf16": DType.BF16, "cfp8": DType.CF8E4}
ACT_AMAX = 64.0  # cfp8: activations are assumed to lie within +-ACT_AMAX (see the module docstring)
R_CVT = 9  # the CFP bias register of a vcvt (R_BIAS holds the mma's pair of biases)
_STAGED, _STORES, _EPILOGUE = MXU.ids("staged"), MXU.ids("stores"), MXU.ids("epilogue")
_WEIGHTS = LOAD.id("weights")


@dataclass(frozen=True)
class Load:
    """One DMA into a staging buffer: `t.dst` is relative to the buffer; `pads` per dim of `t.dims`."""

    t: Transfer
    pads: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class Move:
    """A copy of `rows` x `cols` elements from a staged tile (element `src`, rows `src_stride` elements
    apart) into a gathered operand tile (element `dst`, rows the gathered tile's columns apart)."""

    src: int
    rows: int
    src_stride: int
    dst: int
    cols: int


@dataclass
class Operand:
    """An mma operand tile of rows x cols: resident at `addr` (row stride `stride` bytes), or streamed by
    `loads` into a dense staging tile after zero-filling the row ranges in `zero`; with `gathered`
    (rows, cols), the mma reads a dense tile of that shape that `moves` copy out of the staged one (a
    convolution's taps, out of the input rows they share: gather.py)."""

    rows: int
    cols: int
    addr: int | None = None
    stride: int = 0
    loads: list[Load] = field(default_factory=list)
    zero: list[tuple[int, int]] = field(default_factory=list)
    gathered: tuple[int, int] | None = None
    moves: tuple[Move, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) as the mma reads it."""
        return self.gathered if self.gathered is not None else (self.rows, self.cols)


@dataclass(frozen=True)
class Part:
    """One mma of a step that reads its staged B tile at several offsets (a convolution's taps, from one
    load of the input rows they share): A's columns a0 .. a0 + k - 1, B from element `b_off` of the B
    tile with rows `b_stride` elements apart, into the accumulator's columns d0 .. d0 + n - 1."""

    a0: int
    k: int
    b_off: int
    b_stride: int
    d0: int
    n: int


@dataclass
class Step:
    """One mma: D[m, n] (+)= A[m, k] @ B[k, n]; or, with `parts`, one mma per part, B being a staged
    window (rows x cols of `b` are its shape) that each part reads at its own offset and stride."""

    a: Operand
    b: Operand
    parts: tuple[Part, ...] = ()
    # emitted just before the mma, after its staged operands have arrived (a shared A's chunk: shared_a.py)
    before: Callable[[], None] | None = None


@dataclass
class Item:
    """One accumulator tile: its steps (at least one), an optional FP32 bias per row (rows=m, cols=1)
    or per column (`col_bias`, rows=1, cols=n, the epilogue's `bias` step), the residual tile [m, n] of
    the epilogue's `residual` step (streamed, in `Spec.res_src`; or in SRAM, rows `stride` apart), and the
    stores of the dense [m, n] result tile (`src` relative to the tile)."""

    m: int
    n: int
    steps: list[Step]
    stores: list[Transfer]
    bias: Operand | None = None
    col_bias: Operand | None = None
    residual: Operand | None = None
    norm: Operand | None = None  # a layer_norm step's FP32 weights then biases [2, n] (whole rows: n = N)
    # a row_max step: per output row, the tile rows (`row_width` columns each) it is the max of; output row
    # i is written over tile row i, which no later output row reads (fuse_pool: stride above padding)
    row_max: tuple[tuple[int, ...], ...] = ()
    row_width: int = 0
    keep: Callable[[int], None] | None = None  # writes the FP32 tile where it stays (band.py); stores read there


@dataclass(frozen=True)
class Spec:
    """What is constant over one kernel's pipeline: the mma operand type, the DRAM types of streamed A, B
    and bias tiles (converted in SRAM when they differ from what the mma reads), the CFP biases of A and B,
    and the output type."""

    op: DType
    a_src: DType
    b_src: DType
    out: DType
    a_bias: int = 0
    b_bias: int = 0
    bias_src: DType = F32
    epilogue: tuple[EpiStep, ...] = ()  # the node's epilogue steps, applied in order on the FP32 tile
    res_src: DType = F32  # the DRAM type of the residual tiles

    @property
    def col_bias(self) -> bool:
        """Items add an FP32 bias per column (a linear layer's)."""
        return any(s[0] == "bias" for s in self.epilogue)

    @property
    def residual(self) -> bool:
        """Items add (or subtract) a residual tile."""
        return any(s[0] in RESIDUAL_STEPS for s in self.epilogue)

    @property
    def norm(self) -> float | None:
        """The eps of the epilogue's layer_norm step, or None without one."""
        return next((float(s[1]) for s in self.epilogue if s[0] == NORM), None)

    def epilogue_bytes(self, elems: int, rows: int = 0, cols: int = 0) -> int:
        """Scratch bytes of the epilogue's buffers for a tile of `elems` elements (`rows` x `cols`): the
        residual's two staging buffers and, when it is not FP32, the tile converted to FP32; a layer norm's
        squares tile, its three row statistics and two staging buffers of its weights and biases."""
        def up(n: int) -> int:
            return -(-n // 64) * 64

        out = 0
        if self.residual:
            out += 2 * up(elems * self.res_src.itemsize) + (up(elems * 4) if self.res_src is not F32 else 0)
        if self.norm is not None:
            out += up(elems * 4) + 3 * up(rows * 4) + 2 * up(2 * cols * 4)
        return out

    def epilogue_cycles(self, rows: int, cols: int, m: Machine) -> int:
        """Cost-model cycles of the epilogue on a rows x cols FP32 tile: the residual step, the pointwise
        steps (scalar arithmetic, clamp, activation) and a layer norm at the cost rules of the very
        instructions emitted."""
        elems = rows * cols
        n = pointwise_cycles(self.epilogue, rows, cols, m)
        if self.norm is not None:
            n += norm_cycles([cols], rows, m)
        if self.residual:
            n += vector_cycles(elems, 4, elems * 8, elems * 4, m)  # the add
            if self.res_src is not F32:
                n += vector_cycles(elems, 4, elems * self.res_src.itemsize, elems * 4, m)  # the conversion
        return n


# -- types and weights --------------------------------------------------------------------------------

def operand_type(ctx: Ctx) -> DType:
    return OPERAND[ctx.precision]


def act_bias(op: DType, ctx: Ctx | None = None, value: Value | None = None) -> int:
    """The CFP bias of an activation converted at run time (0 for non-CFP operands): from the value's
    calibrated range when the compile had example inputs (ctx.ranges), else for |x| <= ACT_AMAX."""
    if not op.is_cfp:
        return 0
    amax = ctx.ranges.get(value.name) if ctx is not None and value is not None else None
    return formats.choose_bias(np.array([ACT_AMAX if amax is None else amax]), op)


def param_array(ctx: Ctx, value: Value, producers: dict[Value, Node]) -> np.ndarray | None:
    """The real values of `value` when a PARAM node produces it, else None."""
    node = producers.get(value)
    if node is None or node.op is not Op.PARAM:
        return None
    return np.asarray(ctx.graph.parameters[node.attrs["name"]])


def weight_source(ctx: Ctx, value: Value, arr: np.ndarray, op: DType, name: str) -> tuple[View, int]:
    """A DRAM view of a weight in the mma operand type, and its CFP bias: the driver's copy for bf16/fp32,
    a copy quantised with the weight's own per-tensor bias for cfp8."""
    if not op.is_cfp:
        v = ctx.views[value]
        assert v.dtype is op, (v.dtype, op)
        return v, 0
    bias = formats.choose_bias(arr, op)
    bits = np.ascontiguousarray(formats.encode(arr.astype(np.float32), op, bias=bias))
    return ctx.dram(f"{name}_{op.asm}", TensorKind.WEIGHT, tuple(arr.shape), op, bits.tobytes()), bias


def weight_bytes(ctx: Ctx, node: Node, producers: dict[Value, Node]) -> int:
    """Bytes of the resident weights a matrix op would keep (one copy, at the operand type)."""
    if node.op not in (Op.MATMUL, Op.CONV2D):
        return 0
    own, extra = split_inputs(node.inputs, node.attrs)
    w = own[1]
    if producers.get(w) is None or producers[w].op is not Op.PARAM:
        return 0
    n = int(np.prod(w.type.shape)) * operand_type(ctx).itemsize
    bias = own[2] if len(own) == 3 else extra.get("bias")  # a conv's per row, a fused one per column
    return n + (bias.type.shape[0] * 4 if bias is not None else 0)


def resident_free(ctx: Ctx, core: int, scratch: int = 0) -> int:
    """The resident bytes `core` has room for, once the current op has taken `scratch` bytes of scratch."""
    return ctx.sram[core].resident_free(scratch)


def _port_hops(m: Machine, core: int) -> int:
    """The way from DRAM port 0 (which holds every tensor) to a core: the XY route's hop latencies from
    the port's entry router for it, die crossings included (codegen/paths.py)."""
    return port_path(m, (core,)).latency


class Region:
    """Chooses the cores of an op's region from the free resident SRAM of every core."""

    def __init__(self, ctx: Ctx) -> None:
        m = ctx.machine
        cores = ctx.builder.ids
        # (free bytes, hops to a DRAM port, id): for a port on the west edge, equal cores are taken down a
        # column first, so a region's DMAs enter the mesh over many rows' links, not a few rows' links
        self.by_free = sorted((resident_free(ctx, c), _port_hops(m, c), c) for c in cores)
        self.frees = [f for f, _, _ in self.by_free]
        self.by_port = [c for _, c in sorted((_port_hops(m, c), c) for c in cores)]

    def fits(self, n: int, need: int) -> bool:
        """Whether n cores have `need` free resident bytes each."""
        return len(self.frees) - bisect_left(self.frees, need) >= n

    def pick(self, n: int, need: int) -> list[int]:
        """n cores: with `need` resident bytes each, the fullest cores that still hold them (best fit
        keeps empty cores for the large weight blocks of later layers); without, the nearest the ports."""
        if not need:
            return self.by_port[:n]
        i = min(bisect_left(self.frees, need), len(self.frees) - n)  # too few: the n with the most room
        return [c for _, _, c in self.by_free[i:i + n]]


def resident_budget(ctx: Ctx, node: Node, producers: dict[Value, Node]) -> int:
    """Resident bytes this op may take: what the free resident SRAM leaves after two copies of the
    weights of every matrix op after it (in graph order), or, when that is less, its share by weight
    size. Replicas save DRAM traffic on every call; early layers (small weights, many pixels, many
    replicas) get them, and later ones (large weights, few pixels) still find room."""
    mine = weight_bytes(ctx, node, producers)
    if not mine:
        return 0
    nodes = ctx.graph.nodes
    later = sum(weight_bytes(ctx, n, producers) for n in nodes[next(i for i, n in enumerate(nodes) if n is node):])
    free = sum(resident_free(ctx, c) for c in ctx.builder.ids)
    return max(int(free * mine / max(later, mine)), free - 2 * (later - mine))


def load_resident(ctx: Ctx, core: int, node: Node, loads: list[Transfer]) -> None:
    """Emit the one-time loading of resident tiles into the core's load phase, ending with its waits."""
    record_shards(ctx, core, [(t.src, t.dst, t.nbytes) for t in loads])
    cc = ctx.load[core]
    with cc.op(node.name, node.source):
        for t in loads:
            cc.dma_load(t, _WEIGHTS)
        cc.wait(_WEIGHTS, len(loads))


# -- the pipeline ---------------------------------------------------------------------------------------

def _shift_dst(t: Transfer, base: int) -> Transfer:
    return replace(t, dst=t.dst + base)


def _shift_src(t: Transfer, base: int) -> Transfer:
    return replace(t, src=t.src + base)


class Pipeline:
    """Emits the items of one core: double-buffered loads, conversions, mma, epilogue, stores."""

    def __init__(self, ctx: Ctx, core: int, node: Node, spec: Spec, items: list[Item]) -> None:
        self.ctx, self.node, self.spec, self.items = ctx, node, spec, items
        self.cc: CoreCode = ctx.core(core)
        sram = ctx.sram[core]
        what = f"{node.name}"

        def biggest(sel: str) -> int:
            return max((getattr(s, sel).rows * getattr(s, sel).cols for it in items for s in it.steps
                        if getattr(s, sel).addr is None), default=0)

        self.stage: dict[str, list[int]] = {}
        self.cvt: dict[str, int | None] = {}
        for key, src in (("a", spec.a_src), ("b", spec.b_src)):
            n = biggest(key)
            self.stage[key] = [sram.alloc(n * src.itemsize, f"{what} {key.upper()} tile") for _ in range(2)] \
                if n else []
            self.cvt[key] = sram.alloc(n * spec.op.itemsize, f"{what} {key.upper()} converted tile") \
                if n and src is not spec.op else None
        ng = max((s.b.gathered[0] * s.b.gathered[1] for it in items for s in it.steps if s.b.gathered), default=0)
        assert not ng or spec.b_src is spec.op, "a gathered operand is staged in the mma's type"
        # two, so that the next step's copies never write the tile this step's mma reads
        self.gather = [sram.alloc(ng * spec.op.itemsize, f"{what} gathered B tile") for _ in range(2)] if ng else []
        self.direct = spec.out is F32  # the FP32 accumulator is itself the result tile
        macc = max(it.m * it.n for it in items)
        self.accs = [sram.alloc(macc * 4, f"{what} accumulator") for _ in range(2 if self.direct else 1)]
        self.outs = self.accs if self.direct or all(it.keep for it in items) else [
            sram.alloc(macc * spec.out.itemsize, f"{what} output tile") for _ in range(2)]  # (none: kept, band.py)
        nb = max((it.m for it in items if it.bias is not None and it.bias.addr is None), default=0)
        self.bias_stage = [sram.alloc(nb * spec.bias_src.itemsize, f"{what} bias") for _ in range(2)] if nb else []
        self.bias_f32 = sram.alloc(nb * 4, f"{what} bias f32") if nb and spec.bias_src is not F32 else None
        ncb = max((it.n for it in items if it.col_bias is not None and it.col_bias.addr is None), default=0)
        self.col_stage = [sram.alloc(ncb * 4, f"{what} column bias") for _ in range(2)] if ncb else []
        nres = max((it.m * it.n for it in items if it.residual is not None), default=0)
        nst = max((it.m * it.n for it in items if it.residual is not None and it.residual.addr is None), default=0)
        self.res_stage = [sram.alloc(nst * spec.res_src.itemsize, f"{what} residual tile") for _ in range(2) if nst]
        self.res_f32 = sram.alloc(nres * 4, f"{what} residual f32") if nres and spec.res_src is not F32 else None
        normed = [it for it in items if it.norm is not None]
        self.norm_stage: list[int] = []
        if normed:  # a layer norm: its weights' staging, a squares tile, three row statistics
            nn = max((it.n for it in normed if it.norm is not None and it.norm.addr is None), default=0)
            self.norm_stage = [sram.alloc(2 * nn * 4, f"{what} norm weights") for _ in range(2)] if nn else []
            self.norm_sq = sram.alloc(macc * 4, f"{what} norm squares")
            rows = max(it.m for it in normed)
            self.norm_stats = (sram.alloc(rows * 4, f"{what} row means"), sram.alloc(rows * 4, f"{what} row variances"),
                               sram.alloc(rows * 4, f"{what} row partial sums"))
        self.pending = [0, 0]  # stores in flight per result parity
        self.item_loads: dict[int, int] = {}  # item -> its epilogue operands' DMAs (on _EPILOGUE[parity])

    def emit(self) -> None:
        cc, items = self.cc, self.items
        seq = [(j, i, s) for j, it in enumerate(items) for i, s in enumerate(it.steps)]
        with cc.op(self.node.name, self.node.source):
            count = self._issue(seq, 0)
            for i, (j, si, st) in enumerate(seq):
                nxt = self._issue(seq, i + 1) if i + 1 < len(seq) else 0  # prefetch into the other buffer
                self.cc.wait(_STAGED[i % 2], count)
                count = nxt
                q = j % 2
                if si == 0 and self.direct:
                    self.cc.wait(_STORES[q], self.pending[q])  # the accumulator's previous store has left
                    self.pending[q] = 0
                if st.before is not None:
                    st.before()
                self._mma(j, si, st, i % 2)
                if si == len(items[j].steps) - 1:
                    self._epilogue(j)
            self.cc.wait(_STORES[0], self.pending[0])
            self.cc.wait(_STORES[1], self.pending[1])

    def _issue(self, seq: list[tuple[int, int, Step]], i: int) -> int:
        """Issue step i's loads into staging parity i % 2 (and its item's bias); returns the DMA count."""
        cc, spec = self.cc, self.spec
        j, si, st = seq[i]
        p, n = i % 2, 0
        for key, opnd, src in (("a", st.a, spec.a_src), ("b", st.b, spec.b_src)):
            if opnd.addr is not None:
                continue
            base, sd = self.stage[key][p], opnd.cols * src.itemsize
            for r0, nr in opnd.zero:  # taps wholly in the padding: their rows are zeros
                cc.emit("vfill", rd=cc.reg(R_D, base + r0 * sd), imm=0.0, rows=nr, cols=opnd.cols, sd=sd, dt=src)
            for ld in opnd.loads:
                cc.dma_load(_shift_dst(ld.t, base), _STAGED[p], ld.pads, 0.0, src if ld.pads else None)
                n += 1
        it = self.items[j]
        if si == 0:
            q = j % 2
            for extra, stage in ((it.bias, self.bias_stage), (it.col_bias, self.col_stage),
                                 (it.residual, self.res_stage), (it.norm, self.norm_stage)):
                if extra is not None and extra.addr is None:
                    for ld in extra.loads:
                        cc.dma_load(_shift_dst(ld.t, stage[q]), _EPILOGUE[q])
                    self.item_loads[j] = self.item_loads.get(j, 0) + len(extra.loads)
        return n

    def _operand(self, key: str, opnd: Operand, p: int) -> tuple[int, int]:
        """SRAM address and row stride of an operand as the mma reads it (converting a staged tile)."""
        if opnd.addr is not None:
            return opnd.addr, opnd.stride
        cc, spec = self.cc, self.spec
        src = spec.a_src if key == "a" else spec.b_src
        base = self.stage[key][p]
        if opnd.gathered is not None:
            e, g, gcols = spec.op.itemsize, self.gather[p], opnd.gathered[1]
            for mv in opnd.moves:
                cc.emit("vmov", rd=cc.reg(R_D, g + mv.dst * e), ra=cc.reg(R_A, base + mv.src * e), rows=mv.rows,
                        cols=mv.cols, sd=gcols * e, sa=mv.src_stride * e, dt=spec.op)
            return g, gcols * e
        cvt = self.cvt[key]
        if cvt is None:
            return base, opnd.cols * src.itemsize
        bias = spec.a_bias if key == "a" else spec.b_bias
        cc.emit("vcvt", rd=cc.reg(R_D, cvt), ra=cc.reg(R_A, base), rows=opnd.rows, cols=opnd.cols,
                sd=opnd.cols * spec.op.itemsize, sa=opnd.cols * src.itemsize, dtd=spec.op, dts=src,
                rbias=cc.reg(R_CVT, bias) if bias else 0)
        return cvt, opnd.cols * spec.op.itemsize

    def _mma(self, j: int, si: int, st: Step, p: int) -> None:
        cc, spec, it = self.cc, self.spec, self.items[j]
        a, sa = self._operand("a", st.a, p)
        b, sb = self._operand("b", st.b, p)
        acc = self.accs[j % 2] if self.direct else self.accs[0]
        rbias = cc.reg(R_BIAS, spec.a_bias | spec.b_bias << 8) if spec.op.is_cfp else 0
        if st.parts:
            e = spec.op.itemsize  # (the mma reads both operands in its own type, converted or not)
            written: set[int] = set()  # the accumulator column ranges this step has begun
            for pt in st.parts:
                cc.emit("mma", rd=cc.reg(R_D, acc + pt.d0 * 4), ra=cc.reg(R_A, a + pt.a0 * e),
                        rb=cc.reg(R_B, b + pt.b_off * e), m=it.m, n=pt.n, k=pt.k, sd=it.n * 4, sa=sa,
                        sb=pt.b_stride * e, dt=spec.op, acc=int(si > 0 or pt.d0 in written), rbias=rbias)
                written.add(pt.d0)
            return
        assert st.a.rows == it.m and st.b.shape[1] == it.n and st.a.cols == st.b.shape[0], (it.m, it.n, st)
        cc.emit("mma", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, a), rb=cc.reg(R_B, b), m=it.m, n=it.n, k=st.a.cols,
                sd=it.n * 4, sa=sa, sb=sb, dt=spec.op, acc=int(si > 0), rbias=rbias)

    def _row_max(self, it: Item, acc: int) -> None:
        """Each output row of a row_max step over its tile rows, in place on the FP32 tile (rows are output
        channels, n * 4 bytes apart)."""
        cc, w, n4 = self.cc, it.row_width, it.n * 4
        for i, rows in enumerate(it.row_max):
            dst = acc + i * w * 4
            if rows[0] != i:
                cc.emit("vmov", rd=cc.reg(R_D, dst), ra=cc.reg(R_A, acc + rows[0] * w * 4), rows=it.m, cols=w, sd=n4,
                        sa=n4, dt=F32)
            for r in rows[1:]:
                cc.emit("vmax", rd=cc.reg(R_D, dst), ra=cc.reg(R_A, dst), rb=cc.reg(R_B, acc + r * w * 4), rows=it.m,
                        cols=w, sd=n4, sa=n4, sb=n4, dt=F32)

    def _epilogue(self, j: int) -> None:
        """Bias per row on the FP32 accumulator, the node's epilogue steps in order (bias per column,
        residual, scalar arithmetic, clamp, activation), conversion to the output type, the stores."""
        cc, spec, it = self.cc, self.spec, self.items[j]
        q = j % 2
        acc = self.accs[q] if self.direct else self.accs[0]
        n4 = it.n * 4
        self.cc.wait(_EPILOGUE[q], self.item_loads.pop(j, 0))
        if it.bias is not None:
            if it.bias.addr is not None:
                bias = it.bias.addr
            else:
                bias = self.bias_stage[q]
                if self.bias_f32 is not None:
                    cc.emit("vcvt", rd=cc.reg(R_D, self.bias_f32), ra=cc.reg(R_A, bias), rows=it.m, cols=1, sd=4,
                            sa=spec.bias_src.itemsize, dtd=F32, dts=spec.bias_src)
                    bias = self.bias_f32
            cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, bias), rows=it.m, cols=it.n,
                    sd=n4, sa=n4, sb=4, dt=F32, bcb="col")
        for step in spec.epilogue:
            if step[0] == "bias":  # one row of n biases, repeated down the tile
                assert it.col_bias is not None
                cb = it.col_bias.addr if it.col_bias.addr is not None else self.col_stage[q]
                cc.emit("vadd", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc), rb=cc.reg(R_B, cb), rows=it.m,
                        cols=it.n, sd=n4, sa=n4, sb=0, dt=F32, bcb="row")
            elif step[0] in RESIDUAL_STEPS:  # added (subtracted) in FP32, before rounding to the output type
                assert it.residual is not None
                res = it.residual.addr if it.residual.addr is not None else self.res_stage[q]
                rs = (it.residual.addr is not None and it.residual.stride) or it.n * spec.res_src.itemsize
                if self.res_f32 is not None:
                    cc.emit("vcvt", rd=cc.reg(R_D, self.res_f32), ra=cc.reg(R_A, res), rows=it.m, cols=it.n,
                            sd=n4, sa=rs, dtd=F32, dts=spec.res_src)
                    res, rs = self.res_f32, n4
                cc.emit("vadd" if step[0] == "residual" else "vsub", rd=cc.reg(R_D, acc), ra=cc.reg(R_A, acc),
                        rb=cc.reg(R_B, res), rows=it.m, cols=it.n, sd=n4, sa=n4, sb=rs, dt=F32)
            elif step[0] == NORM:  # the tile holds whole rows: its statistics need no other core
                assert it.norm is not None
                nw = it.norm.addr if it.norm.addr is not None else self.norm_stage[q]
                emit_norm(cc, [NormTile(acc, it.n, nw, nw + it.n * 4)], it.m, it.n, float(step[1]), self.norm_stats,
                          self.norm_sq)
            elif step[0] == ROW_MAX:
                self._row_max(it, acc)
            else:
                emit_pointwise(cc, step, acc, it.m, it.n, n4, F32)
        if it.keep is not None:
            it.keep(acc)
            res = 0
        elif self.direct:
            res = acc
        else:
            self.cc.wait(_STORES[q], self.pending[q])  # the output tile's previous store has left
            res = self.outs[q]
            cc.emit("vcvt", rd=cc.reg(R_D, res), ra=cc.reg(R_A, acc), rows=it.m, cols=it.n,
                    sd=it.n * spec.out.itemsize, sa=n4, dtd=spec.out, dts=F32)
        for t in it.stores:
            cc.dma_store(_shift_src(t, res), _STORES[q])
        self.pending[q] = len(it.stores)
