"""Attention's plan: the problem, the query blocks and key chunks that fit SRAM, how many cores and which
form (K and V per core, shared within a head, or held by their producer) the cost model prefers, and
whether the output is held for the next matmul. attention.py emits the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from dojoc.codegen.context import MAX_COLS, MAX_ROWS, Ctx, split
from dojoc.codegen.kernels import held as held_
from dojoc.codegen.kernels import held_read
from dojoc.codegen.paths import exchange_link_bytes, port_path
from dojoc.codegen.sram import aligned
from dojoc.errors import MappingError, SramOverflowError
from dojoc.ir.graph import Node, Value
from dojoc.mapping.place import compact_groups
from isa.costs import up8, vector_cycles
from isa.dtypes import DType

F32 = DType.F32


@dataclass(frozen=True)
class Shape:
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
        return sum(aligned(p) for p in parts)


def plan_tiles(ctx: Ctx, node: Node, sh: Shape, want_lb: int) -> tuple[int, int]:
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


def split_cores(ctx: Ctx, sh: Shape, B: int, mma: float, vec: float, mask_bcast: bool,
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


def problem(ctx: Ctx, node: Node, mask: Value | None) -> tuple[Shape, int, int, float, float, bool]:
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
    sh = Shape(batch, L, S, E, Ev, dt.itemsize, mdt, bool(node.attrs["causal"]))
    rep = 1
    if batch and k.type.shape[:-2] != batch:  # grouped-query attention: kv head = q head // rep
        rep = batch[-1] // k.type.shape[-3]
    B = prod(batch)
    macs = B * L * S * (E + Ev)
    mma = macs / ctx.machine.macs_per_cycle("fp32" if dt is F32 else "bf16")
    vec = 8 * vector_cycles(B * L * S, 4, B * L * S * 4, B * L * S * 4, ctx.machine)
    bcast = mv is not None and mv.expand(batch + (L, S)).strides[-2] == 0
    return sh, B, rep, mma, vec, bcast


def block_rows(L: int, B: int, cores: int, per: int) -> int:
    """The query block's rows wanted for `cores` cores over B heads, `per` blocks a core."""
    per_batch = max(1, -(-cores // B))
    return min(L, MAX_ROWS, max(8, -(-L // (per_batch * per))))


def held_fits(ctx: Ctx, node: Node, hold_bytes: int, holders: int) -> bool:
    """Whether attention `node` finds room on every core for its plan with its queries, keys and values
    held (`hold_bytes` on each of `holders` cores): every key in one chunk, a Q slot per block of a core
    and K and V slots per head (`_push_held`)."""
    mask = node.inputs[3] if len(node.inputs) == 4 else None
    sh, B, rep, mma, vec, bcast = problem(ctx, node, mask)
    count = split_cores(ctx, sh, B, mma, vec, bcast, rep, holders)[0]
    lb = block_rows(sh.L, B, count, 1)
    blocks = -(-sh.L // lb)
    runs = split(B * blocks, min(count, B * blocks))
    per_core = max(c for _, c in runs)
    heads = max(len({(j // blocks) // rep for j in range(f, f + c)}) for f, c in runs)
    es = sh.es
    need = sh.sram_bytes(lb, sh.S) + (per_core - 1) * aligned(lb * sh.E * es) \
        + (heads - 1) * (aligned(sh.S * sh.E * es) + aligned(sh.S * sh.Ev * es))
    return sh.S <= MAX_COLS and need + hold_bytes <= ctx.scratch_bytes


HoldArgs = tuple[str, int, int, int, DType, Any, Any, Any, Any]


def hold_output(ctx: Ctx, node: Node, sh: Shape) -> tuple[bool, HoldArgs | None]:
    """Whether attention `node` may hold its output in SRAM for its reader (held_read.a_reader), and the
    arguments of held.hold_matrix when it does (None when it does not: by default, a given tile hold=0, or
    no room). A given hold=1 that cannot is a MappingError naming the reason."""
    from dojoc.codegen.kernels.summa import reader_fits
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
    # Not by default: its reader then multiplies K chunks of the held blocks' width (a mesh column's share
    # of the hidden size, 39 of BERT's 768 on d1), which cost it more than the port time saved, at every
    # batch measured (docs/decisions.md); a mapping may ask for it (tile hold=1)
    if want is None:
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
