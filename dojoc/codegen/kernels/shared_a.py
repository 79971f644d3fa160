"""A matmul's A operand shared whole by every core of its region, multicast once instead of read by each.

When every output tile of a matmul spans all of its rows (M small: a language model's head over one
sequence, [128, 768] @ [768, 50257]), every core of the tiled kernel (matmul.py) reads all of A. Read
from DRAM by each, that is A's bytes times the cores (for GPT-2's head 69 MiB, 173,000 port cycles);
SUMMA instead streams B down the mesh columns, which for a wide weight loads the links (3.9 MiB per
column). With `share_a` (tile field 1), A is read from DRAM once: its *root* core DMAs it in K chunks and
multicasts each chunk down its mesh column; each core of that column (a *head*) passes it on along its
row; so every core keeps the whole panel [M, K] in scratch, and its items read it in place while their
B tiles stay resident (each core keeps the columns of its items, loaded once before the call). A row
whose position in the root's column is disabled has a head that DMAs the panel itself.

A region's mesh rows follow each other, and in each it is a run of columns, so that every multicast
reaches exactly its cores (a segment of the mesh line); the default is whole rows of the home die. Chunk
t is multiplied by the first item of a core as soon as it has arrived: a head forwards it just before its
own multiply, a receiver waits for it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dojoc.codegen.builder import R_A, R_C, R_D, CoreCode
from dojoc.codegen.context import MAX_STRIDE, Ctx
from dojoc.codegen.sems import SHARED_A
from dojoc.codegen.sram import aligned
from dojoc.codegen.view import Transfer, transfers
from isa.table import Cast

if TYPE_CHECKING:
    from dojoc.codegen.kernels.matmul import Problem
    from dojoc.codegen.kernels.mxu import Spec

# A default plan shares A only for B tiles at least MIN_COLS wide: the estimate undercounts narrow ones
# (each mma pads its columns to 8, and the chunks' chain of multicasts paces steps that short). In GPT-2
# (12 layers) its 768-wide linears took it at 2 to 5 columns a core: 17,461 to 22,284 cycles against 11,991
# to 18,987 predicted and SUMMA's 6,397 to 18,994 (761,755 -> 837,534 cycles in all). Its head takes 24.
# A given mapping may still ask for any width.
MIN_COLS = 16
# beside mxu.Pipeline's: the panel's DMAs, its chunks' arrivals, the sources of its puts free
SEM_DMA, SEM_ARRIVE, SEM_SENT = SHARED_A.id("dma"), SHARED_A.id("arrive"), SHARED_A.id("sent")


@dataclass(frozen=True)
class Broadcast:
    """The cores of a shared-A region and the way the panel reaches them."""

    rows: tuple[tuple[int, ...], ...]  # the region's cores, per mesh row of the home die (whole rows)
    root: int  # DMAs the panel and multicasts it down its column
    heads: tuple[int, ...]  # per row: the core that passes each chunk on along the row
    dram_heads: frozenset[int]  # heads that DMA the panel themselves (their row's root-column core is off)
    col_seg: tuple[int, int]  # (first, span) of the root's column multicast
    row_segs: tuple[tuple[int, int], ...]  # per row: (first, span) of its head's row multicast

    @property
    def cores(self) -> list[int]:
        return [c for row in self.rows for c in row]

    @property
    def fed(self) -> tuple[int, ...]:
        """Heads that receive the panel from the root's column multicast."""
        return tuple(h for h in self.heads if h != self.root and h not in self.dram_heads)


def die_rows(ctx: Ctx) -> list[tuple[int, ...]]:
    """The enabled cores of each mesh row of the home die that run code, by column."""
    mach, rect = ctx.machine, ctx.home
    ids = set(ctx.builder.ids)
    out = []
    for i in range(rect.rows):
        row = tuple(mach.core_at[rect.mesh(i, j)] for j in range(rect.cols)
                    if rect.mesh(i, j) in mach.core_at and mach.core_at[rect.mesh(i, j)] in ids)
        if row:
            out.append(row)
    return out


