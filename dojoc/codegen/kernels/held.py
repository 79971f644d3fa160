"""Activations held in SRAM between two SUMMA matmuls: the producer's output never goes to DRAM.

SUMMA leaves the output block C[i, j] of a matmul on core (i, j) of the mesh, in SRAM. When the only
reader of that output is the next op, a SUMMA matmul whose A operand it is (a transformer's two
feed-forward layers: Linear(d -> 4d), GELU, Linear(4d -> d)), the consumer's rows of A are the producer's
rows, and its K is the producer's N: so if the consumer cuts K into the producer's column blocks, chunk
t of row i is exactly block (i, t), which core (i, t) already has. That core is then the loader of the
chunk: it multicasts it from the held block along its row, as a resident weight's loader does, and
nothing is stored to or loaded from DRAM (for BERT-base's feed-forward at 1,024 tokens, 6 MiB each way).

The same holds for an attention that reads the output as its queries, keys and values through views (a
transformer's merged Q/K/V projection): `held_read.py` puts each item's pieces from the cores that hold
them (`offer` takes either reader).

A disabled core's block has no core: the cores of its row compute it in slices (summa.py), and put
their slices into one *holder* (the nearest enabled core of the row), which keeps the assembled block
beside its own and multicasts it in its turn. Every core holds the same bytes (its own block and room
for one assembled block), so the held addresses are the same on every core.

The held bytes are blocks at the top of SRAM, at one address on every core that holds them (`sram.hold`),
from the producer's start to the consumer's end, and both ops plan their scratch beside them. The
producer's decision says so with tile field `hold` (1 or 0): a user may set it to 0 to send the value
through DRAM, and a mapping that asks to hold what cannot be held is an error naming the reason.

A SUMMA output that a later matrix op adds as its epilogue residual (ResNet's shortcut) may also be
*kept*: it is still stored to DRAM for its other readers, and each core copies its block into SRAM held
until that reader has run (`Kept`, tile field `keep` = 1). When the reader runs SUMMA on the same grid,
core (i, j) adds block (i, j) from its own SRAM instead of loading it, and a core beside a disabled core
its slice (the same core computes the same slice in both ops); otherwise it loads the residual from DRAM
as before. When that reader is the output's only one and a convolution that SUMMA can take, the output
is kept only (`keep` = 2): nothing is stored, and the reader must run SUMMA on the producer's grid.

A convolution's output that a later 1 x 1 convolution (stride 1, unpadded, one group) reads as its input is
kept too (`b_reader`), for that reader's B operand: its B is the output itself, [channels, pixels], so
when it runs SUMMA on the same grid with the producer's row blocks as its K chunks (`Problem.b_kept`, tile
field `sram_b`), chunk t of column block j is block (t, j), which core (t, j) already has: that core
multicasts it down its column, and nothing is read from DRAM. A block at a disabled position has no core
(its slices lie on its row); its chunk, and the reader's own slices beside a disabled core, come from the
DRAM copy. With `keep` = 1 the whole copy is written; with 2 (its readers are this B reader and a residual
reader that SUMMA takes, nothing else: `sram_only`) only the column blocks that hold a disabled position
(`dram_cols`), and both readers must take it from SRAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING

from dojoc.codegen import sram
from dojoc.codegen.context import Ctx
from dojoc.codegen.kernels import held_read
from dojoc.codegen.sems import SUMMA
from dojoc.codegen.sram import aligned
from dojoc.codegen.view import Transfer, View, transfers
from dojoc.errors import CompileError
from dojoc.ir.epilogue import ROW_MAX, split_inputs, steps_of
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.model import Shard
from dojoc.mapping.place import Rect
from isa.dtypes import DType

if TYPE_CHECKING:
    from dojoc.codegen.kernels.matmul import Problem
    from dojoc.codegen.kernels.mxu import Spec

ARRIVE = SUMMA.id("arrive")  # the semaphore on which a holder counts the slices put into its assembled block


@dataclass(frozen=True)
class Held:
    """A matmul output [m, n] held in the mesh's SRAM in SUMMA's block layout."""

    name: str  # the value (its DRAM tensor is declared but never written)
    base: int  # the DRAM view's base: the key by which its consumer finds it
    m: int
    n: int
    dtype: DType
    mblocks: tuple[tuple[int, int], ...]  # the row blocks (first, count), one per mesh row
    kblocks: tuple[tuple[int, int], ...]  # the column blocks (first, count): the consumer's K chunks
    own: int  # SRAM address of every core's own block
    extra: int  # SRAM address of an assembled block, on its holder
    nbytes: int  # bytes held on every core
    cores: dict[tuple[int, int], int]  # (grid row, block column) -> the core that holds the block
    rect: Rect  # the grid's rectangle of the mesh
    at: dict[tuple[int, int], int]  # (grid row, grid column) -> the enabled core there (Grid.at)

    def owner(self, r: int, j: int) -> tuple[int, int, int]:
        """(core, SRAM address, row stride in bytes) of block (r, j)."""
        core = self.cores[(r, j)]
        stride = self.kblocks[j][1] * self.dtype.itemsize
        return core, (self.own if self.at.get((r, j)) == core else self.extra), stride


def holders(at: dict[tuple[int, int], int], shape: tuple[int, int]) -> dict[tuple[int, int], int] | None:
    """The core that holds each block of a SUMMA grid of `shape` whose enabled cores are `at` (Grid.at):
    its own core, or for a disabled position the nearest enabled core of its row (the right one on a tie);
    None when a row has more than one disabled core (the SUMMA grid gives such a row's cores one slice
    each, so it is not supported)."""
    rows, cols = shape
    out: dict[tuple[int, int], int] = {}
    for r in range(rows):
        gone = [c for c in range(cols) if (r, c) not in at]
        if len(gone) > 1:
            return None
        for c in range(cols):
            if (r, c) in at:
                out[(r, c)] = at[(r, c)]
                continue
            near = sorted((abs(d - c), -d) for d in range(cols) if (r, d) in at)
            out[(r, c)] = at[(r, -near[0][1])]
    return out


def _chain(ctx: Ctx, node: Node) -> tuple[Node | None, str]:
    """The matmul that reads `node`'s output as its A (through reshapes only), when it is the next op
    in program order; else (None, why not)."""
    graph, value = ctx.graph, node.output
    between: list[Node] = []
    while True:
        readers = ctx.users.get(value, [])
        if value in graph.outputs:
            return None, "it is a graph output"
        if len(readers) != 1:
            return None, f"it has {len(readers)} readers"
        reader = readers[0]
        if reader.op is Op.RESHAPE:
            between.append(reader)
            value = reader.output
            continue
        if reader.op is not Op.MATMUL or reader.inputs[0] is not value or value in reader.inputs[1:]:
            return None, f"its reader {reader.name} is not a matmul that takes it as its left operand"
        break
    why = no_code_between(ctx, node, reader, between)
    return (None, why) if why else (reader, "")


def no_code_between(ctx: Ctx, node: Node, reader: Node, between: list[Node]) -> str:
    """"" when no op runs code between `node` and `reader` in program order (but the view ops `between`,
    which lead from one to the other), else why not."""
    from dojoc.codegen.lower import VIEW_OPS, view_of

    graph = ctx.graph
    if ctx.apart(node.name, reader.name):
        return f"its reader {reader.name} runs in another pipeline stage"

    def free(n: Node) -> bool:  # emits no code: a parameter, a constant, a view of a value in DRAM
        if n.op in (Op.PARAM, Op.CONST) or n in between:
            return True
        v = n.inputs[0] if n.inputs else None
        return (n.op in VIEW_OPS and v in ctx.views and v not in ctx.consts and n.output not in graph.outputs
                and view_of(ctx, n) is not None)

    nodes = graph.nodes
    i, j = nodes.index(node), nodes.index(reader)
    code = [n for n in nodes[i + 1:j] if not free(n)]
    return f"op {code[0].name} runs between it and its reader {reader.name}" if code else ""


def offer(ctx: Ctx, node: Node, p: Problem, spec: Spec) -> tuple[Node | None, str]:
    """Whether the SUMMA matmul `node` (problem `p`) may hold its output for its reader: (the reader, "")
    or (None, why not). A held value lives on the home die's grid (the reader runs there too)."""
    from dojoc.codegen.kernels.summa_grid import MIN_BLOCK, grid

    rows, cols = ctx.home.shape
    if p.m < MIN_BLOCK * rows or p.n < MIN_BLOCK * cols:
        return None, "it is too small to run on the whole die"
    g = grid(ctx, p.m, p.n)
    kblocks = g.nblocks
    if ctx.precision == "cfp8":
        return None, "cfp8 matmuls convert their operands in SRAM"
    if len(p.o) != 1 or p.o[0] != View.dense(p.o[0].base, (p.m, p.n), p.o[0].dtype) or p.im2col is not None:
        return None, "its output is not one dense [M, N] matrix"
    if holders(g.at, g.rect.shape) is None:
        return None, "a mesh row has more than one disabled core"
    reader, why = _chain(ctx, node)
    if reader is None:  # (or an attention that takes it as its queries, keys and values: held_read.py)
        reader, why_not = held_read.sdpa_reader(ctx, node, p.m, p.n, spec.out.itemsize)
        if reader is None:
            return None, f"{why}; {why_not}" if why_not != why else why
    if ctx.held:
        return None, "its own left operand is held"
    if reader.op is Op.SDPA:
        if spec.out is not ctx.storage(reader.inputs[0].type.dtype):
            return None, f"its reader {reader.name} takes another type"
        return reader, ""
    why = a_reader_why(ctx, reader, p.m, kblocks, spec.out)
    return (None, why) if why else (reader, "")


