"""Scaled dot-product attention: softmax(Q K^T * scale + mask) V, flash-style, one query block at a time.

Work items are (batch x head, query block) pairs, dealt to cores in contiguous runs (so a core mostly
walks the query blocks of one head and keeps its K and V in SRAM). When the cost model gives a core two
blocks of one head (and every key fits one chunk, without a causal mask), the core pipelines them: the
second block's Q and mask are loaded into a second set of buffers once the first's are in, so the port
serves every core's first block before the second ones while the cores compute, and the first block's
output is stored while the second is computed.

For each item a core loads the Q block, then walks the keys in chunks that fit SRAM:

    S  = Q @ K_chunk^T            mma tb=1 (K is stored [S, E], i.e. already "n x k"), FP32 accumulator
    S *= scale; S = mask ? S : -inf (bool) or S += mask (float); causal keeps key <= query
    m' = max(m, rowmax(S)); a = exp(m - m'); P = exp(S - m')   (online softmax in FP32)
    l  = l * a + rowsum(P); O = O * a + P @ V_chunk           (P converted to the MXU type first)

and finally O / l is converted to the storage type and stored. With one chunk (the common case) the
rescaling steps vanish. Fully masked rows must give zeros (torch's safe softmax): the running max is
clamped to the lowest finite float, so a row of -inf scores gives P = 0 (not NaN), and l is clamped to a
tiny positive value, so O = 0 / tiny = 0.

The causal mask is not a [L, S] constant: allowed[l, s] = (l - s >= 0) is a Toeplitz pattern, so one
bool vector G[j] = (j >= S - 1) of length L + S - 1 in DRAM serves every block, read by a DMA whose row
stride is +1 byte and column stride -1 byte. Key chunks entirely above the diagonal are skipped.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import ceil

import numpy as np

from dojoc.codegen.builder import R_A, R_B, R_C, R_D, CoreCode
from dojoc.codegen.context import MAX_COLS, Ctx, load_view, split, store_view
from dojoc.codegen.kernels import held as held_
from dojoc.codegen.kernels import held_read
from dojoc.codegen.kernels.attention_plan import (
    Shape,
    block_rows,
    hold_output,
    plan_tiles,
    problem,
    split_cores,
)
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.kernels.held import Held
from dojoc.codegen.registry import kernel
from dojoc.codegen.sems import ATTENTION
from dojoc.codegen.view import Transfer, View
from dojoc.errors import CompileError, MappingError
from dojoc.ir.graph import Node
from dojoc.ir.ops import Op
from dojoc.ir.types import IRDType
from dojoc.mapping.model import Bound
from dojoc.mapping.place import compact_groups
from isa.dtypes import DType

F32 = DType.F32
LOWEST = float(np.finfo(np.float32).min)  # the running max never goes below this (fully masked rows)
TINY = 1e-30  # the row sum is clamped to this, so a fully masked row divides 0 by it
# K/V pieces from the other cores of a head; this core's sent; loaded
SEM_KV, SEM_SENT, SEM_MINE = ATTENTION.id("kv"), ATTENTION.id("sent"), ATTENTION.id("mine")
# the loads and the stores of a query block, per buffer set (two alternate when a core's blocks pipeline)
SEM_LOADS = (ATTENTION.id("load0"), ATTENTION.id("load1"))
SEM_STORES = (ATTENTION.id("store0"), ATTENTION.id("store1"))
SEM_LOAD, SEM_STORE = SEM_LOADS[0], SEM_STORES[0]
SEM_OUT = ATTENTION.id("held_out")  # pieces of the output put into this core's held blocks (held_read.py)
Resident = tuple[tuple[int, ...], int] | None


def select_batch(v: View, idx: tuple[int, ...]) -> View:
    """The sub-view at batch multi-index `idx` over the leading dims of `v` (free: an address offset)."""
    base = v.base + sum(i * s for i, s in zip(idx, v.strides, strict=False))
    return View(base, v.shape[len(idx):], v.strides[len(idx):], v.dtype)


@kernel(Op.SDPA)
def sdpa(ctx: Ctx, node: Node) -> None:
    q, k, v = node.inputs[:3]
    mask = node.inputs[3] if len(node.inputs) == 4 else None
    a = node.attrs
    L, E = q.type.shape[-2:]
    S, Ev = k.type.shape[-2], v.type.shape[-1]
    batch = q.type.shape[:-2]
    out = ctx.views[node.output]
    if max(E, Ev) > MAX_COLS:
        raise node.error(f"sdpa with head dims {E}/{Ev} above {MAX_COLS} is not supported", CompileError)
    if out.numel == 0:
        return
    if mask is not None and mask in ctx.consts:  # a scalar mask: all or nothing
        c = ctx.consts[mask]
        if (mask.type.dtype is IRDType.BOOL and not c) or c == -math.inf:
            fill(ctx, out, 0.0, node.name, node.source)
            return
        mask = None  # True, or a finite shift that softmax ignores
    if S == 0:  # torch: no keys, zeros
        fill(ctx, out, 0.0, node.name, node.source)
        return
    dt = ctx.storage(q.type.dtype)
    scale = float(a["scale"]) if a["scale"] is not None else 1.0 / math.sqrt(E)
    # Cores: by the total work, then query blocks sized so the (batch, block) items cover them.
    sh, B, rep, mma, vec, bcast = problem(ctx, node, mask)
    # Q, K and V held in SRAM by their producer (held_read.py): they come from there, never from DRAM
    h = held_read.holding(ctx, (ctx.views[q], ctx.views[k], ctx.views[v]))
    holders = len(set(h.cores.values())) if h is not None else 0
    # the output held in SRAM for its reader, a SUMMA matmul that takes it as its A (held_read.a_reader)
    may_hold, ho = hold_output(ctx, node, sh)
    count, dram, share, exchange, work, per, hidden = split_cores(ctx, sh, B, mma, vec, bcast, rep, holders,
                                                            ho is not None)
    cores = ctx.region("attention", work, B * -(-L // 8), axis="heads_queries", dram_bytes=dram, count=count,
                       overlap=False, extra=exchange, hidden=hidden,
                       bound=Bound.LINK if holders and exchange > work / count else Bound.COMPUTE)
    if may_hold:  # (the decision says whether it does, when it may)
        ctx.decisions[-1] = replace(ctx.decisions[-1], tile=(("hold", int(ho is not None)),))
    out_h = held_.hold_matrix(ctx, *ho) if ho is not None else None
    lb, sc = plan_tiles(ctx, node, sh, block_rows(L, B, len(cores), per))
    if h is not None and sc < S:
        raise MappingError(f"op {node.name}: its queries, keys and values are held in SRAM by {h.name}, but its "
                           f"{S} keys do not fit one chunk beside them; give {h.name} tile hold=0")
    items = [(idx, l0, min(lb, L - l0)) for idx in np.ndindex(*batch) for l0 in range(0, L, lb)]
    ctx.shrink_region(len(items))
    cores = cores[:len(items)]

    causal_v = None
    if sh.causal:  # G[j] = (j >= S - 1): allowed[l, s] = G[l - s + S - 1]
        causal_v = ctx.weight(f"{node.name}_causal", np.arange(L + S - 1) >= S - 1, DType.BOOL)
    kv, vv, qv = ctx.views[k], ctx.views[v], ctx.views[q]
    mv = ctx.views[mask].expand(batch + (L, S)) if mask is not None else None
    # `per` blocks per core, all of one head, and every key in one chunk: the cores of a head share its K and
    # V (_share_kv), each head's on a compact group of cores
    blocks = -(-L // lb)
    sharing = share and len(items) == per * len(cores) and blocks % per == 0 and sc >= S and h is None
    if sharing:
        cores = [c for g in compact_groups(ctx.machine, cores, blocks // per) for c in g]
    runs = list(zip(cores, split(len(items), len(cores)), strict=False))
    groups: dict[tuple[int, ...], list[int]] = {}
    if sharing:
        for core, (first, _) in runs:
            groups.setdefault(items[first][0], []).append(core)

    def kidx_of(idx: tuple[int, ...]) -> tuple[int, ...]:
        return idx[:-1] + (idx[-1] // rep,) if rep > 1 else idx

    def block(idx: tuple[int, ...], l0: int, n: int) -> _Block:
        kidx = kidx_of(idx)
        return _Block(select_batch(qv, idx).slice(0, l0, l0 + n), select_batch(kv, kidx), select_batch(vv, kidx),
                      select_batch(mv, idx) if mv is not None else None, causal_v, l0, n)

    def keys(idx: tuple[int, ...], l0: int, n: int) -> int:
        """The keys a block reads (a causal block none past its diagonal)."""
        return min(S, l0 + n) if sh.causal else S

    def work_of(order: list[int]) -> list[tuple[int, list[tuple[_Block, int, tuple[int, ...]]]]]:
        """Per core of `order`, its run's blocks (views, the keys each reads, its kv head)."""
        return [(core, [(block(*it), keys(*it), kidx_of(it[0])) for it in items[first:first + count]])
                for core, (first, count) in zip(order, split(len(items), len(cores)), strict=False)]

    def link_of(order: list[int]) -> float:
        assert h is not None
        return held_read.busiest_link(ctx, h, _wants(sh, work_of(order)))

    slots: dict[int, list[_Buffers]] = {}
    arrivals: dict[int, int] = {}
    sent: dict[int, int] = {}
    landed: dict[int, int] = {}  # pieces of the held output put into each holder's blocks
    if h is not None:
        orders = [cores]
        if node.name not in ctx.given:
            # or each run on the mesh row that holds its queries: whichever loads the busiest link less (the
            # rows' pieces travel along rows; the default's one head's on a column, by multicast)
            firsts = [f for f, _ in split(len(items), len(cores))]
            orders.append(held_read.near(h, [held_read.grid_row(h, block(*items[f]).q) for f in firsts],
                                         set(cores) | set(h.at.values())))
        link, cores = min(((link_of(order), order) for order in orders), key=lambda t: t[0])
        ctx.decisions[-1] = replace(ctx.decisions[-1], cores=tuple(cores))
        runs = list(zip(cores, split(len(items), len(cores)), strict=False))
        slots, arrivals, sent = _push_held(ctx, node, h, sh, lb, sc, work_of(cores))
        om = ctx.decisions[-1]  # (its prediction priced the ports; the busiest link may take longer)
        if link > exchange:
            ctx.decisions[-1] = replace(om, predicted_cycles=om.predicted_cycles + ceil(link - exchange),
                                        bound=Bound.LINK)
    for core, (first, count) in runs:
        cc = ctx.core(core)
        run = items[first:first + count]
        # a run of one head's blocks, every key in one chunk, no causal mask (its blocks need more keys each):
        # the next block's loads go out before this one computes, into the other buffer set
        pipelined = count > 1 and sc >= S and not sh.causal and len({kidx_of(i) for i, _, _ in run}) == 1 \
            and h is None
        bufs = slots[core][0] if h is not None else _Buffers.alloc(ctx, core, node, sh, lb, sc)
        sets = (bufs, bufs.second(ctx, core, node, sh, lb, sc) if pipelined else bufs)
        with cc.op(node.name, node.source):
            if mask is not None or sh.causal:
                cc.emit("vfill", rd=cc.reg(R_D, bufs.neg), imm=-math.inf, rows=1, cols=sc, sd=sc * 4, dt=F32)
            pending, resident = [0, 0], None
            head = items[first][0]
            pieces, hook = 0, None
            if 1 < len(groups.get(head, ())) <= S:
                pieces = _share_kv(cc, sh, bufs, select_batch(kv, head), select_batch(vv, head), groups[head], core)
                hook = functools.partial(cc.wait, SEM_KV, pieces)  # as many pieces come in as go out
                resident = (head, S)
            if h is not None:  # every block's Q, K and V arrive from their holders, before the first multiply
                hook = functools.partial(cc.wait, SEM_KV, arrivals.get(core, 0))
            issued: dict[int, int] = {}
            if pipelined:  # the first block's loads (with K and V, unless shared), then each next one's early
                issued[0] = _loads(cc, sh, bufs, block(*run[0]), 0, S, True, resident is None, SEM_LOADS[0])
                resident = (kidx_of(run[0][0]), S)
            for j, (idx, l0, n) in enumerate(run):
                s = j % 2 if pipelined else 0
                then = None
                if pipelined and j + 1 < len(run):  # the next block's loads, once this one's are in
                    then = functools.partial(_load_next, issued, j + 1, cc, sh, sets[1 - s], block(*run[j + 1]),
                                             SEM_LOADS[1 - s])
                b = sets[s]
                if h is not None:  # (its operands are in their slots: only the mask comes from DRAM)
                    b = slots[core][j]
                    issued[j] = _loads(cc, sh, b, block(idx, l0, n), 0, keys(idx, l0, n), False, False,
                                       SEM_LOADS[s])
                resident = _attend(cc, sh, b, block(idx, l0, n), dt, scale, sc, resident, kidx_of(idx),
                                   pending[s], hook, issued.get(j), SEM_LOADS[s], SEM_STORES[s], then)
                hook = None
                src = b.o if dt is F32 else b.oc
                if dt is not F32:
                    cc.emit("vcvt", rd=cc.reg(R_D, b.oc), ra=cc.reg(R_A, b.o), rows=n, cols=Ev,
                            sd=Ev * dt.itemsize, sa=Ev * 4, dtd=dt, dts=F32)
                o_view = select_batch(out, idx).slice(0, l0, l0 + n)
                pending[s] = held_read.scatter(ctx, out_h, core, src, Ev * dt.itemsize, o_view, SEM_STORES[s],
                                               SEM_OUT, landed) if out_h is not None \
                    else store_view(cc, src, o_view, SEM_STORES[s])
            for s in (0, 1):
                cc.wait(SEM_STORES[s], pending[s])
            cc.wait(SEM_SENT, pieces + sent.pop(core, 0))
    # a holder of the inputs with no block of its own: its puts' sources have left; a holder of the output:
    # its pieces are in, before the next op
    for sem, counts in ((SEM_SENT, sent), (SEM_OUT, landed)):
        for core, count in counts.items():
            cc = ctx.core(core)
            with cc.op(node.name, node.source):
                cc.wait(sem, count)
    if h is not None:
        held_.release(ctx, h)