def region(ctx: Ctx, rows: list[tuple[int, ...]], items: int) -> Broadcast | None:
    """The largest region of whole home-die rows (`die_rows`) with at most `items` cores (every core gets an
    item), or None when one row has more cores than items."""
    take: list[int] = []
    for row in rows:
        if len(take) + len(row) > items:
            break
        take += row
    return of_cores(ctx, take)[0] if take else None


def of_cores(ctx: Ctx, cores: list[int]) -> tuple[Broadcast | None, str]:
    """The broadcast over `cores`, or None and why they cannot share A: their mesh rows must follow each
    other, and in each row they must be every core of a run of columns (so a row multicast reaches them
    and no other core)."""
    mach = ctx.machine
    by_row: dict[int, list[int]] = {}
    for c in cores:
        by_row.setdefault(mach.coords[c][0], []).append(c)
    rs = sorted(by_row)
    if rs != list(range(rs[0], rs[0] + len(rs))):
        return None, f"its cores lie on mesh rows {rs}, which do not follow each other"
    segs: dict[int, tuple[int, int]] = {}
    for r in rs:
        cols = sorted(mach.coords[c][1] for c in by_row[r])
        lo, hi = cols[0], cols[-1]
        line = [mach.core_at[(r, j)] for j in range(lo, hi + 1) if (r, j) in mach.core_at]
        if sorted(line) != sorted(by_row[r]):
            return None, f"on mesh row {r} it leaves out cores between columns {lo} and {hi}"
        segs[r] = (lo, hi - lo + 1)
    rows = tuple(tuple(sorted(by_row[r], key=lambda c: mach.coords[c][1])) for r in rs)
    return broadcast(ctx, rows, tuple(segs[r] for r in rs)), ""


def broadcast(ctx: Ctx, rows: tuple[tuple[int, ...], ...], segs: tuple[tuple[int, int], ...]) -> Broadcast:
    """The root and the heads: the root's column is one where every row of the region has either a core
    of the region or no core at all (a disabled position: the column multicast then reaches only heads),
    the one with the most rows that have a core there; a row without one has a head that loads the panel
    itself, and without any such column every head does."""
    mach = ctx.machine
    r0 = mach.coords[rows[0][0]][0]
    have = [{mach.coords[c][1] for c in row} for row in rows]
    fits = [c for c in range(mach.mesh[1])
            if any(c in h for h in have)
            and all(c in h or (r0 + i, c) not in mach.core_at for i, h in enumerate(have))]
    best = max(fits, key=lambda c: (sum(c in h for h in have), -c), default=None)
    heads, dram = [], set()
    for row, h in zip(rows, have, strict=True):
        if best is not None and best in h:
            heads.append(next(c for c in row if mach.coords[c][1] == best))
        else:
            heads.append(row[0])
            dram.add(row[0])
    root = next((h for h in heads if h not in dram), heads[0])
    dram.discard(root)
    mesh_rows, mesh_cols = mach.mesh
    col_seg = (0, 0) if r0 == 0 and len(rows) == mesh_rows else (r0, len(rows))
    row_segs = tuple((0, 0) if (c, n) == (0, mesh_cols) else (c, n) for c, n in segs)
    return Broadcast(rows, root, tuple(heads), frozenset(dram), col_seg, row_segs)


def ineligible(p: Problem, spec: Spec) -> str:
    """Why the matmul cannot share its A ("" when it can): it must be one 2-D matmul whose A is a plain view
    already in the mma's type (the panel is read in place), with rows of A within a tile operand's stride."""
    if len(p.a) != 1:
        return f"it is a batch of {len(p.a)} matmuls"
    if p.im2col is not None or p.shift is not None or p.b_kept is not None:
        return "its operands are a convolution's windows or a kept B"
    if spec.a_src is not spec.op:
        return f"its A is {spec.a_src}, converted to the mma's {spec.op} on the way"
    if p.k * spec.a_src.itemsize > MAX_STRIDE:
        return (f"a row of A ({p.k} x {spec.a_src.itemsize} bytes) is longer than the {MAX_STRIDE:,} bytes that a "
                "tile operand's row stride holds")
    return ""


def eligible(p: Problem, spec: Spec) -> bool:
    """Whether the matmul can share its A (`ineligible` says why not)."""
    return not ineligible(p, spec)


