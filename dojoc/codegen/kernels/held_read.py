"""A held value read by attention: the queries, keys and values put from the cores that hold them.

A transformer's merged Q/K/V projection is a SUMMA matmul whose output, [tokens, 3 x hidden], lands in
blocks on the mesh (held.py): core (i, j) has the rows of row block i and the columns of column block j.
Its reader, scaled dot-product attention, takes it through views only (slices, reshapes, permutes): the
queries of head h are columns h x E .. (h + 1) x E of the first third, its keys and values the same
columns of the other two. So when attention is the next op, the producer holds its output (tile field
`hold`) and nothing goes to DRAM: each attention item's Q block, and the K and V of its head, are
sub-matrices of the held matrix, which cut along the producer's block boundaries into *pieces*, each a
2-D run of one block on one core. The core that holds a piece puts it straight into the buffer of the
core that computes the item (a `vmov` when that is itself), at the start of the attention phase: the
barrier before it left every buffer free, and each buffer takes one piece of one item only, so no piece
waits for room. The reader counts the pieces' arrivals before its first multiply; a holder waits for
its puts' sources to leave before the phase ends (the held bytes are freed after it).

For BERT-base at batch 8 that is 4.5 MiB per layer that neither goes to DRAM nor comes back (about
11,000 cycles of the DRAM port each way).

Readers of one piece at one address along a mesh row or column segment get it by one multicast
(`push`); the busiest link their routes load (`busiest_link`) prices the transfer, and chooses where the
reader's runs go (`near`: each on the mesh row that holds its queries, or the default order).

The other way, attention may hold its own output for the next op, the output projection, which takes it
as a held A (`a_reader`): each item puts its output tile into the holders' blocks (`scatter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING

import numpy as np

from dojoc.codegen.view import View
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op

if TYPE_CHECKING:
    from dojoc.codegen.context import Ctx
    from dojoc.codegen.kernels.held import Held
    from isa.machine import Machine


@dataclass(frozen=True)
class Piece:
    """Rows x nbytes of one held block: at SRAM `src` on core `core` (rows `stride` bytes apart there),
    bound for `dst` bytes into its reader's buffer."""

    core: int
    src: int
    stride: int
    rows: int
    nbytes: int
    dst: int