def _wants(sh: Shape, work: list[tuple[int, list[tuple[_Block, int, tuple[int, ...]]]]],
           slot: Callable[[int, int, str], int] | None = None) -> list[held_read.Want]:
    """What every core of `work` (per core its blocks: views, keys read, kv head) wants of the held Q, K and
    V: its blocks' Q, and the K and V of each of its heads, as many keys as any core's blocks of that head
    read (one view for all, so they can share a multicast). `slot(core, index, kind)` gives the buffer of
    the core's index-th block's Q (kind "q") or head's K or V; by default a number per slot, which prices a
    placement before any buffer exists."""
    es = sh.es
    need: dict[tuple[int, ...], int] = {}
    for _, blocks in work:
        for _, end, kidx in blocks:
            need[kidx] = max(need.get(kidx, 0), end)
    at = slot or (lambda core, i, kind: 3 * i + "qkv".index(kind))
    wants = []
    for core, blocks in work:
        heads: list[tuple[int, ...]] = []
        for j, (blk, _, kidx) in enumerate(blocks):
            wants.append(held_read.Want(core, blk.q, at(core, j, "q"), sh.E * es))
            if kidx not in heads:
                i = len(heads)
                heads.append(kidx)
                wants += [held_read.Want(core, blk.k.slice(0, 0, need[kidx]), at(core, i, "k"), sh.E * es),
                          held_read.Want(core, blk.v.slice(0, 0, need[kidx]), at(core, i, "v"), sh.Ev * es)]
    return wants