def a_reader_why(ctx: Ctx, reader: Node, m: int, kblocks: tuple[tuple[int, int], ...], dtype: DType) -> str:
    """"" when matmul `reader` can take a held A of `m` rows in column blocks `kblocks` of `dtype` (its K
    chunks) on the home die's grid, else why not."""
    from dojoc.codegen.kernels.mxu import param_array
    from dojoc.codegen.kernels.summa_grid import MIN_BLOCK

    rows, cols = ctx.home.shape
    given = ctx.given.get(reader.name)
    if given is not None and given.kernel != "summa":
        return f"the mapping gives its reader {reader.name} kernel {given.kernel!r}"
    w = reader.inputs[1]
    if param_array(ctx, w, ctx.graph.producers()) is None:
        return f"its reader {reader.name}'s right operand is not a weight"
    nc = w.type.shape[-1]
    if prod(reader.output.type.shape[:-1]) != m or nc < MIN_BLOCK * cols or m < MIN_BLOCK * rows:
        return f"its reader {reader.name} is too small for SUMMA"
    if max(c for _, c in kblocks) > 4095 or dtype is not ctx.mxu_dtype:
        return "its column blocks are not chunks its reader can multiply"
    return ""


def hold(ctx: Ctx, node: Node, p: Problem, spec: Spec, rect: Rect, at: dict[tuple[int, int], int],
         mblocks: tuple[tuple[int, int], ...], kblocks: tuple[tuple[int, int], ...]) -> Held:
    """Hold the output of `node` in the SRAM of every core of its SUMMA grid, whose enabled cores are `at`
    (see the module docstring)."""
    return hold_matrix(ctx, node.output.name, p.o[0].base, p.m, p.n, spec.out, rect, at, mblocks, kblocks)


