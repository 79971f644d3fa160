"""SUMMA's geometry: the rectangle of the mesh it runs on and the grid of output blocks laid over it.

The home die (`place.home_die`) by default; a rectangle of it when the problem is too small for the whole
die (`rects`); any rectangle a given mapping names (`rect_of`); the cores that load each chunk (`loader`)
and keep a resident weight's (`resident_wants`, `unkept`). summa.py plans and costs the kernel on a grid,
summa_emit.py emits each core's program from it, held.py keeps an output in its blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from dojoc.codegen.context import MAX_COLS, MAX_ROWS, Ctx, split
from dojoc.codegen.kernels.mxu import resident_free
from dojoc.codegen.sram import aligned
from dojoc.mapping.place import Rect
from isa.costs import up8

if False:  # typing only, without an import cycle
    from dojoc.codegen.kernels.matmul import Problem

MIN_BLOCK = 3  # rows and columns of a core's block, at least


@dataclass(frozen=True)
class Grid:
    """A rectangle of the mesh (`rect`: the home die) as a grid of blocks: the enabled cores of each of its
    rows and columns (ids in order), the row blocks of M and column blocks of N (start, count), and each
    disabled position's column slices. Rows and columns are counted in the rectangle (`local`). Its
    extents are cached: every step of every search asks for them."""

    rect: Rect
    rows: tuple[tuple[int, ...], ...]
    cols: tuple[tuple[int, ...], ...]
    mblocks: tuple[tuple[int, int], ...]
    nblocks: tuple[tuple[int, int], ...]
    extra: dict[int, tuple[int, int]]  # core -> (first column, count) of the slice it takes, in N
    at: dict[tuple[int, int], int]  # (row, column) in the rectangle -> the enabled core there

    @cached_property
    def cores(self) -> tuple[int, ...]:
        return tuple(c for row in self.rows for c in row)

    @cached_property
    def m_max(self) -> int:
        return max(n for _, n in self.mblocks)

    @cached_property
    def n_max(self) -> int:
        return max(n for _, n in self.nblocks)

    @cached_property
    def x_max(self) -> int:
        return max((n for _, n in self.extra.values()), default=0)

    @property
    def within_fields(self) -> bool:
        """Whether every block (and slice) is within a tile operand's extents (the instruction table's rows and
        columns fields): its multiplies and epilogue take a block in one instruction."""
        return self.m_max <= MAX_ROWS and max(self.n_max, self.x_max) <= MAX_COLS

    def local(self, ctx: Ctx, core: int) -> tuple[int, int]:
        """The (row, column) of `core` in the grid."""
        return self.rect.local(ctx.machine.coords[core])

    def cast(self, ctx: Ctx, row: bool) -> tuple[int, int]:
        """(first, span) of a put that multicasts along a grid row (`row`) or column: 0, 0 (the whole mesh
        line) when the rectangle spans it, else the rectangle's positions along it."""
        whole_rows, whole_cols = self.rect.covers(ctx.machine)
        if whole_rows if row else whole_cols:
            return 0, 0
        return (self.rect.c0, self.rect.cols) if row else (self.rect.r0, self.rect.rows)


def grid(ctx: Ctx, m: int, n: int, rect: Rect | None = None) -> Grid:
    """The grid of blocks of an [m, n] output over `rect` (default: the home die)."""
    mach = ctx.machine
    rect = rect or ctx.home
    rows_n, cols_n = rect.shape
    at = {(i, j): mach.core_at[rect.mesh(i, j)] for i in range(rows_n) for j in range(cols_n)
          if rect.mesh(i, j) in mach.core_at}
    rows = tuple(tuple(at[(r, c)] for c in range(cols_n) if (r, c) in at) for r in range(rows_n))
    cols = tuple(tuple(at[(r, c)] for r in range(rows_n) if (r, c) in at) for c in range(cols_n))
    nblocks = tuple(split(n, cols_n))
    extra: dict[int, tuple[int, int]] = {}
    for r in range(rows_n):
        for c in range(cols_n):
            if (r, c) not in at:  # a disabled core's block: its columns, sliced over the row's cores
                first, count = nblocks[c]
                for core, (s, k) in zip(rows[r], split(count, len(rows[r])), strict=False):
                    extra[core] = (first + s, k)
    # a row beside a disabled core multiplies its slices too: it takes fewer rows of M, so that no core's
    # step (rows and columns rounded up to the matrix unit's 8) is longer than a full row's
    n_max = max(k for _, k in nblocks)
    widths = [up8(n_max) + max((up8(extra[c][1]) for c in row if c in extra), default=0) for row in rows]
    # the reader of a held A (the only op that runs while a value is held) takes its producer's rows
    held = next((h.mblocks for h in ctx.held.values() if h.m == m), None)
    mblocks = held if held is not None else balanced_rows(m, tuple(widths))
    return Grid(rect, rows, cols, mblocks, nblocks, extra, at)