def _push_held(ctx: Ctx, node: Node, h: Held, sh: Shape, lb: int, sc: int,
               work: list[tuple[int, list[tuple[_Block, int, tuple[int, ...]]]]],
               ) -> tuple[dict[int, list[_Buffers]], dict[int, int], dict[int, int]]:
    """Put every block's Q, and the K and V of its head, from the cores that hold them (held_read.py) into
    the buffers of the core that computes it. `work` is per core its blocks (views, the keys each reads,
    its kv head). Each core gets one buffer set and a Q slot per further block, K and V slots per further
    head. Returns per core its blocks' buffers, the pieces it receives (on SEM_KV), and the puts each holder
    sent (on SEM_SENT)."""
    es = sh.es
    slots: dict[int, list[_Buffers]] = {}
    qs: dict[int, list[int]] = {}  # per core, its blocks' Q buffers
    kvs: dict[int, list[tuple[int, int]]] = {}  # per core, its heads' K and V buffers (in `_wants`' order)
    for core, blocks in work:
        bufs = _Buffers.alloc(ctx, core, node, sh, lb, sc)
        sram = ctx.sram[core]
        heads = list(dict.fromkeys(kidx for _, _, kidx in blocks))
        qs[core] = [bufs.q] + [sram.alloc(lb * sh.E * es, f"sdpa {node.name} query block {j}")
                               for j in range(1, len(blocks))]
        kvs[core] = [(bufs.k, bufs.v)] + [(sram.alloc(sc * sh.E * es, f"sdpa {node.name} key chunk"),
                                           sram.alloc(sc * sh.Ev * es, f"sdpa {node.name} value chunk"))
                                          for _ in heads[1:]]
        slots[core] = [replace(bufs, q=qs[core][j], k=kvs[core][heads.index(kidx)][0],
                               v=kvs[core][heads.index(kidx)][1]) for j, (_, _, kidx) in enumerate(blocks)]
    wants = _wants(sh, work, lambda core, i, kind: qs[core][i] if kind == "q" else kvs[core][i][kind == "v"])
    arrivals, sent = held_read.push(ctx, h, wants, SEM_KV, SEM_SENT, node.name, node.source)
    return slots, arrivals, sent