def panel_bytes(p: Problem, spec: Spec) -> int:
    """Scratch bytes of the whole A panel [M, K] on every core."""
    return aligned(p.m * p.k * spec.a_src.itemsize)


def dram_bytes(p: Problem, spec: Spec, bc: Broadcast) -> int:
    """A's bytes read from DRAM: once by the root and once by each head that loads its row's copy."""
    return (1 + len(bc.dram_heads)) * p.m * p.k * spec.a_src.itemsize


def link_cycles(ctx: Ctx, p: Problem, spec: Spec, bc: Broadcast, kc: int) -> tuple[float, float]:
    """(all of the panel through one mesh line, one chunk's two multicasts): the panel crosses each line
    once at the link width; the first multiply waits for a chunk's column and row multicasts."""
    m, e = ctx.machine, spec.a_src.itemsize
    if len(bc.cores) == 1:  # (its DMAs alone: nothing is multicast)
        return 0.0, 0.0
    bw = min(m.link_bytes_per_cycle, m.inject_bytes_per_cycle, m.eject_bytes_per_cycle)
    hops = len(bc.rows) + max(len(r) for r in bc.rows)
    return p.m * p.k * e / bw, 2 * p.m * kc * e / bw + hops * m.hop_latency


class Sender:
    """One core's part in bringing the panel: its DMAs (issued before its items) and, per chunk, what it
    does just before its first multiply that reads it (`before`)."""

    def __init__(self, ctx: Ctx, core: int, bc: Broadcast, p: Problem, spec: Spec, panel: int, kc: int) -> None:
        self.cc: CoreCode = ctx.core(core)
        self.core, self.bc, self.panel = core, bc, panel
        self.e, self.k, self.m = spec.a_src.itemsize, p.k, p.m
        self.chunks = [(k0, min(kc, p.k - k0)) for k0 in range(0, p.k, kc)]
        self.loads = core == bc.root or core in bc.dram_heads
        i = next(i for i, r in enumerate(bc.rows) if core in r)
        self.row, self.row_seg = bc.rows[i], bc.row_segs[i]
        self.head = core in bc.heads
        self.sent = 0
        self.ready = 0  # chunks waited for (and passed on)
        a = p.a[0]
        self.dmas: list[list[Transfer]] = [transfers(
            a.base + k0 * a.strides[1], panel + k0 * self.e,
            [(p.m, a.strides[0], p.k * self.e), (kl, a.strides[1], self.e)], self.e) for k0, kl in self.chunks]

    def issue(self) -> None:
        """The panel's DMAs, for a core that loads it."""
        if self.loads:
            for ts in self.dmas:
                for t in ts:
                    self.cc.dma_load(t, SEM_DMA)

    def before(self, k_end: int) -> None:
        """Every chunk that starts below column `k_end` of A is in this core's panel (waited for), and
        passed on if this core passes it."""
        cc = self.cc
        while self.ready < len(self.chunks) and self.chunks[self.ready][0] < k_end:
            t = self.ready
            if self.loads:
                cc.wait(SEM_DMA, len(self.dmas[t]))
            else:
                cc.wait(SEM_ARRIVE, 1)
            if self.core == self.bc.root and self.bc.fed:
                self._put(t, Cast.COL, self.bc.col_seg)
            if self.head and len(self.row) > 1:
                self._put(t, Cast.ROW, self.row_seg)
            self.ready += 1

    def _put(self, t: int, cast: Cast, seg: tuple[int, int]) -> None:
        cc, (k0, kl) = self.cc, self.chunks[t]
        addr, stride = self.panel + k0 * self.e, self.k * self.e
        cc.emit("put", rc=cc.reg(R_C, self.core), rd=cc.reg(R_D, addr), rs=cc.reg(R_A, addr), rows=self.m,
                bytes=kl * self.e, ss=stride, ds=stride, cast=cast, seml=SEM_SENT, semr=SEM_ARRIVE,
                first=seg[0], span=seg[1])
        self.sent += 1

    def finish(self) -> None:
        """Wait until every put's source has left (the semaphores end the op at zero)."""
        self.cc.wait(SEM_SENT, self.sent)
