"""Convolution chains kept in SRAM by rows: a *band* is a convolution's output left on the cores that
computed it, each core keeping the rows of its items, for the next convolutions of the chain, which run on
the same cores over the same items and so find their input, or their residual, in their own SRAM.

A ResNet stage at batch 8 is a chain: every convolution of it (1 x 1 reduce, 3 x 3, 1 x 1 expand with the
block's residual, the next block's reduce ...) has the same [N, H, W] grid of output pixels. Cut that grid
into items of whole rows (image b, rows r0 .. r0 + rt - 1, all columns, all output channels) dealt to the
same cores for every op of the chain, and an item's input is the producer's item on the same core, but for
the rows a k x k convolution reads above and below it (its *halo*), which the neighbouring items' cores
send. So the activations never go to DRAM between the ops of the chain, only the chain's inputs and the
outputs that something outside it reads.

Layout. A core keeps each of its items' output as a *slot* [C, hp + rt + hp, wp + W + wp]: the item's rows,
with hp halo rows above and below and wp zero columns either side, where (hp, wp) is the most padding a
reader of the chain needs ((kh - 1) / 2, (kw - 1) / 2 of a stride-1, same-size convolution; 0 for a 1 x 1
or a residual). Every core of the chain has its slots at the same SRAM address (held at the top of the
scratch arena, like held.py's blocks), so a core addresses its neighbour's slot without asking. The producer
converts its FP32 tile into the slot row by row, fills the pad columns and the halo rows at an image's top
and bottom with zeros, and puts its first hp rows into the bottom halo of the item above and its last hp
rows into the top halo of the item below (network puts, semaphore HALO on the receiver). Its reader
multiplies the slot in place: one mma per output row and tap, B at the tap's offset into the slot, A the
resident weights (all of every member's weights stay resident on every core of the chain). The halo's
first reader waits for its arrivals before its first mma; a producer waits for its puts to leave before
its op ends, so every semaphore is back at zero when an op ends.

Which convolutions chain (`links`): one group, weights and bias parameters, no row_max step, bf16 or fp32,
all output channels and columns within one mma, an output that is the mma's operand type. A reader takes its
producer's output from the band as its input when it is stride 1, undilated and keeps the size (padding
(k - 1) / 2 of an odd kernel), and the first halo reader is the next op that emits code; or as its epilogue
residual when the band has no padding. The chain is a connected set of such links. Its decision (`plan`,
made before the first op is lowered, since earlier ops' kernels must know that these ops take their inputs
from SRAM) is the rows per item and the cores, shared by every member: the cost model's (the fewest rows
whose items the cores take, on at least half the cores, for a chain of at least MIN_MEMBERS, against running
each member as it would run alone: the tiled kernel's plan or SUMMA's, whichever predicts less), or a given
mapping's: tile field `band` 1 on every member, all with the same cores and rows; `band` 0 (or another
kernel) takes an op out of its chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import ceil
from typing import TYPE_CHECKING

import networkx as nx

from dojoc.codegen.context import MAX_ROWS, Ctx
from dojoc.codegen.kernels import held
from dojoc.codegen.kernels.mxu import F32, Region, Spec, operand_type
from dojoc.codegen.kernels.mxu_plan import overlapped_bound
from dojoc.codegen.sems import BAND
from dojoc.codegen.view import View
from dojoc.errors import MappingError
from dojoc.ir.epilogue import ROW_MAX, split_inputs, steps_of
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.model import Bound
from isa.costs import matmul_cycles, vector_cycles
from isa.dtypes import DType

if TYPE_CHECKING:
    from dojoc.codegen.kernels.conv import Conv

# a slot's halo arrivals, alternating along the chain (consecutive bands never share one); this core's halo
# puts whose source has left (sems.BAND, beside the matrix pipeline's)
HALO, SENT = BAND.ids("halo"), BAND.id("sent")
# by default a chain has at least this many members: a pair saves one tensor's round trip through DRAM,
# which SUMMA's kept blocks (held.py) already save for a 1 x 1 reader, on every core
MIN_MEMBERS = 3
# A chain takes the fewest cores whose predicted cycles are within this share of the fastest option's (_decide)
CORES_TOLERANCE = 0.02


@dataclass(frozen=True)
class Member:
    """One convolution of a chain: its items (rt rows of one image, everything else whole) on `cores`, the
    member whose output it multiplies from SRAM (`source`) and the one it adds (`residual`), and what
    becomes of its own output: kept as a band with (hp, wp) padding for `readers`, stored to DRAM too
    when something else reads it (`dram`), only every `step`-th row and column of it when every reader
    outside the chain is a 1 x 1 convolution of that stride (`held.strided`)."""

    name: str
    rt: int
    cores: tuple[int, ...]
    source: str | None = None
    residual: str | None = None
    readers: tuple[str, ...] = ()  # in program order
    hp: int = 0
    wp: int = 0
    dram: bool = True
    step: int = 1  # the DRAM copy has only every step-th row and column: all its outside readers read
    sem: int = HALO[0]  # the halo arrivals' semaphore (when hp > 0)
    waits: bool = False  # it is its source's first halo reader: it waits for the arrivals
    predicted: int = 0
    bound: Bound = Bound.COMPUTE


@dataclass(frozen=True)
class Band:
    """A member's output kept in SRAM: each core's slots from `addr` (the same on every core)."""

    member: Member
    c: int
    h: int
    w: int
    dtype: DType
    addr: int
    items: tuple[tuple[int, int], ...]  # (image, first row), in the order they are dealt
    where: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # item -> (core, slot)

    @property
    def hr(self) -> int:
        return self.member.rt + 2 * self.member.hp

    @property
    def hc(self) -> int:
        return self.w + 2 * self.member.wp

    @property
    def chan(self) -> int:
        """Elements between a slot's channels."""
        return self.hr * self.hc

    @property
    def size(self) -> int:
        """Bytes of one slot."""
        return slot_bytes(self.c, self.hr, self.hc, self.dtype)

    def slot(self, item: tuple[int, int]) -> tuple[int, int]:
        """(core, SRAM address) of an item's slot."""
        core, k = self.where[item]
        return core, self.addr + k * self.size

    def row(self, item: tuple[int, int], r: int) -> int:
        """SRAM address of channel 0 of slot row r (0: the first halo row) at the first image column."""
        return self.slot(item)[1] + (r * self.hc + self.member.wp) * self.dtype.itemsize