def _share_kv(cc: CoreCode, sh: Shape, b: _Buffers, k: View, v: View, group: list[int], me: int) -> int:
    """The cores of one head (`group`, one query block each) read its K and V from DRAM once: each loads
    its share of the keys into its K and V buffers and puts it into the same place on the others. Returns
    the pieces put (their sources are waited for at the end); as many arrive from the others, which
    `_attend` waits for once its Q block's loads are issued, so they overlap the exchange. The pieces are
    loaded before the Q blocks, so the port serves every core's piece first."""
    es = sh.es
    j = group.index(me)
    s0, cnt = split(sh.S, len(group))[j]
    loads = load_view(cc, k.slice(0, s0, s0 + cnt), b.k + s0 * sh.E * es, SEM_MINE)
    loads += load_view(cc, v.slice(0, s0, s0 + cnt), b.v + s0 * sh.Ev * es, SEM_MINE)
    cc.wait(SEM_MINE, loads)
    sent = 0
    for other in group:
        if other == me:
            continue
        for base, width in ((b.k, sh.E), (b.v, sh.Ev)):
            addr = base + s0 * width * es
            cc.emit("put", rc=cc.reg(R_C, other), rd=cc.reg(R_D, addr), rs=cc.reg(R_A, addr), rows=cnt,
                    bytes=width * es, ss=width * es, ds=width * es, seml=SEM_SENT, semr=SEM_KV)
            sent += 1
    return sent


