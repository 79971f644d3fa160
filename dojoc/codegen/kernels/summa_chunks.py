"""SUMMA's chunks: where K is cut (`chunk_bounds`: into chunks of k, or a held A's or kept B's blocks), the
DMAs that bring A's and B's K chunks into a core's buffers (from a view, or a convolution's input windows),
the share of a kept B that still comes from DRAM, the slices beside a disabled core, the column vectors of
the epilogue, and whether a wave's residual comes in during its steps. summa.py costs them and summa_emit.py emits them,
with these very functions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from dojoc.codegen.context import Ctx
from dojoc.codegen.kernels import held as held_
from dojoc.codegen.kernels.im2col import Fill, Im2col, Shifted
from dojoc.codegen.kernels.mxu import Load
from dojoc.codegen.kernels.summa_grid import wave_block
from dojoc.codegen.view import Transfer, View, transfers

if TYPE_CHECKING:
    from dojoc.codegen.kernels.held import Held
    from dojoc.codegen.kernels.matmul import Problem
    from dojoc.codegen.kernels.summa_grid import Grid
    from dojoc.codegen.kernels.summa_relay import Relay

# a wave's residual block of at least this many bytes (on the largest core) comes in during the wave's steps
# (_prefetch_residual); a smaller one is loaded by the epilogue, as its shares would be requests of tens of
# bytes that cost the port more than they hide (BERT at batch 1: 624-byte blocks, docs/decisions.md)
RES_PREFETCH = 2048


def prefetches_residual(g: Grid, resident: str | None, waves: int, er: int) -> bool:
    """Whether the SUMMA program on grid `g` DMAs its residual during the steps (`er`: its element bytes)."""
    mm, nn, _ = wave_block(g, resident, waves)
    return mm * nn * er >= RES_PREFETCH


def vectors(p: Problem) -> int:
    """FP32 vectors per output column in the column-vector buffer: the bias, a layer norm's weight and bias."""
    return (p.bias is not None) + 2 * (p.norm is not None)


def a_chunk(a: View, e: int, kc: int, k0: int, kl: int, m0: int, m: int, dst: int, taps: int = 1,
            k: int = 0) -> list[Transfer]:
    """The DMAs of A's rows m0 .. m0 + m - 1, K elements k0 .. k0 + kl - 1 (elements of `e` bytes), into a
    tile at `dst` (rows kc wide); for a shifted convolution (`taps` > 1, K = `k` channels), those channels
    of every tap, each tap's kc columns after the last's (rows taps x kc wide)."""
    if taps == 1:
        return transfers(a.base + m0 * a.strides[0] + k0 * a.strides[1], dst,
                         [(m, a.strides[0], kc * e), (kl, a.strides[1], e)], e)
    return transfers(a.base + m0 * a.strides[0] + k0 * a.strides[1], dst,
                     [(m, a.strides[0], taps * kc * e), (taps, k * a.strides[1], kc * e), (kl, a.strides[1], e)], e)


def a_width(p: Problem, kc: int) -> int:
    """Elements of a row of A's chunk tile: kc, or kc per tap of a shifted convolution."""
    return p.taps * kc


def b_chunk(src: View | Im2col | Shifted, e: int, k0: int, kl: int, n0: int, n: int,
            dst: int, width: int = 0) -> tuple[list[Load], list[Fill]]:
    """The DMAs (and zero fills) of B's K rows k0 .. k0 + kl - 1, columns n0 .. n0 + n - 1 (elements of `e`
    bytes), into a tile at `dst` (rows n, or `width`, elements apart): from B's view, or a convolution's
    shifted input windows, or a shifted convolution's padded input, phase after phase (im2col.py)."""
    if isinstance(src, (Im2col, Shifted)):
        return src.chunk(k0, kl, n0, n, dst, (width or n) * e)
    return [Load(tr) for tr in transfers(src.base + k0 * src.strides[0] + n0 * src.strides[1], dst,
                                         [(kl, src.strides[0], n * e), (n, src.strides[1], e)], e)], []


def x_windows(p: Problem, x_max: int, rl: Relay | None = None) -> bool:
    """Whether the slices beside a disabled core (at most x_max columns) come as a window per tap: a shifted
    convolution's, when that is fewer columns than their halo would add, and no relay brings their halos
    (summa_relay.py)."""
    return p.shift is not None and rl is None and p.shift.slice_windows(x_max)


def x_dram(p: Problem, core: int, n: int, windows: bool, rl: Relay | None) -> int:
    """Columns per row of K that the slice of `core` (n columns) loads from DRAM: its own only when a relay
    brings its halo, else `x_cols`."""
    return p.phases * n if rl is not None and core in rl.relayed else x_cols(p, n, windows)


def x_cols(p: Problem, n: int, windows: bool) -> int:
    """Columns per row of K that a slice of n columns takes: a window of n per tap, or n and the halo per
    phase."""
    return p.taps * n if windows else p.phases * (n + p.halo)


def out_cols(p: Problem, views: list[View], n0: int, n: int) -> list[tuple[View, int, int, int]]:
    """Columns n0 .. n0 + n - 1 of the output (or residual) as (view, its first column, offset in the block,
    count): one view, or for a batched convolution one per image of `per_view` pixels each (a shifted one's:
    the output pixels among its grid's)."""
    if p.shift is not None:
        return [(views[img], first, off, count) for img, first, count, off in p.shift.segments(n0, n)]
    if len(views) == 1:
        return [(views[0], n0, 0, n)]
    w, out, c = p.per_view, [], n0
    while c < n0 + n:
        count = min(w - c % w, n0 + n - c)
        out.append((views[c // w], c % w, c - n0, count))
        c += count
    return out


def b_source(p: Problem) -> View | Im2col | Shifted:
    """Where B's chunks come from: the convolution's input windows (a shifted one's padded input), or B's
    view."""
    if p.shift is not None:
        return p.shift
    return p.im2col if p.im2col is not None else p.b[0]


def chunk_bounds(k: int, kc: int, held: Held | None = None,
                 b_kept: held_.Kept | None = None) -> tuple[tuple[int, int], ...]:
    """The K chunks (first, length): of kc each, or, when A is held, the producer's column blocks, or when
    B is kept (Problem.b_kept), the producer's row blocks."""
    if held is not None:
        return held.kblocks
    if b_kept is not None:
        return b_kept.mblocks
    return tuple((k0, min(kc, k - k0)) for k0 in range(0, k, kc))


def b_dram_share(g: Grid, p: Problem) -> float:
    """The share of B's chunks that come from DRAM: all of them, or with a kept B (`Problem.b_kept`) those
    whose producer block lies at a disabled position."""
    if p.b_kept is None:
        return 1.0
    return 1 - len(p.b_kept.at) / (len(p.b_kept.mblocks) * len(g.cols))


def with_kept_b(ctx: Ctx, p: Problem) -> Problem | None:
    """The problem with its B taken from its producer's blocks kept in SRAM (held.b_reader), when the op in
    scope is such a reader and its B is exactly the kept output ([channels, pixels], unshifted)."""
    k = held_.kept_b(ctx)
    if k is None or p.im2col is None or p.shift is not None or p.k != sum(n for _, n in k.mblocks) \
            or p.n != sum(n for _, n in k.nblocks):
        return None
    return replace(p, b_kept=k)