def _origin(base: int, n: int, e: int, v: View) -> tuple[int, int] | None:
    """(row, column) of the first element of 2-D view `v` in the dense [?, n] matrix of `e`-byte elements
    at DRAM `base`, when its rows are the matrix's rows and its columns consecutive; else None."""
    off = v.base - base
    if len(v.shape) != 2 or v.strides != (n * e, e) or off < 0 or off % e:
        return None
    r, c = divmod(off // e, n)
    return (r, c) if c + v.shape[1] <= n else None


def pieces(h: Held, v: View, dst_stride: int) -> list[Piece]:
    """The pieces of the held blocks that make up 2-D view `v` of the held matrix, for a reader's buffer
    with rows `dst_stride` bytes apart."""
    e = h.dtype.itemsize
    at = _origin(h.base, h.n, e, v)
    assert at is not None and at[0] + v.shape[0] <= h.m, f"{v} is not a sub-matrix of the held {h.name}"
    r0, c0 = at
    rows, cols = v.shape
    out = []
    for i, (mf, mc) in enumerate(h.mblocks):
        lo, hi = max(r0, mf), min(r0 + rows, mf + mc)
        if lo >= hi:
            continue
        for j, (kf, kc) in enumerate(h.kblocks):
            a, b = max(c0, kf), min(c0 + cols, kf + kc)
            if a >= b:
                continue
            core, addr, stride = h.owner(i, j)
            out.append(Piece(core, addr + (lo - mf) * stride + (a - kf) * e, stride, hi - lo, (b - a) * e,
                             (lo - r0) * dst_stride + (a - c0) * e))
    return out


def holding(ctx: Ctx, views: tuple[View, ...]) -> Held | None:
    """The held value that every one of `views` lies in, or None when none does."""
    for h in ctx.held.values():
        end = h.base + h.m * h.n * h.dtype.itemsize
        inside = [h.base <= v.base < end for v in views]
        if all(inside):
            return h
        assert not any(inside), f"only some of the views lie in the held {h.name}"
    return None


def sdpa_reader(ctx: Ctx, node: Node, m: int, n: int, e: int) -> tuple[Node | None, str]:
    """The attention that reads the output of op `node` (a dense [m, n] matrix of `e`-byte elements) as its
    queries, keys and values, through views only, and is the next op in program order: (that op, "") or
    (None, why not). Every item's Q block and its head's K and V must be sub-matrices of the output."""
    from dojoc.codegen.context import MAX_COLS
    from dojoc.codegen.kernels.held import no_code_between
    from dojoc.codegen.lower import VIEW_OPS, view_after

    graph = ctx.graph
    out = ctx.views.get(node.output)
    if out is None:
        return None, "its output has no view"
    views: dict[Value, View] = {node.output: out}
    passed: list[Node] = []
    reader: Node | None = None
    stack = [node.output]
    while stack:
        value = stack.pop()
        if value in graph.outputs:
            return None, "it is a graph output"
        for r in ctx.users.get(value, []):
            if r.op in VIEW_OPS:
                rv = view_after(r, views[value])
                if rv is None:
                    return None, f"its view {r.name} needs a copy"
                views[r.output] = rv
                passed.append(r)
                stack.append(r.output)
            elif r.op is Op.SDPA and value in r.inputs[:3] and value not in r.inputs[3:] \
                    and reader in (None, r):
                reader = r
            else:
                return None, f"its reader {r.name} is not one attention that takes it as queries, keys or values"
    if reader is None:
        return None, "it has no reader"
    q, k, v = reader.inputs[:3]
    if any(x not in views for x in (q, k, v)):
        return None, f"its reader {reader.name} takes other queries, keys or values too"
    S = k.type.shape[-2]
    if max(q.type.shape[-1], v.type.shape[-1], S) > MAX_COLS:
        return None, f"its reader {reader.name}'s keys or head dims exceed one tile of {MAX_COLS}"
    base = out.base
    for x in (q, k, v):
        xv = views[x]
        for idx in np.ndindex(*xv.shape[:-2]):
            sub = View(xv.base + sum(i * s for i, s in zip(idx, xv.strides, strict=False)), xv.shape[-2:],
                       xv.strides[-2:], xv.dtype)
            at = _origin(base, n, e, sub)
            if at is None or at[0] + sub.shape[0] > m:
                return None, f"its reader {reader.name}'s {x.name} is not made of sub-matrices of it"
    if prod(q.type.shape) == 0 or prod(k.type.shape) == 0:
        return None, f"its reader {reader.name} is empty"
    if len(reader.inputs) == 4 and reader.inputs[3] in ctx.consts:
        return None, f"its reader {reader.name}'s mask is a constant"
    why = no_code_between(ctx, node, reader, passed)
    return (None, why) if why else (reader, "")


@dataclass(frozen=True)
class Want:
    """A reader's request: 2-D view `view` of a held value into SRAM `dst` of core `core`, rows `stride`
    bytes apart."""

    core: int
    view: View
    dst: int
    stride: int


def push(ctx: Ctx, h: Held, wants: list[Want], arrive: int, sent_sem: int, name: str,
         source: str | None) -> tuple[dict[int, int], dict[int, int]]:
    """Emit, on the cores that hold `h`, the puts that bring every one of `wants` to its reader (op `name`):
    readers of the same view at the same address along one mesh row get each piece by one row multicast over
    their segment of the row (every enabled core between them must be one of them), others by a put each; a
    holder's own piece is a copy. Arrivals are counted on `arrive`, a put's source leaving on `sent_sem`.
    Returns per core the pieces it receives and the puts it sends."""
    from dojoc.codegen.builder import R_A, R_C, R_D
    from isa.table import Cast

    m = ctx.machine
    e = h.dtype.itemsize
    groups = _groups(wants)
    arrivals: dict[int, int] = {}
    sent: dict[int, int] = {}
    for (view, dst, stride), cores in groups.items():
        axis, segments = _multicasts(m, cores)
        for pc in pieces(h, view, stride):
            hc = ctx.core(pc.core)
            with hc.op(name, source):
                if pc.core in cores:  # (its own piece: a copy in SRAM)
                    hc.emit("vmov", rd=hc.reg(R_D, dst + pc.dst), ra=hc.reg(R_A, pc.src), rows=pc.rows,
                            cols=pc.nbytes // e, sd=stride, sa=pc.stride, dt=h.dtype)
                for seg in segments:
                    others = [c for c in seg if c != pc.core]
                    if not others:
                        continue
                    cast: dict[str, object] = {}
                    if len(seg) > 1:
                        first, last = m.coords[seg[0]][axis], m.coords[seg[-1]][axis]
                        cast = {"cast": Cast.ROW if axis else Cast.COL, "first": first, "span": last - first + 1}
                    hc.emit("put", rc=hc.reg(R_C, others[0]), rd=hc.reg(R_D, dst + pc.dst), rs=hc.reg(R_A, pc.src),
                            rows=pc.rows, bytes=pc.nbytes, ss=pc.stride, ds=stride, seml=sent_sem, semr=arrive,
                            **cast)
                    sent[pc.core] = sent.get(pc.core, 0) + 1
                    for c in others:
                        arrivals[c] = arrivals.get(c, 0) + 1
    return arrivals, sent


def _multicasts(m: Machine, cores: list[int]) -> tuple[int, list[list[int]]]:
    """The axis (1: along rows, 0: along columns) and the segments of `cores` one multicast each reaches,
    whichever axis takes fewer."""
    return min(((a, _segments(m, cores, a)) for a in (1, 0)), key=lambda t: len(t[1]))


def _segments(m: Machine, cores: list[int], axis: int) -> list[list[int]]:
    """`cores` in runs along mesh rows (`axis` 1: a run is a row's columns) or columns (0), with no other
    enabled core between two of a run: the segments one multicast each reaches."""
    at = m.core_at
    out: list[list[int]] = []
    for c in sorted(set(cores), key=lambda c: m.coords[c][::-1] if axis == 0 else m.coords[c]):
        pos = m.coords[c]
        if out:
            prev = m.coords[out[-1][-1]]
            line = pos[1 - axis]
            if prev[1 - axis] == line and all(
                    ((line, x) if axis else (x, line)) not in at for x in range(prev[axis] + 1, pos[axis])):
                out[-1].append(c)
                continue
        out.append([c])
    return out


def a_reader(ctx: Ctx, node: Node) -> tuple[Node | None, str, View | None]:
    """The SUMMA matmul that takes the output of op `node` (attention) as its A through views only
    (a permute its output's layout makes free, reshapes), as the next op: (it, "", A as a dense [M, K]
    view) or (None, why not, None). Attention then holds its output in SUMMA's blocks for it."""
    from dojoc.codegen.kernels.held import a_reader_why, holders, no_code_between
    from dojoc.codegen.kernels.summa_grid import MIN_BLOCK, grid
    from dojoc.codegen.lower import view_after

    graph, value = ctx.graph, node.output
    v: View | None = ctx.views.get(value)
    between: list[Node] = []
    while True:
        readers = ctx.users.get(value, [])
        if value in graph.outputs or v is None:
            return None, "it is a graph output", None
        if len(readers) != 1:
            return None, f"it has {len(readers)} readers", None
        reader = readers[0]
        if reader.op in (Op.RESHAPE, Op.PERMUTE):
            v = view_after(reader, v)
            between.append(reader)
            value = reader.output
            continue
        if reader.op is not Op.MATMUL or reader.inputs[0] is not value or value in reader.inputs[1:]:
            return None, f"its reader {reader.name} is not a matmul that takes it as its left operand", None
        break
    m, k = prod(v.shape[:-1]), v.shape[-1]
    dense = View.dense(v.base, v.shape, v.dtype)  # (a dimension of one element may have any stride)
    if any(s != d for s, d, n in zip(v.strides, dense.strides, v.shape, strict=True) if n > 1) \
            or ctx.precision == "cfp8":
        return None, f"its reader {reader.name} takes it in another layout", None
    rows, cols = ctx.home.shape
    if m < MIN_BLOCK * rows or k < MIN_BLOCK * cols:
        return None, "it is too small for the whole die", None
    g = grid(ctx, m, k)
    if holders(g.at, g.rect.shape) is None:
        return None, "a mesh row has more than one disabled core", None
    why = no_code_between(ctx, node, reader, between) or a_reader_why(ctx, reader, m, g.nblocks, v.dtype)
    return (None, why, None) if why else (reader, "", View.dense(v.base, (m, k), v.dtype))


def scatter(ctx: Ctx, h: Held, core: int, src: int, stride: int, view: View, sent_sem: int, arrive: int,
            arrivals: dict[int, int]) -> int:
    """Emit on `core` the puts of its SRAM tile at `src` (rows `stride` bytes apart), which is 2-D view
    `view` of held value `h`, into the blocks of the cores that hold it (a copy into its own); counts each
    holder's arrivals (on `arrive`) in `arrivals` and returns the puts (their sources free on `sent_sem`)."""
    from dojoc.codegen.builder import R_A, R_C, R_D

    cc, e, puts = ctx.core(core), h.dtype.itemsize, 0
    for pc in pieces(h, view, stride):
        if pc.core == core:
            cc.emit("vmov", rd=cc.reg(R_D, pc.src), ra=cc.reg(R_A, src + pc.dst), rows=pc.rows,
                    cols=pc.nbytes // e, sd=pc.stride, sa=stride, dt=h.dtype)
            continue
        cc.emit("put", rc=cc.reg(R_C, pc.core), rd=cc.reg(R_D, pc.src), rs=cc.reg(R_A, src + pc.dst),
                rows=pc.rows, bytes=pc.nbytes, ss=stride, ds=pc.stride, seml=sent_sem, semr=arrive)
        arrivals[pc.core] = arrivals.get(pc.core, 0) + 1
        puts += 1
    return puts


def grid_row(h: Held, v: View) -> int:
    """The grid row whose block holds the first row of 2-D view `v` of held value `h`."""
    at = _origin(h.base, h.n, h.dtype.itemsize, v)
    assert at is not None
    return next(i for i, (f, c) in enumerate(h.mblocks) if f <= at[0] < f + c)


def near(h: Held, rows: list[int], cores: set[int]) -> list[int]:
    """One core of `cores` for each of a kernel's runs of work, in order, run k on (or near) the mesh row of
    `h`'s grid row `rows[k]`, which holds the run's operands: its pieces then travel along rows, not down the
    columns that every other run's would share."""
    free: dict[int, list[int]] = {}
    for (i, _), c in sorted(h.at.items()):
        if c in cores:
            free.setdefault(i, []).append(c)
    out = []
    for r in rows:
        i = min((i for i in free if free[i]), key=lambda i: (abs(i - r), i))
        out.append(free[i].pop(0))
    return out


def busiest_link(ctx: Ctx, h: Held, wants: list[Want]) -> float:
    """Cycles of the busiest link of the network when `push` brings `wants`: every piece's route (its
    multicast tree: the union of the XY routes to its segment) carries its bytes."""
    from dojoc.codegen.paths import route_links

    m = ctx.machine
    load: dict[object, int] = {}
    for (view, _, stride), cores in _groups(wants).items():
        _, segments = _multicasts(m, cores)
        for pc in pieces(h, view, stride):
            for seg in segments:
                others = tuple(c for c in seg if c != pc.core)
                for link in route_links(m, pc.core, others) if others else ():
                    load[link] = load.get(link, 0) + pc.rows * pc.nbytes
    return max(load.values(), default=0) / m.link_bytes_per_cycle


def _groups(wants: list[Want]) -> dict[tuple[View, int, int], list[int]]:
    """The readers of each (view, address, row stride): one multicast's worth."""
    groups: dict[tuple[View, int, int], list[int]] = {}
    for w in wants:
        groups.setdefault((w.view, w.dst, w.stride), []).append(w.core)
    return groups