@dataclass(frozen=True)
class _Buffers:
    """One core's SRAM tiles (addresses)."""

    q: int
    k: int
    v: int
    s: int  # scores / probabilities, FP32 [lb, sc]
    p: int  # probabilities in the operand type (bf16 only)
    o: int  # FP32 accumulator [lb, Ev]
    oc: int  # output in the storage type (bf16 only)
    m: int  # running row max
    mn: int  # the new row max (swapped with m each chunk)
    l: int  # running row sum
    t: int  # a row statistic of this chunk (rowmax, then rowsum)
    alpha: int  # exp(m - m')
    mask: int
    maskf: int  # a float mask converted to FP32
    cm: int  # the causal mask tile
    neg: int  # one row of -inf (read with row stride 0)

    @staticmethod
    def tiles(sh: Shape, lb: int, sc: int) -> dict[str, tuple[int, str]]:
        """Each tile's bytes and name, in the order of the fields (0 bytes: not needed)."""
        es, wide = sh.es, sh.es != 4
        mask_es = sh.mask.itemsize if sh.mask is not None else 0
        return {"q": (lb * sh.E * es, "query block"), "k": (sc * sh.E * es, "key chunk"),
                "v": (sc * sh.Ev * es, "value chunk"), "s": (lb * sc * 4, "score tile"),
                "p": (lb * sc * es if wide else 0, "probabilities"), "o": (lb * sh.Ev * 4, "accumulator"),
                "oc": (lb * sh.Ev * es if wide else 0, "output tile"), "m": (lb * 4, "row max"),
                "mn": (lb * 4, "row max"), "l": (lb * 4, "row sum"), "t": (lb * 4, "row statistic"),
                "alpha": (lb * 4, "rescale"), "mask": (lb * sc * mask_es, "mask tile"),
                "maskf": (lb * sc * 4 if sh.mask is not None and sh.mask.is_float and wide else 0, "mask tile"),
                "cm": (lb * sc if sh.causal else 0, "causal mask"), "neg": (sc * 4, "-inf row")}

    @staticmethod
    def _alloc(ctx: Ctx, core: int, node: Node, tiles: dict[str, tuple[int, str]],
               names: tuple[str, ...]) -> dict[str, int]:
        sram = ctx.sram[core]
        return {f: sram.alloc(n, f"sdpa {node.name} {what}") if n else -1
                for f in names for n, what in [tiles[f]]}

    @staticmethod
    def alloc(ctx: Ctx, core: int, node: Node, sh: Shape, lb: int, sc: int) -> _Buffers:
        tiles = _Buffers.tiles(sh, lb, sc)
        return _Buffers(**_Buffers._alloc(ctx, core, node, tiles, tuple(tiles)))

    def second(self, ctx: Ctx, core: int, node: Node, sh: Shape, lb: int, sc: int) -> _Buffers:
        """A second set of the tiles that a query block loads or stores (Q, mask, output), sharing the rest:
        a pipelined core loads the next block into one set while it computes on the other."""
        return replace(self, **self._alloc(ctx, core, node, self.tiles(sh, lb, sc), ("q", "o", "oc", "mask")))