def hold_matrix(ctx: Ctx, name: str, base: int, m: int, n: int, dtype: DType, rect: Rect,
                at: dict[tuple[int, int], int], mblocks: tuple[tuple[int, int], ...],
                kblocks: tuple[tuple[int, int], ...]) -> Held:
    """Hold value `name`, the dense [m, n] matrix at DRAM `base`, in SUMMA's blocks over the grid whose
    enabled cores are `at`: each core's own block, and room for a disabled position's on its holder."""
    cores = holders(at, rect.shape)
    assert cores is not None
    block = hold_bytes(mblocks, kblocks, dtype) // 2
    addr = sram.hold([ctx.sram[c] for c in at.values()], 2 * block, f"{name}'s output block")
    h = Held(name, base, m, n, dtype, mblocks, kblocks, addr, addr + block, 2 * block, cores, rect, at)
    ctx.held[h.base] = h
    ctx.held_shards[h.base] = shards(ctx, h)
    return h


def hold_bytes(mblocks: tuple[tuple[int, int], ...], kblocks: tuple[tuple[int, int], ...], dtype: DType) -> int:
    """SRAM bytes a held value takes on every core of its grid: its block and an assembled one."""
    return 2 * aligned(max(c for _, c in mblocks) * max(c for _, c in kblocks) * dtype.itemsize)


def release(ctx: Ctx, h: Held) -> None:
    """The consumer is done: free the held bytes on every core of the grid."""
    for c in h.at.values():
        ctx.sram[c].release(h.own)
    del ctx.held[h.base]


def shards(ctx: Ctx, h: Held) -> tuple[Shard, ...]:
    """The held value's pieces, for the mapping: each block on the core that holds it."""
    out = []
    for (r, j), core in sorted(h.cores.items()):
        _, addr, stride = h.owner(r, j)
        out.append(Shard(core, addr, h.mblocks[r][1] * stride))
    return tuple(out)


