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
from math import prod
from typing import Any

import numpy as np

from dojoc.codegen.builder import R_A, R_B, R_C, R_D, CoreCode
from dojoc.codegen.context import MAX_COLS, MAX_ROWS, Ctx, load_view, split, store_view
from dojoc.codegen.kernels import held as held_
from dojoc.codegen.kernels import held_read
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.kernels.held import Held
from dojoc.codegen.paths import exchange_link_bytes, port_path
from dojoc.codegen.registry import kernel
from dojoc.codegen.sems import ATTENTION
from dojoc.codegen.sram import ALIGN
from dojoc.codegen.view import Transfer, View
from dojoc.errors import CompileError, MappingError, SramOverflowError
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from dojoc.ir.types import IRDType
from dojoc.mapping.model import Bound
from dojoc.mapping.place import compact_groups
from isa.costs import up8, vector_cycles
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


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def select_batch(v: View, idx: tuple[int, ...]) -> View:
    """The sub-view at batch multi-index `idx` over the leading dims of `v` (free: an address offset)."""
    base = v.base + sum(i * s for i, s in zip(idx, v.strides, strict=False))
    return View(base, v.shape[len(idx):], v.strides[len(idx):], v.dtype)


@dataclass(frozen=True)
class _Shape:
    """The attention problem: `batch` dims of q, L queries, S keys, head dims E (q, k) and Ev (v)."""

    batch: tuple[int, ...]
    L: int
    S: int
    E: int
    Ev: int
    es: int  # operand (storage) bytes
    mask: DType | None  # mask storage type, None without a mask
    causal: bool

    def sram_bytes(self, lb: int, sc: int) -> int:
        """Scratch one core needs for a query block of lb rows and a key chunk of sc keys."""
        es, wide = self.es, self.es != 4  # bf16 operands need converted copies of P and O
        parts = [lb * self.E * es, sc * self.E * es, sc * self.Ev * es, lb * sc * 4, lb * self.Ev * 4,
                 sc * 4] + [lb * 4] * 5
        if wide:
            parts += [lb * sc * es, lb * self.Ev * es]
        if self.mask is not None:
            parts.append(lb * sc * self.mask.itemsize)
            if self.mask.is_float and wide:
                parts.append(lb * sc * 4)
        if self.causal:
            parts.append(lb * sc)
        return sum(_align(p) for p in parts)