@dataclass(frozen=True)
class _Block:
    """One work item's DRAM views: Q rows [n, E], the whole K [S, E] and V [S, Ev], the mask [L, S]."""

    q: View
    k: View
    v: View
    mask: View | None
    causal: View | None
    l0: int
    n: int

    @property
    def mask_rows(self) -> int:
        """Rows of the mask tile: one when the mask is broadcast over the queries (BERT's padding mask
        [B, 1, 1, S], read with row stride 0), else the block's."""
        return 1 if self.mask is not None and self.mask.strides[0] == 0 else self.n


def _load_next(issued: dict[int, int], j: int, cc: CoreCode, sh: Shape, b: _Buffers, blk: _Block,
               sem: int) -> None:
    """Issue a pipelined core's block j's loads (K and V are in already), counting them in `issued`."""
    issued[j] = _loads(cc, sh, b, blk, 0, sh.S, True, False, sem)


def _loads(cc: CoreCode, sh: Shape, b: _Buffers, blk: _Block, c0: int, cs: int, first: bool, kv: bool,
           sem: int) -> int:
    """Issue the DMAs of one key chunk of a query block (keys c0 .. c0 + cs - 1): its Q block the first time,
    K and V (`kv`), its mask and causal mask tiles; returns their count (on `sem`)."""
    n, mrows = blk.n, blk.mask_rows
    loads = load_view(cc, blk.q, b.q, sem) if first else 0
    if kv:
        loads += load_view(cc, blk.k.slice(0, c0, c0 + cs), b.k, sem)
        loads += load_view(cc, blk.v.slice(0, c0, c0 + cs), b.v, sem)
    if blk.mask is not None:
        loads += load_view(cc, blk.mask.slice(0, blk.l0, blk.l0 + mrows).slice(1, c0, c0 + cs), b.mask, sem)
    if sh.causal and c0 + cs - 1 > blk.l0:
        assert blk.causal is not None
        src = blk.causal.base + (blk.l0 - c0 + sh.S - 1)
        cc.dma_load(Transfer(src, b.cm, ((n, 1, cs), (cs, -1, 1)), 1), sem)
        loads += 1
    return loads