@dataclass(frozen=True)
class Kept:
    """A SUMMA output kept in SRAM, beside its DRAM copy, for `reader`'s epilogue residual and `b_reader`'s
    B: each core's block at `addr` (the same on every core of the grid), rows n of its column block wide."""

    name: str
    reader: str  # the op that adds it as its residual ("" when it is kept for a B reader only)
    views: tuple[View, ...]  # the output's DRAM views (the reader's residual views, when they match)
    rect: Rect
    mblocks: tuple[tuple[int, int], ...]
    nblocks: tuple[tuple[int, int], ...]
    addr: int
    at: dict[tuple[int, int], int]  # (grid row, column) -> the enabled core there (Grid.at)
    slices: int  # SRAM address of a core's slice beside a disabled core (after its block)
    only: bool  # no DRAM copy (but `dram_cols`, for a B reader): its readers must take it
    b_reader: str = ""  # the 1 x 1 convolution that multiplies it as its B (`b_reader`), if any
    # kept only for a B reader: the column blocks still stored to DRAM (`dram_cols`)
    dram_cols: frozenset[int] = frozenset()
    # kept only, and read by 1 x 1 convolutions of this stride too (`strided`): the other column blocks'
    # DRAM copy has only every step-th row and column of the output, all that those readers read
    step: int = 1
    ow: int = 0  # the output's columns (an image's pixels are rows of ow), with step > 1

    @property
    def cores(self) -> tuple[int, ...]:
        return tuple(self.at.values())

    def owner(self, t: int, j: int) -> int | None:
        """The core that has block (t, j) whole (a B reader's chunk t of column block j), or None at a
        disabled position (its slices lie on its row's cores)."""
        return self.at.get((t, j))


def _readers(ctx: Ctx, node: Node) -> tuple[list[tuple[Node, Value]], bool]:
    """The ops that read `node`'s output or one of its reshapes (views of the same bytes), each with the
    value it reads; and whether any of those values is a graph output."""
    values, out = [node.output], []
    for value in values:  # (grows as reshapes are found)
        for r in ctx.users.get(value, []):
            if r.op is Op.RESHAPE:
                values.append(r.output)
            else:
                out.append((r, value))
    return out, any(v in ctx.graph.outputs for v in values)


def residual_reader(ctx: Ctx, name: str) -> tuple[Node | None, str, bool]:
    """The later matrix op (matmul or convolution) that adds op `name`'s output as its epilogue residual,
    or (None, why not); and whether it is the output's only reader, the output no graph output, and the
    reader a convolution that runs as SUMMA when its residual is kept (conv.py's implicit GEMM: one group,
    its weights and bias parameters): then the output need not go to DRAM at all."""
    node = ctx.ops_by_name.get(name)
    if node is None:
        return None, "it is a later phase of its op", False
    readers, output = _readers(ctx, node)
    readers = [(r, v) for r, v in readers if not ctx.apart(name, r.name)]  # others read DRAM
    reader = next((r for r, v in readers if r.op in (Op.MATMUL, Op.CONV2D)
                   and split_inputs(r.inputs, r.attrs)[1].get("residual") is v), None)
    if reader is None:
        return None, "no later matrix op adds it as its residual", False
    return reader, "", len(readers) == 1 and not output and _summa_conv(ctx, reader)


def keep(ctx: Ctx, name: str, reader: str, views: list[View], spec: Spec, rect: Rect,
         at: dict[tuple[int, int], int], mblocks: tuple[tuple[int, int], ...],
         nblocks: tuple[tuple[int, int], ...], x_max: int, only: bool, b_reader: str = "", step: int = 1,
         ow: int = 0) -> Kept:
    """Hold a block (and a slice of x_max columns) of the output of op `name` on every core of its grid, for
    `reader`'s residual and `b_reader`'s B (either may be ""; see the module docstring)."""
    m_max, eo = max(c for _, c in mblocks), spec.out.itemsize
    block = aligned(m_max * max(c for _, c in nblocks) * eo)
    purpose = " and ".join([f"{reader}'s residual"] * bool(reader) + [f"{b_reader}'s B"] * bool(b_reader))
    base = sram.hold([ctx.sram[c] for c in at.values()], block + aligned(m_max * x_max * eo),
                     f"{name}'s output block kept for {purpose}")
    k = Kept(name, reader, tuple(views), rect, mblocks, nblocks, base, dict(at), base + block, only, b_reader,
             dram_cols(at, rect.shape) if only and b_reader else frozenset(), step if only else 1, ow)
    if k.step > 1:
        purpose += f" (its DRAM copy elsewhere has one row and column in {k.step}, all its strided readers read)"
    if reader:
        ctx.kept[reader] = k
    if b_reader:
        ctx.kept_b[b_reader] = k
    blocks = sorted((c, mblocks[r][1] * nblocks[j][1] * eo) for (r, j), c in at.items())
    ctx.kept_shards[views[0].base] = (purpose, tuple(Shard(c, k.addr, nbytes) for c, nbytes in blocks))
    return k