@lru_cache(maxsize=1024)
def balanced_rows(m: int, widths: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Rows of M per mesh row (first, count), contiguous, so that the longest step of any row is as short
    as it can be: a row of `width` columns (rounded to 8) with r rows costs width x (up8(r) + up8(r / 2))
    (one wave and two). Equal widths split M evenly, as `split` does. (Cached: the cost model asks for
    every candidate's grid, and the answer depends only on these numbers.)"""
    if len(set(widths)) == 1 or m < 2 * len(widths):
        return tuple(split(m, len(widths)))

    def cost(r: int, width: int) -> int:
        return width * (up8(r) + up8(-(-r // 2)))

    def most(c: int, width: int) -> int:  # the most rows whose cost is within c (at least one)
        lo, hi = 1, m
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost(mid, width) <= c else (lo, mid - 1)
        return lo

    lo, hi = 0, max(cost(m, w) for w in widths)
    while lo < hi:  # the least cost bound at which the rows can take all of M
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if sum(most(mid, w) for w in widths) >= m else (mid + 1, hi)
    counts = [most(lo, w) for w in widths]
    while sum(counts) > m:  # give back the excess one row at a time, from the row with the most
        i = max(range(len(counts)), key=lambda j: (counts[j], -j))
        counts[i] -= 1
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return tuple(zip(starts, counts, strict=True))


def rects(ctx: Ctx, p: Problem) -> list[Rect]:
    """The rectangles the kernel may run the problem on: the home die (`place.home_die`: the whole mesh on
    a one-die machine) when each of its cores gets at least MIN_BLOCK rows and columns; else rectangles of
    it, from its corner at the port, that are as many rows and columns as M and N allow at MIN_BLOCK, or at
    the matrix unit's 8 (fewer cores, fuller mma steps: the cost model chooses). A held A's reader takes its
    producer's. Every one of a rectangle's cores must be in the compile, and each of its rows and columns
    must have one (a disabled core can leave a line of a thin rectangle empty)."""
    held = next((h for h in ctx.held.values() if h.m == p.m), None)
    if held is not None:
        return [held.rect]
    home = ctx.home
    rows_n, cols_n = home.shape
    if p.m >= MIN_BLOCK * rows_n and p.n >= MIN_BLOCK * cols_n:
        out = [home]
    else:
        rs = sorted({min(rows_n, max(1, x)) for x in (p.m // MIN_BLOCK, p.m // 8)}, reverse=True)
        cs = sorted({min(cols_n, max(1, x)) for x in (p.n // MIN_BLOCK, p.n // 8)}, reverse=True)
        out = [Rect(home.r0, home.c0, r, c) for r in rs for c in cs if r * c > 1]
    ids = set(ctx.builder.ids)

    def usable(rect: Rect) -> bool:
        g = grid(ctx, p.m, p.n, rect)
        return all(g.rows) and all(g.cols) and all(c in ids for c in g.cores) and g.within_fields

    return [r for r in out if usable(r)]


def rect_of(ctx: Ctx, cores: tuple[int, ...]) -> Rect | None:
    """The rectangle whose enabled cores, row by row, are `cores` (a given mapping's region), or None."""
    mach = ctx.machine
    if not cores or any(not 0 <= c < mach.num_cores for c in cores):
        return None
    pos = [mach.coords[c] for c in cores]
    r0, c0 = min(r for r, _ in pos), min(c for _, c in pos)
    rect = Rect(r0, c0, max(r for r, _ in pos) - r0 + 1, max(c for _, c in pos) - c0 + 1)
    inside = tuple(mach.core_at[rect.mesh(i, j)] for i in range(rect.rows) for j in range(rect.cols)
                   if rect.mesh(i, j) in mach.core_at)
    return rect if inside == tuple(cores) else None


def wave_split(n: int, waves: int) -> list[tuple[int, int]]:
    """A block's n rows (or columns) cut into waves (first, count): every wave but the last a multiple of 8,
    the matrix unit's granule, so that only the last is rounded up (101 columns in two waves: 56 and 45,
    multiplied as 56 and 48, not 51 and 50 as 56 and 56); evenly when n is too small for that."""
    q = up8(-(-n // waves))
    if waves == 1 or q * (waves - 1) >= n:
        return split(n, waves)
    return [(w * q, q) for w in range(waves - 1)] + [((waves - 1) * q, n - (waves - 1) * q)]


def wave_block(g: Grid, resident: str | None, waves: int) -> tuple[int, int, int]:
    """The largest (rows, columns, slice columns) of one wave's block on any core."""
    if waves == 1:
        return g.m_max, g.n_max, g.x_max
    if resident == "b":
        return wave_split(g.m_max, waves)[0][1], g.n_max, g.x_max
    return g.m_max, wave_split(g.n_max, waves)[0][1], g.x_max


def loader(line: tuple[int, ...], index: int, t: int, rot: int = 0) -> int:
    """The core of a mesh row (or column) `line`, the index-th, that loads chunk t: rotating with t, and
    staggered by the line's index, so the columns' B loaders of one chunk sit in different rows and their
    DMAs enter the mesh through different routers of the DRAM port (not all through one row's links);
    a resident operand's rotation starts `rot` cores on (`rotation`)."""
    return line[(t + index + rot) % len(line)]


def rotation(ctx: Ctx, g: Grid, bounds: tuple[tuple[int, int], ...], kc: int, resident: str, e: int,
             taps: int = 1) -> int:
    """The offset of a resident operand's loader rotation (tile field `rotate`) that keeps the most of its
    chunks and leaves the fullest core the most room: a line whose chunks are fewer than its cores puts them
    on a run of its cores, and with the same run for every op (a transformer's twelve layers) those cores
    fill while the others stay empty, and later layers' chunks find no room."""
    lines = g.cols if resident == "b" else g.rows
    blocks = g.nblocks if resident == "b" else g.mblocks
    free = {c: resident_free(ctx, c) for c in g.cores}
    # (the bytes of chunk t of line i do not depend on the rotation)
    sizes = [[aligned((kl * n if resident == "b" else n * taps * kc) * e) for _, kl in bounds] for _, n in blocks]
    best: tuple[tuple[int, int], int] | None = None
    for rot in range(max(len(line) for line in lines)):
        left = dict(free)
        lost = 0
        for i, line in enumerate(lines):
            if not line:
                continue
            for t, nbytes in enumerate(sizes[i]):
                core = loader(line, i, t, rot)
                if nbytes <= left[core]:
                    left[core] -= nbytes
                else:
                    lost += nbytes
        score = (lost, -min(left.values()))
        if best is None or score < best[0]:
            best = (score, rot)
    assert best is not None
    return best[1]


def resident_wants(ctx: Ctx, g: Grid, core: int, bounds: tuple[tuple[int, int], ...], kc: int, resident: str,
                   e: int, taps: int = 1, rot: int = 0) -> list[tuple[str, int, int]]:
    """The resident copies a core keeps, in the order it allocates them: (operand "a" | "b" | "x", chunk,
    bytes). The loader of a chunk keeps it (A's m x kc, B's kl x n); a core beside a disabled core keeps its
    own slices of B too (A's chunks are taps x kc wide for a shifted convolution)."""
    r, c = g.local(ctx, core)
    m, n, nx = g.mblocks[r][1], g.nblocks[c][1], g.extra.get(core, (0, 0))[1]
    wants: list[tuple[str, int, int]] = []
    for t, (_, kl) in enumerate(bounds):
        if resident == "a" and core == loader(g.rows[r], r, t, rot):
            wants.append(("a", t, m * taps * kc * e))
        if resident == "b" and core == loader(g.cols[c], c, t, rot):
            wants.append(("b", t, kl * n * e))
        if resident == "b" and nx:
            wants.append(("x", t, kl * nx * e))
    return wants


def unkept(ctx: Ctx, g: Grid, bounds: tuple[tuple[int, int], ...], kc: int, resident: str,
           e: int, taps: int = 1, rot: int = 0, scratch: int = 0) -> list[tuple[tuple[int, float], ...]]:
    """Per chunk, the resident copies that will find no room, (loader core, bytes): `_keep`'s allocation
    replayed on the cores' free resident SRAM beside the op's `scratch` bytes (a bump allocator: a copy
    fits when its aligned bytes are free)."""
    lost: list[list[tuple[int, float]]] = [[] for _ in bounds]
    for core in g.cores:
        free = resident_free(ctx, core, scratch)
        for _, t, nbytes in resident_wants(ctx, g, core, bounds, kc, resident, e, taps, rot):
            if aligned(nbytes) <= free:
                free -= aligned(nbytes)
            else:
                lost[t].append((core, float(nbytes)))
    return [tuple(x) for x in lost]