def _attend(cc: CoreCode, sh: Shape, b: _Buffers, blk: _Block, dt: DType, scale: float, sc: int,
            resident: Resident, kidx: tuple[int, ...], pending: int,
            hook: Callable[[], None] | None = None, issued: int | None = None, sem_load: int = SEM_LOAD,
            sem_store: int = SEM_STORE, then: Callable[[], None] | None = None) -> Resident:
    """Emit one query block, leaving O / l in b.o. `resident` is (kv batch index, keys loaded) when K and
    V stay in SRAM across blocks (only when one chunk covers every key); returns the new one. The first
    chunk's loads were `issued` already when given (a pipelined block's, on `sem_load`); `pending` stores
    of the block before it in these buffers are counted on `sem_store`."""
    n, es, Ev, E = blk.n, dt.itemsize, sh.Ev, sh.E
    one_chunk = sc >= sh.S
    m, mn = b.m, b.mn
    last_row = blk.l0 + n - 1
    end = min(sh.S, last_row + 1) if sh.causal else sh.S  # keys past the diagonal are all masked
    chunks = [(c0, min(sc, end - c0)) for c0 in range(0, end, sc)]
    # a mask broadcast over the queries is loaded as one row and read with row stride 0, not as n copies
    bcast = blk.mask is not None and blk.mask.strides[0] == 0
    mrows = blk.mask_rows
    for ci, (c0, cs) in enumerate(chunks):
        first = ci == 0
        crossing = sh.causal and c0 + cs - 1 > blk.l0
        if first and issued is not None:
            loads = issued
        else:
            kv = not (one_chunk and resident is not None and resident[0] == kidx and resident[1] >= end)
            loads = _loads(cc, sh, b, blk, c0, cs, first, kv, sem_load)
        if first:
            cc.wait(sem_store, pending)  # the previous block's output has left O
            if hook is not None:  # K and V shared with the head's other cores, while this block's loads fly
                hook()
        cc.wait(sem_load, loads)
        if first and then is not None:  # (the next block's loads, issued once this one's are in)
            then()
        tile = {"rows": n, "cols": cs, "sd": cs * 4, "sa": cs * 4}
        cc.emit("mma", rd=cc.reg(R_D, b.s), ra=cc.reg(R_A, b.q), rb=cc.reg(R_B, b.k), m=n, n=cs, k=E,
                sd=cs * 4, sa=E * es, sb=E * es, dt=dt, tb=1)
        cc.emit("vmuls", rd=cc.reg(R_D, b.s), ra=cc.reg(R_A, b.s), imm=scale, dt=F32, **tile)
        if sh.mask is not None and sh.mask.is_float:
            mask = b.mask
            if sh.mask is not F32:
                cc.emit("vcvt", rd=cc.reg(R_D, b.maskf), ra=cc.reg(R_A, b.mask), rows=mrows, cols=cs, sd=cs * 4,
                        sa=cs * sh.mask.itemsize, dtd=F32, dts=sh.mask)
                mask = b.maskf
            cc.emit("vadd", rd=cc.reg(R_D, b.s), ra=cc.reg(R_A, b.s), rb=cc.reg(R_B, mask), sb=0 if bcast else cs * 4,
                    dt=F32, **tile)
        elif sh.mask is not None:
            _mask_out(cc, b, b.mask, n, cs, 0 if bcast else cs)
        if crossing:
            _mask_out(cc, b, b.cm, n, cs, cs)
        col = {"rows": n, "cols": 1, "sd": 4, "sa": 4}
        if first:
            cc.emit("vrmax", rd=cc.reg(R_D, m), ra=cc.reg(R_A, b.s), rows=n, cols=cs, sd=4, sa=cs * 4, dt=F32,
                    axis="row")
            cc.emit("vmaxs", rd=cc.reg(R_D, m), ra=cc.reg(R_A, m), imm=LOWEST, dt=F32, **col)
        else:
            cc.emit("vrmax", rd=cc.reg(R_D, b.t), ra=cc.reg(R_A, b.s), rows=n, cols=cs, sd=4, sa=cs * 4, dt=F32,
                    axis="row")
            cc.emit("vmax", rd=cc.reg(R_D, mn), ra=cc.reg(R_A, m), rb=cc.reg(R_B, b.t), sb=4, dt=F32, **col)
            cc.emit("vsub", rd=cc.reg(R_D, b.alpha), ra=cc.reg(R_A, m), rb=cc.reg(R_B, mn), sb=4, dt=F32, **col)
            cc.emit("vexp", rd=cc.reg(R_D, b.alpha), ra=cc.reg(R_A, b.alpha), dt=F32, **col)
            m, mn = mn, m
        cc.emit("vsub", rd=cc.reg(R_D, b.s), ra=cc.reg(R_A, b.s), rb=cc.reg(R_B, m), sb=4, bcb="col", dt=F32,
                **tile)
        cc.emit("vexp", rd=cc.reg(R_D, b.s), ra=cc.reg(R_A, b.s), dt=F32, **tile)
        rsum = b.l if first else b.t
        cc.emit("vrsum", rd=cc.reg(R_D, rsum), ra=cc.reg(R_A, b.s), rows=n, cols=cs, sd=4, sa=cs * 4, dt=F32,
                axis="row")
        if not first:  # l = l * alpha + rowsum; O = O * alpha
            cc.emit("vmul", rd=cc.reg(R_D, b.l), ra=cc.reg(R_A, b.l), rb=cc.reg(R_B, b.alpha), sb=4, dt=F32, **col)
            cc.emit("vadd", rd=cc.reg(R_D, b.l), ra=cc.reg(R_A, b.l), rb=cc.reg(R_B, b.t), sb=4, dt=F32, **col)
            cc.emit("vmul", rd=cc.reg(R_D, b.o), ra=cc.reg(R_A, b.o), rb=cc.reg(R_B, b.alpha), rows=n, cols=Ev,
                    sd=Ev * 4, sa=Ev * 4, sb=4, bcb="col", dt=F32)
        p, ps = b.s, cs * 4
        if dt is not F32:
            cc.emit("vcvt", rd=cc.reg(R_D, b.p), ra=cc.reg(R_A, b.s), rows=n, cols=cs, sd=cs * es, sa=cs * 4,
                    dtd=dt, dts=F32)
            p, ps = b.p, cs * es
        cc.emit("mma", rd=cc.reg(R_D, b.o), ra=cc.reg(R_A, p), rb=cc.reg(R_B, b.v), m=n, n=Ev, k=cs, sd=Ev * 4,
                sa=ps, sb=Ev * es, dt=dt, acc=0 if first else 1)
    col = {"rows": n, "cols": 1, "sd": 4, "sa": 4}
    cc.emit("vmaxs", rd=cc.reg(R_D, b.l), ra=cc.reg(R_A, b.l), imm=TINY, dt=F32, **col)
    cc.emit("vdiv", rd=cc.reg(R_D, b.o), ra=cc.reg(R_A, b.o), rb=cc.reg(R_B, b.l), rows=n, cols=Ev, sd=Ev * 4,
            sa=Ev * 4, sb=4, bcb="col", dt=F32)
    return (kidx, end) if one_chunk else None


def _mask_out(cc: CoreCode, b: _Buffers, cond: int, n: int, cs: int, stride: int) -> None:
    """S = cond ? S : -inf over an [n, cs] tile (bool cond with row stride `stride`: 0 repeats one row; the
    -inf row repeats with stride 0)."""
    cc.emit("vsel", rd=cc.reg(R_D, b.s), rc=cc.reg(R_C, cond), ra=cc.reg(R_A, b.s), rb=cc.reg(R_B, b.neg),
            rows=n, cols=cs, sd=cs * 4, sc=stride, sa=cs * 4, sb=0, dt=F32)