def slot_bytes(c: int, hr: int, hc: int, dtype: DType) -> int:
    return -(-c * hr * hc * dtype.itemsize // 64) * 64


def items_of(n: int, h: int, rt: int) -> list[tuple[int, int]]:
    return [(b, r0) for b in range(n) for r0 in range(0, h, rt)]


# -- which convolutions chain -----------------------------------------------------------------------------

def _eligible(ctx: Ctx, node: Node) -> bool:
    """Whether a convolution can be a member of a chain (the module docstring)."""
    if node.op is not Op.CONV2D or ctx.precision not in ("bf16", "fp32"):
        return False
    own, _ = split_inputs(node.inputs, node.attrs)
    producers = ctx.graph.producers()
    if len(own) < 2 or any(producers.get(v) is None or producers[v].op is not Op.PARAM for v in own[1:]):
        return False
    a = node.attrs
    o, _, _, _ = own[1].type.shape
    _, _, _, ow = node.output.type.shape
    return a.get("groups", 1) == 1 and tuple(a.get("dilation", (1, 1))) == (1, 1) \
        and not any(s[0] == ROW_MAX for s in steps_of(a)) and o <= MAX_ROWS and ow <= MAX_ROWS \
        and ctx.storage(node.output.type.dtype) is operand_type(ctx)


def _same_size(node: Node) -> tuple[int, int] | None:
    """(hp, wp) a convolution reads around its input when it is stride 1 and keeps the size, else None."""
    a = node.attrs
    kh, kw = node.inputs[1].type.shape[2:]
    ph, pw = a.get("padding", (0, 0))
    if tuple(a.get("stride", (1, 1))) != (1, 1) or kh % 2 == 0 or kw % 2 == 0 or (ph, pw) != (kh // 2, kw // 2):
        return None
    return ph, pw


def _pads(ctx: Ctx, readers: list[tuple[str, str]]) -> tuple[int, int]:
    """(hp, wp): the most rows and columns around its items that a band's input readers read."""
    pads = [_same_size(ctx.ops_by_name[r]) or (0, 0) for r, how in readers if how == "x"]
    return max((q[0] for q in pads), default=0), max((q[1] for q in pads), default=0)


def _emits_code(n: Node) -> bool:
    return n.op not in (Op.PARAM, Op.CONST, Op.INPUT)


def links(ctx: Ctx, members: set[str]) -> dict[str, list[tuple[str, str]]]:
    """For each member, the members that read its output from SRAM: (reader, "x" or "residual")."""
    nodes = ctx.graph.nodes
    index = {n.name: i for i, n in enumerate(nodes)}
    byname = ctx.ops_by_name
    out: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(members, key=index.__getitem__):
        node = byname[name]
        if node.output in ctx.graph.outputs:
            continue
        found: list[tuple[str, str]] = []
        halo = False
        for r in ctx.users.get(node.output, []):
            if r.name not in members or any(f[0] == r.name for f in found):
                continue
            own, extra = split_inputs(r.inputs, r.attrs)
            pad = _same_size(r)
            if own[0] is node.output and own.count(node.output) == 1 and pad is not None:
                if pad != (0, 0):
                    between = [n for n in nodes[index[name] + 1:index[r.name]] if _emits_code(n)]
                    if between or halo:  # (the halo's reader must run next: HALO is free until then)
                        continue
                    halo = True
                found.append((r.name, "x"))
            elif extra.get("residual") is node.output and own[0] is not node.output:
                found.append((r.name, "residual"))
        if halo:  # a slot with halo rows is padded: a residual reader takes it from DRAM
            found = [f for f in found if f[1] == "x"]
        if found:
            out[name] = found
    return out


def _components(names: list[str], edges: dict[str, list[tuple[str, str]]]) -> list[list[str]]:
    """The chains: connected sets of more than one member, each in program order (`names`' order)."""
    g = nx.Graph()
    g.add_nodes_from(names)
    g.add_edges_from((p, r) for p, rs in edges.items() for r, _ in rs)
    order = {n: i for i, n in enumerate(names)}
    return [sorted(c, key=order.__getitem__) for c in nx.connected_components(g) if len(c) > 1]


# -- the chain's decision ---------------------------------------------------------------------------------

def _dummy(ctx: Ctx, node: Node) -> tuple[Conv, Spec]:
    """The convolution's geometry and spec on stand-in views (the values have no DRAM yet): the cost
    model reads only their shapes and types."""
    from dojoc.codegen.kernels.conv import _geometry

    own, extra = split_inputs(node.inputs, node.attrs)
    vals: list[Value] = [own[0], node.output] + ([extra["residual"]] if "residual" in extra else [])
    views = {v: View.dense(0, v.type.shape, ctx.storage(v.type.dtype)) for v in vals}
    w = View.dense(0, own[1].type.shape, operand_type(ctx))
    bias = View.dense(0, own[2].type.shape, F32) if len(own) == 3 else None
    return _geometry(ctx, node, w, 0, bias, True, views)


def _alone(ctx: Ctx, node: Node) -> int:
    """The cycles the convolution is predicted to take outside a chain: the tiled kernel's plan or SUMMA's
    (on the home die, its weight resident or streamed), whichever is less."""
    from dojoc.codegen.kernels import summa
    from dojoc.codegen.kernels.conv import _plan, gemm_problems

    cv, spec = _dummy(ctx, node)
    best = _plan(ctx, node, cv, spec, True)[1]
    for q in gemm_problems(cv, spec):
        if q is None or not summa.eligible(ctx, q, spec):
            continue
        for res in (None, "a"):
            got = summa._best_kc(ctx, q, spec, res, rect=ctx.home)
            if got is not None:
                best = min(best, got[3])
    return best


def _cycles(ctx: Ctx, node: Node, m: Member) -> tuple[int, Bound]:
    """The cost model's cycles and bound of a member: a head (input from DRAM) as the tiled kernel's items
    of all output channels and whole rows, its best steps; a reader of a band one mma per output row and
    tap from the slot (one for a 1 x 1 reader of an unpadded slot); then the epilogue, the conversion into
    its slot row by row, the halo puts, and the DRAM traffic the chain leaves (its inputs from outside,
    the copies that outside readers need)."""
    cv, spec = _dummy(ctx, node)
    mach = ctx.machine
    o, c, ow, rt = cv.o, cv.c, cv.ow, m.rt
    pt, e = rt * ow, spec.out.itemsize
    items = cv.n * ceil(cv.oh / rt)
    run = ceil(items / len(m.cores))
    cores = list(m.cores)
    keep = rt * vector_cycles(o * ow, 4, o * ow * 4, o * ow * e, mach) + 4 * m.hp * mach.issue_cycles
    if m.source is None:
        cyc, bound = min(head_steps(ctx, cv, spec, m).values(), key=lambda cb: cb[0])
        return cyc + run * keep, bound
    sc = 3 * mach.scalar_cycles
    # (a member that only stores its output runs its items row by row: a row's stores overlap the next's work)
    pieces = pieces_of(m)
    pr = pt // pieces
    dense = cv.taps == 1 and (m.hp, m.wp) == (0, 0)
    mm = pieces * (matmul_cycles(o, pr, c, spec.op, True, mach) + sc) if dense \
        else rt * cv.taps * (matmul_cycles(o, ow, c, spec.op, True, mach) + sc)
    epi = pieces * (vector_cycles(o * pr, 4, o * pr * 8, o * pr * 4, mach) + spec.epilogue_cycles(o, pr, mach))
    out = keep if m.readers else pieces * vector_cycles(o * pr, 4, o * pr * 4, o * pr * e, mach)
    res = spec.res_src.itemsize if spec.residual and m.residual is None else 0
    traffic = items * pt * o * (e * m.dram / m.step ** 2 + res)
    return overlapped_bound(ctx, run * (mm + epi + out), traffic, run * pieces, cores, run * pieces)


def pieces_of(m: Member) -> int:
    """Accumulator tiles per item: one, or, for a reader of a band whose output goes to DRAM (only, or as the
    copy of an unpadded band), one per row, so that a row's stores overlap the next row's multiplies."""
    stores = not m.readers or (m.dram and (m.hp, m.wp) == (0, 0))
    return m.rt if m.source is not None and stores else 1


def head_steps(ctx: Ctx, cv: Conv, spec: Spec, m: Member) -> dict[tuple[int, int, int], tuple[int, Bound]]:
    """A head's legal steps (taps, channels, window) from DRAM, each with the tiled kernel's estimate for
    items of all output channels and m.rt whole rows (no stores unless `m.dram`, a residual from SRAM)."""
    from dojoc.codegen.kernels.conv import _estimate, _kmax, _steps, _window_options

    pt = m.rt * cv.ow
    options = _steps(cv, _kmax(ctx, spec, cv.o, pt, False))
    cands = [(tn, cl, 0) for tn, cl in options] + \
        [(tn, cl, 1) for tn, cl in _window_options(ctx, cv, spec, cv.o, m.rt, cv.ow, options, False)]
    return {(tn, cl, win): _estimate(ctx, cv, spec, cv.o, m.rt, cv.ow, tn, cl, list(m.cores), True, win,
                                     stores=m.dram / m.step ** 2, res_dram=m.residual is None) for tn, cl, win in cands}


def _members(ctx: Ctx, comp: list[str], edges: dict[str, list[tuple[str, str]]], rt: int,
             cores: tuple[int, ...]) -> dict[str, Member]:
    """The members of a chain of `rt` rows per item on `cores`, and their predictions."""
    byname = ctx.ops_by_name
    out: dict[str, Member] = {}
    parity = 0
    for name in comp:
        node = byname[name]
        readers = edges.get(name, [])
        hp, wp = _pads(ctx, readers)
        inside = {r for r, _ in readers}
        outside = [r for r in ctx.users.get(node.output, []) if r.name not in inside]
        dram = node.output in ctx.graph.outputs or bool(outside)
        step = 1 if node.output in ctx.graph.outputs or not outside else held.strided(node, outside)
        src = next((p for p, rs in edges.items() if (name, "x") in rs), None)
        res = next((p for p, rs in edges.items() if (name, "residual") in rs), None)
        waits = src is not None and (_same_size(node) or (0, 0)) != (0, 0)
        m = Member(name, rt, cores, src, res, tuple(r for r, _ in readers), hp, wp, dram, step, HALO[parity], waits)
        if hp:
            parity ^= 1
        with ctx.op_scope(f"{name} (chain)"):
            cycles, bound = _cycles(ctx, node, m)
        out[name] = replace(m, predicted=cycles, bound=bound)
    return out


def _weights(ctx: Ctx, node: Node) -> int:
    from dojoc.codegen.kernels.mxu import weight_bytes

    return -(-weight_bytes(ctx, node, ctx.graph.producers()) // 64) * 64


def _fits(ctx: Ctx, comp: list[str], rt: int, cores: tuple[int, ...], others: int,
          edges: dict[str, list[tuple[str, str]]]) -> bool:
    """Whether every member's weights stay resident on every core of the chain (and leave the other ops'
    weights twice their size of room elsewhere), and the slots live at once beside the largest member's
    tiles (its FP32 accumulator, a residual converted to FP32, a head's staged input rows) fit the scratch
    arena."""
    byname = ctx.ops_by_name
    need = sum(_weights(ctx, byname[n]) for n in comp)
    # planned before any op: the cores' rooms differ only by their code gaps
    room = min(ctx.sram[c].resident_free() for c in cores)
    total = sum(s.resident_free() for s in ctx.sram.values())
    if need > room or need * len(cores) + 2 * others > total:
        return False
    n, _, h, w = byname[comp[0]].output.type.shape
    per = ceil(n * ceil(h / rt) / len(cores))
    index = {x.name: i for i, x in enumerate(ctx.graph.nodes)}
    last = {p: max(index[r] for r, _ in rs) for p, rs in edges.items() if rs}
    slot: dict[str, int] = {}
    for p, rs in edges.items():
        hp, wp = _pads(ctx, rs)
        v = byname[p].output
        slot[p] = per * slot_bytes(v.type.shape[1], rt + 2 * hp, w + 2 * wp, ctx.storage(v.type.dtype))
    sources = {r for rs in edges.values() for r, how in rs if how == "x"}
    worst = 0
    for name in comp:
        node = byname[name]
        o, e = node.output.type.shape[1], ctx.storage(node.output.type.dtype).itemsize
        live = sum(slot[p] for p, end in last.items() if index[p] <= index[name] <= end)
        acc = o * rt * w * 4 * (2 if e == 4 else 1)
        res = o * rt * w * 4 if "residual" in split_inputs(node.inputs, node.attrs)[1] and e != 4 else 0
        head = 0 if name in sources else 2 * node.inputs[0].type.shape[1] * (rt + 2) * (w + 2) * 4
        tiles = acc + res + head + (0 if name in edges else 2 * o * rt * w * e)
        worst = max(worst, live + tiles)
    return worst + 8192 <= ctx.scratch_bytes


def plan(ctx: Ctx) -> dict[str, Member]:
    """The chains of the graph and their members (the module docstring), by op name."""
    nodes = ctx.graph.nodes
    given = ctx.given
    forced = {k for k, g in given.items() if g.kernel == "conv2d" and g.tile_of("band", 0)}
    if ctx.stage_of:  # a pipeline: a chain is planned on the whole die, before its stages' lanes exist
        for k in sorted(forced):
            raise MappingError(f"op {k}: tile band=1, but the op runs in a pipeline stage, where convolutions "
                               "run alone; set band to 0")
        return {}
    for k in forced:
        g = given[k]
        if g.tile_of("band", 0) != 1:
            raise MappingError(f"op {k}: tile band={g.tile_of('band')}: give 1 (in a chain) or 0")
    out_of = {k for k, g in given.items() if k not in forced}
    cand = [n.name for n in nodes if n.op is Op.CONV2D and n.name not in out_of and _eligible(ctx, n)]
    for k in sorted(forced - set(cand)):
        raise MappingError(f"op {k}: tile band=1, but it cannot be in a chain: a chain takes convolutions of one "
                           "group with parameter weights, undilated, without a pooled epilogue, in bf16 or fp32; "
                           "set band to 0")
    edges = links(ctx, set(cand))
    comps = _components(cand, edges)
    for k in sorted(forced - {n for comp in comps for n in comp}):
        raise MappingError(f"op {k}: tile band=1, but no other op of a chain reads its output from SRAM or writes "
                           "its input there (a reader must be stride 1 and keep the size); set band to 0")
    out: dict[str, Member] = {}
    for comp in comps:
        out.update(_decide(ctx, comp, {p: [r for r in rs if r[0] in comp] for p, rs in edges.items() if p in comp},
                           forced))
    return out


def _decide(ctx: Ctx, comp: list[str], edges: dict[str, list[tuple[str, str]]],
            forced: set[str]) -> dict[str, Member]:
    """One chain's members: on the given cores and rows when a mapping gives them, else at the rows per item
    the cost model predicts fastest, when that beats running its ops alone."""
    from dojoc.codegen.kernels.mxu import weight_bytes
    from dojoc.codegen.kernels.mxu_plan import splits

    byname = ctx.ops_by_name
    n, _, h, w = byname[comp[0]].output.type.shape
    fixed = {(ctx.given[k].tile_of("rows"), ctx.given[k].cores) for k in comp if k in forced}
    if len(fixed) > 1:
        raise MappingError(f"op {sorted(forced & set(comp))[0]}: the ops of a chain ({', '.join(comp)}) must have "
                           "the same cores and tile rows; give them all the same")
    producers = ctx.graph.producers()
    others = sum(weight_bytes(ctx, x, producers) for x in ctx.graph.nodes if x.name not in comp)
    halo = max(((_same_size(byname[r]) or (0, 0))[0] for rs in edges.values() for r, how in rs if how == "x"),
               default=0)
    options: list[tuple[int, tuple[int, ...]]] = []
    if fixed:
        rows, cores = fixed.pop()
        if rows is None or h % rows or rows < halo or rows * w > MAX_ROWS \
                or len(cores) > n * (h // rows):
            raise MappingError(f"op {sorted(forced & set(comp))[0]}: tile rows={rows}: a chain's items are whole "
                               f"rows of one image: rows must divide {h}, be at least {halo} (its halo) and take at "
                               f"most {MAX_ROWS} pixels, and the cores at most one per item")
        options.append((rows, tuple(cores)))
    elif len(comp) >= MIN_MEMBERS:
        region = Region(ctx)
        for rt in sorted(set(splits(h, 1))):
            items = n * ceil(h / rt)
            if h % rt or rt < halo or rt * w > MAX_ROWS:
                continue
            cores = tuple(region.by_port[:min(items, ctx.builder.participants)])
            # (on fewer than half the cores the chain loses to SUMMA's kept blocks, which `_alone` does not
            # price: ResNet-50 b1's stage 0 on 56 cores took 306,967 cycles against 284,840)
            if 2 * len(cores) < ctx.builder.participants:
                continue
            if _fits(ctx, comp, rt, cores, others, edges):
                options.append((rt, cores))
    priced: list[tuple[int, int, dict[str, Member]]] = []  # (predicted cycles, cores, members)
    for rt, cores in options:
        ms = _members(ctx, comp, edges, rt, cores)
        priced.append((sum(m.predicted for m in ms.values()), len(cores), ms))
    # every core of the chain keeps all its members' weights, so more cores take room from later ops'
    # residents: the fewest cores that predict within CORES_TOLERANCE of the fastest (ResNet-50 b8's first
    # stage predicts 176,632 cycles on 354 cores, 176,646 on 224; on 354 its 498 KB of weights a core left
    # later convolutions' chunks without room, 26,000 cycles slower)
    if not priced:
        return {}
    fastest = min(t for t, _, _ in priced)
    cycles, _, members = min((x for x in priced if x[0] <= fastest * (1 + CORES_TOLERANCE)),
                             key=lambda x: (x[1], x[0]))
    if not fixed:
        with ctx.op_scope(f"{comp[0]} (chain)"):
            alone = sum(_alone(ctx, byname[k]) for k in comp)
        if cycles >= alone:
            return {}
    return members


def release(ctx: Ctx, name: str) -> None:
    """Op `name` has run: free the slots of every band whose last reader it was."""
    for producer, band in list(ctx.band_live.items()):
        if band.member.readers[-1] == name:
            for core in {band.where[it][0] for it in band.items}:
                ctx.sram[core].release(band.addr)
            del ctx.band_live[producer]