def strided_stores(k: Kept, v: View, c0: int, off: int, cnt: int, out: int, m0: int, m: int, n: int,
                   eo: int) -> list[Transfer]:
    """The stores of a block's run of output pixels c0 .. c0 + cnt - 1 of image view `v` (at `off` in the
    block of n columns at SRAM `out`, its rows m0 .. m0 + m - 1) on every k.step-th row and column: one DMA
    per such row of the run."""
    s, ow = k.step, k.ow
    out_ts: list[Transfer] = []
    q = c0
    while q < c0 + cnt:
        y, x = divmod(q, ow)
        end = min(c0 + cnt, (y + 1) * ow)  # the rest of this row
        first = x + (-x % s)
        if y % s == 0 and first < end - y * ow:
            count = len(range(first, end - y * ow, s))
            out_ts += transfers(out + (off + y * ow + first - c0) * eo,
                                v.base + m0 * v.strides[0] + (y * ow + first) * v.strides[1],
                                [(m, n * eo, v.strides[0]), (count, s * eo, s * v.strides[1])], eo)
        q = end
    return out_ts


def kept_for(ctx: Ctx, views: list[View] | None, rect: Rect, mblocks: tuple[tuple[int, int], ...],
             nblocks: tuple[tuple[int, int], ...]) -> Kept | None:
    """The residual kept in SRAM for the op in scope, when it lies in this grid's blocks."""
    k: Kept | None = ctx.kept.get(ctx.scope[0])
    if k is None or views is None or tuple(views) != k.views \
            or (k.rect, k.mblocks, k.nblocks) != (rect, mblocks, nblocks):
        return None
    return k


def release_kept(ctx: Ctx, reader: str) -> None:
    """`reader` has run: free the residual and the B kept for it (a residual kept only it must have taken),
    each once no other reader still waits for it."""
    k = ctx.kept.pop(reader, None)
    used = reader in ctx.kept_used
    ctx.kept_used.discard(reader)
    if k is not None and k.only and not used:
        raise CompileError(f"internal error: {k.name}'s output was kept in SRAM only for {reader}, which did "
                           "not take it; give the producer tile keep=1 in the mapping, and report this")
    for value in (k, ctx.kept_b.pop(reader, None)):
        if value is None or any(v is value for v in (*ctx.kept.values(), *ctx.kept_b.values())):
            continue
        for c in value.cores:
            ctx.sram[c].release(value.addr)


def dram_cols(at: dict[tuple[int, int], int], shape: tuple[int, int]) -> frozenset[int]:
    """The column blocks of a grid (enabled cores `at`, `shape` rows x columns) that hold a disabled position:
    a B reader takes their chunks at disabled positions, and its slices beside disabled cores, from DRAM."""
    return frozenset(j for i in range(shape[0]) for j in range(shape[1]) if (i, j) not in at)


def sram_only(ctx: Ctx, name: str, keeper: Node | None, breader: Node) -> bool:
    """Whether every reader of op `name`'s output can take it from SRAM when it is kept: its B reader and
    its residual reader (a convolution that SUMMA takes), and no graph output; but for `strided` readers,
    which read a subsampled DRAM copy."""
    node = ctx.ops_by_name.get(name)
    if node is None:
        return False
    readers, output = _readers(ctx, node)
    if any(ctx.apart(name, r.name) for r, _ in readers):
        return False
    wanted = [r for r in (keeper, breader) if r is not None]
    others = [r for r, _ in readers if r not in wanted]
    if output or {r.name for r in wanted} - {r.name for r, _ in readers} or others and strided(node, others) == 1:
        return False
    return keeper is None or _summa_conv(ctx, keeper)