def _plan(ctx: Ctx, node: Node, sh: _Shape, want_lb: int) -> tuple[int, int]:
    """(query block, key chunk): the whole key range when it fits (K and V stay in SRAM across query
    blocks), otherwise smaller chunks, then smaller query blocks; SramOverflowError when nothing fits."""
    budget = min(s.scratch_free() for s in ctx.sram.values())
    lb, sc = want_lb, min(sh.S, MAX_COLS)
    while sh.sram_bytes(lb, sc) > budget:
        if sc > 128:
            sc = -(-sc // 2)
        elif lb > 8:
            lb = -(-lb // 2)
        elif sc > 1 or lb > 1:
            sc, lb = max(1, sc // 2), max(1, lb // 2)
        else:
            q, k = node.inputs[0], node.inputs[1]
            raise SramOverflowError(
                f"sdpa {node.name}: even one query of q {q} ({q.type}) against one key of k {k} ({k.type}) "
                f"needs {sh.sram_bytes(1, 1):,} bytes of SRAM scratch, but only {budget:,} are free; use a "
                "machine with more SRAM (--set sram_bytes=...) or smaller head dims")
    return lb, sc


def _cores(ctx: Ctx, sh: _Shape, B: int, mma: float, vec: float, mask_bcast: bool,
           rep: int, holders: int = 0, out_held: bool = False) -> tuple[int, float, bool, float, float, int, float]:
    """The cores, DRAM bytes, K/V sharing, exchange cycles and work of the best split of each head's queries into
    blocks (any number, 1 to L / 8) by the cost model: a core's share of the work (the matrix unit's `mma`
    cycles of the whole op, for blocks of rows padded to its 8, and the SIMD unit's `vec`) against the DRAM
    port's time for Q, O, the mask and the K and V of every (core, kv head) pair (a core keeps K and V across
    its run of blocks of one head). More blocks per head spread the work but read K and V once per block, unless
    the cores of a head share them (`_share_kv`: one block per core; each head's K and V read once, then
    exchanged all to all within the head's group of cores, placed compact (`compact_groups`): the longer of a
    core's ejection port taking the others' pieces and the group's busiest link carrying them). A core loads a
    block's operands before it computes on them, and all cores load at once, so the port's time and a core's
    work add up; with two blocks per core (pipelined: K and V, then every core's first Q block, then the
    second ones) a core computes its first block while the port brings the rest, and only its last block's
    work and store are exposed. Also returns the blocks per core and the cycles of work the port's time
    hides. With Q, K and V held in the SRAM of `holders` cores (held_read.py) they come over the network
    instead: the busier of a core's ejection port taking its pieces and a holder's injection port sending
    its share, before the core computes; only the mask and the output use the DRAM port. An output held for
    its reader (`out_held`) does not use the port at all (its puts to the holders overlap the next block)."""
    mach = ctx.machine
    port = mach.dram_ports[0].bytes_per_cycle
    n_max = len(ctx.builder.ids)
    mask_es = sh.mask.itemsize if sh.mask is not None else 0
    kv = sh.S * (sh.E + sh.Ev) * sh.es
    best: tuple[float, int, float, bool, float, float, int, float] | None = None
    pb = 1
    while pb <= max(1, -(-sh.L // 8)):
        lb = -(-sh.L // pb)
        blocks = -(-sh.L // lb)
        work = mma * up8(lb) / lb + vec
        items = B * blocks
        n = min(items, n_max)
        pairs = sum(len({(j // blocks) // rep for j in range(f, f + c)}) for f, c in split(items, n))
        mask = B * (blocks if mask_bcast else sh.L) * sh.S * mask_es
        ob = 0 if out_held else B * sh.L * sh.Ev * sh.es  # the output's stores
        rest = B * sh.L * sh.E * sh.es + ob + mask
        if holders:
            runs = split(items, n)
            per_core = max(c for _, c in runs)
            heads = max(len({(j // blocks) // rep for j in range(f, f + c)}) for f, c in runs)
            inflow = (per_core * lb * sh.E * sh.es + heads * kv) / mach.eject_bytes_per_cycle
            outflow = (items * lb * sh.E * sh.es + pairs * kv) / (holders * mach.inject_bytes_per_cycle)
            net = max(inflow, outflow) + 2 * mach.hop_latency * sum(mach.mesh)
            out = mask + ob
            t = work / n + net + out / port
            if best is None or t < best[0]:
                best = (t, n, out, False, net, work, 1, 0.0)
            pb += 1
            continue
        options = [(work / n + (pairs * kv + rest) / port, n, pairs * kv + rest, False, 0.0, 1, 0.0)]
        # K and V first, then the Q blocks in order: a core computes its first block while the port brings the
        # others' (and its own next), and its stores leave while it computes the next
        lkv, lq, lo = B * kv / port, (B * sh.L * sh.E * sh.es + mask) / port, ob / port
        for per in (1, 2):  # a head's cores share its K and V, with one block each or two (pipelined)
            g = blocks // per  # the head's cores
            if blocks % per or B * g > n_max or rep != 1 or sh.S > MAX_COLS or g > sh.S \
                    or (per == 1 and (blocks == 1 or n != items)) or (per > 1 and sh.causal):
                continue  # (one block on one core per head is the plain option above)
            exchange = 0.0
            if g > 1:  # the pieces go out only once they are in: one DMA's way more before the Q blocks' loads
                busiest = max(exchange_link_bytes(mach, tuple(grp), kv / g)
                              for grp in compact_groups(mach, ctx.builder.ids[:B * g], g))
                moved = max(kv * (g - 1) / g / mach.eject_bytes_per_cycle, busiest / mach.link_bytes_per_cycle)
                exchange = port_path(mach, tuple(ctx.builder.ids[:B * g])).latency + moved + 2 * g * mach.hop_latency
            w = work / (B * g * per)
            t = max(lkv + lq + lo, lkv + lq / per + per * w + lo / per) + exchange
            hidden = lkv + lq + lo + per * w - (t - exchange)  # the work the port's time hides
            options.append((t, B * g, B * kv + rest, g > 1, exchange, per, hidden))
        for t, cores, dram, share, ex, per, hidden in options:
            if best is None or t < best[0]:
                best = (t, cores, dram, share, ex, work, per, hidden)
        pb += 1
    assert best is not None
    return best[1:]


def _work(ctx: Ctx, node: Node, mask: Value | None) -> tuple[_Shape, int, int, float, float, bool]:
    """The problem of attention `node` with `mask` (None: none, or a constant one that softmax ignores): its
    shape, its B = batch x heads, the grouped-query factor, the matrix unit's and the SIMD unit's cycles
    in all, and whether the mask is broadcast over the queries."""
    q, k = node.inputs[:2]
    L, E = q.type.shape[-2:]
    S, Ev = k.type.shape[-2], node.inputs[2].type.shape[-1]
    batch = q.type.shape[:-2]
    dt = ctx.storage(q.type.dtype)
    mv = ctx.views.get(mask) if mask is not None else None  # (not lowered yet: priced by its producer)
    mdt = (mv.dtype if mv is not None else ctx.storage(mask.type.dtype)) if mask is not None else None
    sh = _Shape(batch, L, S, E, Ev, dt.itemsize, mdt, bool(node.attrs["causal"]))
    rep = 1
    if batch and k.type.shape[:-2] != batch:  # grouped-query attention: kv head = q head // rep
        rep = batch[-1] // k.type.shape[-3]
    B = prod(batch)
    macs = B * L * S * (E + Ev)
    mma = macs / ctx.machine.macs_per_cycle("fp32" if dt is F32 else "bf16")
    vec = 8 * vector_cycles(B * L * S, 4, B * L * S * 4, B * L * S * 4, ctx.machine)
    bcast = mv is not None and mv.expand(batch + (L, S)).strides[-2] == 0
    return sh, B, rep, mma, vec, bcast


def _block_rows(L: int, B: int, cores: int, per: int) -> int:
    """The query block's rows wanted for `cores` cores over B heads, `per` blocks a core."""
    per_batch = max(1, -(-cores // B))
    return min(L, MAX_ROWS, max(8, -(-L // (per_batch * per))))


def held_fits(ctx: Ctx, node: Node, hold_bytes: int, holders: int) -> bool:
    """Whether attention `node` finds room on every core for its plan with its queries, keys and values
    held (`hold_bytes` on each of `holders` cores): every key in one chunk, a Q slot per block of a core
    and K and V slots per head (`_push_held`)."""
    mask = node.inputs[3] if len(node.inputs) == 4 else None
    sh, B, rep, mma, vec, bcast = _work(ctx, node, mask)
    count = _cores(ctx, sh, B, mma, vec, bcast, rep, holders)[0]
    lb = _block_rows(sh.L, B, count, 1)
    blocks = -(-sh.L // lb)
    runs = split(B * blocks, min(count, B * blocks))
    per_core = max(c for _, c in runs)
    heads = max(len({(j // blocks) // rep for j in range(f, f + c)}) for f, c in runs)
    es = sh.es
    need = sh.sram_bytes(lb, sh.S) + (per_core - 1) * _align(lb * sh.E * es) \
        + (heads - 1) * (_align(sh.S * sh.E * es) + _align(sh.S * sh.Ev * es))
    return sh.S <= MAX_COLS and need + hold_bytes <= ctx.scratch_bytes


HoldArgs = tuple[str, int, int, int, DType, Any, Any, Any, Any]


def _hold_output(ctx: Ctx, node: Node, sh: _Shape) -> tuple[bool, HoldArgs | None]:
    """Whether attention `node` may hold its output in SRAM for its reader (held_read.a_reader), and the
    arguments of held.hold_matrix when it does (None when it does not: a given tile hold=0, or no room). A
    given hold=1 that cannot is a MappingError naming the reason."""
    from dojoc.codegen.kernels.summa import MIN_KEEP_SAVING, reader_fits
    from dojoc.codegen.kernels.summa_grid import grid

    given = ctx.given.get(node.name)
    want = given.tile_of("hold") if given is not None else None
    if want not in (None, 0, 1):
        raise MappingError(f"op {node.name}: tile hold={want}: give 0 (the output goes to DRAM) or 1 (it stays "
                           "in SRAM for its reader)")
    reader, why, a = held_read.a_reader(ctx, node)
    if reader is None or a is None:
        if want:
            raise MappingError(f"op {node.name}: tile hold=1, but its output cannot stay in SRAM: {why}; set hold "
                               "to 0")
        return False, None
    m, k = a.shape
    # (its reader then multiplies chunks of the held blocks' width, which may be narrower than its own plan's:
    # hold only when the port time saved, the output's stores and the reader's loads, pays for that)
    saved = 2 * m * k * a.dtype.itemsize / ctx.machine.dram_ports[0].bytes_per_cycle
    if want is None and saved < MIN_KEEP_SAVING:
        return True, None
    g = grid(ctx, m, k)
    need = held_.hold_bytes(g.mblocks, g.nblocks, a.dtype)
    room = min(ctx.sram[c].scratch_free() for c in ctx.builder.ids) - need >= sh.sram_bytes(8, min(sh.S, MAX_COLS))
    if want == 0 or not (room and reader_fits(ctx, g, a.dtype.itemsize, reader, need)):
        if want:
            raise MappingError(f"op {node.name}: tile hold=1, but its output and its reader's smallest plan do "
                               "not fit SRAM beside each other; set hold to 0")
        return True, None
    return True, (node.output.name, a.base, m, k, a.dtype, g.rect, g.at, g.mblocks, g.nblocks)


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
    sh, B, rep, mma, vec, bcast = _work(ctx, node, mask)
    # Q, K and V held in SRAM by their producer (held_read.py): they come from there, never from DRAM
    h = held_read.holding(ctx, (ctx.views[q], ctx.views[k], ctx.views[v]))
    holders = len(set(h.cores.values())) if h is not None else 0
    # the output held in SRAM for its reader, a SUMMA matmul that takes it as its A (held_read.a_reader)
    may_hold, ho = _hold_output(ctx, node, sh)
    count, dram, share, exchange, work, per, hidden = _cores(ctx, sh, B, mma, vec, bcast, rep, holders,
                                                            ho is not None)
    cores = ctx.region("attention", work, B * -(-L // 8), axis="heads_queries", dram_bytes=dram, count=count,
                       overlap=False, extra=exchange, hidden=hidden,
                       bound=Bound.LINK if holders and exchange > work / count else Bound.COMPUTE)
    if may_hold:  # (the decision says whether it does, when it may)
        ctx.decisions[-1] = replace(ctx.decisions[-1], tile=(("hold", int(ho is not None)),))
    out_h = held_.hold_matrix(ctx, *ho) if ho is not None else None
    lb, sc = _plan(ctx, node, sh, _block_rows(L, B, len(cores), per))
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

    slots: dict[int, list[_Buffers]] = {}
    arrivals: dict[int, int] = {}
    sent: dict[int, int] = {}
    landed: dict[int, int] = {}  # pieces of the held output put into each holder's blocks
    if h is not None:
        slots, arrivals, sent = _push_held(ctx, node, h, sh, lb, sc, [
            (core, [(block(*it), keys(*it), kidx_of(it[0])) for it in items[first:first + count]])
            for core, (first, count) in runs])
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
    for core, count in sent.items():  # a holder with no block of its own: its puts' sources have left
        cc = ctx.core(core)
        with cc.op(node.name, node.source):
            cc.wait(SEM_SENT, count)
    for core, count in landed.items():  # a holder of the output: its pieces are in before the next op
        cc = ctx.core(core)
        with cc.op(node.name, node.source):
            cc.wait(SEM_OUT, count)
    if h is not None:
        held_.release(ctx, h)


def _push_held(ctx: Ctx, node: Node, h: Held, sh: _Shape, lb: int, sc: int,
               work: list[tuple[int, list[tuple[_Block, int, tuple[int, ...]]]]],
               ) -> tuple[dict[int, list[_Buffers]], dict[int, int], dict[int, int]]:
    """Put every block's Q, and the K and V of its head, from the cores that hold them (held_read.py) into
    the buffers of the core that computes it. `work` is per core its blocks (views, the keys each reads,
    its kv head). Each core gets one buffer set and a Q slot per further block, K and V slots per further
    head. Returns per core its blocks' buffers, the pieces it receives (on SEM_KV), and the puts each holder
    sent (on SEM_SENT)."""
    es = sh.es
    slots: dict[int, list[_Buffers]] = {}
    wants: list[held_read.Want] = []
    need: dict[tuple[int, ...], int] = {}  # the keys a head's blocks read, on any core: one view for all
    for _, blocks in work:
        for _, end, kidx in blocks:
            need[kidx] = max(need.get(kidx, 0), end)
    for core, blocks in work:
        bufs = _Buffers.alloc(ctx, core, node, sh, lb, sc)
        sram = ctx.sram[core]
        kv_at: dict[tuple[int, ...], tuple[int, int]] = {}
        mine = []
        for j, (blk, _, kidx) in enumerate(blocks):
            qa = bufs.q if j == 0 else sram.alloc(lb * sh.E * es, f"sdpa {node.name} query block {j}")
            wants.append(held_read.Want(core, blk.q, qa, sh.E * es))
            if kidx not in kv_at:
                kv_at[kidx] = (bufs.k, bufs.v) if not kv_at else (
                    sram.alloc(sc * sh.E * es, f"sdpa {node.name} key chunk"),
                    sram.alloc(sc * sh.Ev * es, f"sdpa {node.name} value chunk"))
                end = need[kidx]
                wants += [held_read.Want(core, blk.k.slice(0, 0, end), kv_at[kidx][0], sh.E * es),
                          held_read.Want(core, blk.v.slice(0, 0, end), kv_at[kidx][1], sh.Ev * es)]
            mine.append(replace(bufs, q=qa, k=kv_at[kidx][0], v=kv_at[kidx][1]))
        slots[core] = mine
    arrivals, sent = held_read.push(ctx, h, wants, SEM_KV, SEM_SENT, node.name, node.source)
    return slots, arrivals, sent


def _share_kv(cc: CoreCode, sh: _Shape, b: _Buffers, k: View, v: View, group: list[int], me: int) -> int:
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
    def tiles(sh: _Shape, lb: int, sc: int) -> dict[str, tuple[int, str]]:
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
    def alloc(ctx: Ctx, core: int, node: Node, sh: _Shape, lb: int, sc: int) -> _Buffers:
        tiles = _Buffers.tiles(sh, lb, sc)
        return _Buffers(**_Buffers._alloc(ctx, core, node, tiles, tuple(tiles)))

    def second(self, ctx: Ctx, core: int, node: Node, sh: _Shape, lb: int, sc: int) -> _Buffers:
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


def _load_next(issued: dict[int, int], j: int, cc: CoreCode, sh: _Shape, b: _Buffers, blk: _Block,
               sem: int) -> None:
    """Issue a pipelined core's block j's loads (K and V are in already), counting them in `issued`."""
    issued[j] = _loads(cc, sh, b, blk, 0, sh.S, True, False, sem)


def _loads(cc: CoreCode, sh: _Shape, b: _Buffers, blk: _Block, c0: int, cs: int, first: bool, kv: bool,
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


def _attend(cc: CoreCode, sh: _Shape, b: _Buffers, blk: _Block, dt: DType, scale: float, sc: int,
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