def strided(node: Node, readers: list[Node]) -> int:
    """The stride s when every one of `readers` takes `node`'s output as the input of a 1 x 1, unpadded
    convolution of stride (s, s), s > 1, and nothing else of it (ResNet's shortcut reads every other row
    and column of its block's input), else 1: a DRAM copy for them needs only those rows and columns."""
    steps = set()
    for r in readers:
        own, extra = split_inputs(r.inputs, r.attrs)
        a = r.attrs
        s = tuple(a.get("stride", (1, 1)))
        if r.op is not Op.CONV2D or own[0] is not node.output or own.count(node.output) != 1 \
                or node.output in extra.values() or tuple(own[1].type.shape[2:]) != (1, 1) \
                or tuple(a.get("padding", (0, 0))) != (0, 0) or s[0] != s[1]:
            return 1
        steps.add(s[0])
    return steps.pop() if len(steps) == 1 else 1


def strided_step(ctx: Ctx, name: str, wanted: list[Node]) -> int:
    """The stride of op `name`'s readers but `wanted` (its kept readers) when `strided` gives one, else 1."""
    node = ctx.ops_by_name.get(name)
    if node is None:
        return 1
    others = [r for r, _ in _readers(ctx, node)[0] if r not in wanted]
    return strided(node, others) if others else 1


def _summa_conv(ctx: Ctx, node: Node) -> bool:
    """Whether `node` is a convolution that SUMMA always takes when its input or residual is kept: one
    group, its weights and bias parameters, K (channels x taps) at least 8, not cfp8; and as many output
    channels as the home die's rows take."""
    from dojoc.codegen.kernels.summa_grid import MIN_BLOCK

    own, _ = split_inputs(node.inputs, node.attrs)
    if node.op is not Op.CONV2D or len(own) < 2 or any(s[0] == ROW_MAX for s in steps_of(node.attrs)) \
            or node.name in ctx.bands:
        return False  # (a convolution that pools its rows, or a chain's member, runs on the tiled kernel)
    producers = ctx.graph.producers()
    params = all(producers.get(v) is not None and producers[v].op is Op.PARAM for v in own[1:])
    o, c, kh, kw = own[1].type.shape
    return node.attrs.get("groups", 1) == 1 and params and ctx.precision != "cfp8" and c * kh * kw >= 8 \
        and o >= MIN_BLOCK * ctx.home.rows


def owned(keep: dict[tuple[str, int], int], stride: dict[tuple[str, int], int], a: Held | None, b: Kept | None,
          r: int, c: int, core: int, chunks: int) -> None:
    """Record in `keep` (and `stride`) where the SUMMA core at grid position (r, c) has the chunks of a held
    A (its row's blocks) or of a kept B (its column's blocks, rows n wide as B's chunk buffers) that it
    multicasts."""
    for t in range(chunks):
        if a is not None:
            owner, addr, row = a.owner(r, t)
            if owner == core:
                keep[("a", t)], stride[("a", t)] = addr, row
        if b is not None and b.owner(t, c) == core:
            keep[("b", t)] = b.addr


def b_reader(ctx: Ctx, name: str, p: Problem) -> Node | None:
    """The later convolution that reads the output of op `name` (a convolution run as SUMMA, problem `p`)
    as its input and can multiply its kept blocks as its B: 1 x 1, stride 1, unpadded, and one that SUMMA
    takes (`_summa_conv`); else None."""
    node = ctx.ops_by_name.get(name)
    if p.im2col is None or p.shift is not None or node is None:  # (no node: a later phase of its op)
        return None
    for r, v in _readers(ctx, node)[0]:
        own, _ = split_inputs(r.inputs, r.attrs)
        if ctx.apart(name, r.name) or r.op is not Op.CONV2D or own[0] is not v or len(own) < 2:
            continue
        a = r.attrs
        if tuple(own[1].type.shape[2:]) == (1, 1) and tuple(a.get("stride", (1, 1))) == (1, 1) \
                and tuple(a.get("padding", (0, 0))) == (0, 0) and _summa_conv(ctx, r) \
                and prod(v.type.shape[2:]) * v.type.shape[0] == p.n and v.type.shape[1] == p.m:
            return r
    return None


def kept_b(ctx: Ctx) -> Kept | None:
    """The output kept in SRAM as the B of the op in scope (`b_reader`), if any."""
    k: Kept | None = ctx.kept_b.get(ctx.scope[0])
    return k


def only_kept(k: Kept | None) -> Kept | None:
    """`k` when it is kept only (its reader must take it from SRAM), else None."""
    return k if k is not None and k.only else None
