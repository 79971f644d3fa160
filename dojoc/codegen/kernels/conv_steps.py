"""The steps of a tiled convolution's items (conv.py): the input rows a block of output rows reads, each
tap's shifted window, the weight tiles, the steps that load their taps' input rows once; and for a
convolution whose epilogue pools its rows (a `row_max` step, passes/fuse_pool.py), the band of convolution
rows that a block of pooled rows reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dojoc.codegen.kernels.mxu import Load, Operand, Part, Spec, Step
from dojoc.codegen.kernels.window import Span, window
from dojoc.codegen.view import transfers

if TYPE_CHECKING:
    from dojoc.codegen.kernels.conv import Conv


def band(cv: Conv, r0: int, rl: int) -> tuple[int, int, tuple[tuple[int, ...], ...]]:
    """For output rows r0 .. r0 + rl - 1: (the first convolution row they need, how many, and per output row
    the convolution rows it is the max of, from that first one). Without a pool those are the rows
    themselves, and no maxima."""
    if cv.pool is None:
        return r0, rl, ()
    k, s, p = cv.pool
    lo, hi = max(0, s * r0 - p), min(cv.oh, s * (r0 + rl - 1) - p + k)
    rows = tuple(tuple(c - lo for c in range(s * (r0 + i) - p, s * (r0 + i) - p + k) if 0 <= c < cv.oh)
                 for i in range(rl))
    return lo, hi - lo, rows


def band_rows(cv: Conv, rl: int) -> int:
    """The most convolution rows that rl output rows need (rl themselves without a pool)."""
    if cv.pool is None:
        return rl
    k, s, _ = cv.pool
    return min(cv.oh, s * (rl - 1) + k)


def halo(cv: Conv, rl: int, wl: int) -> tuple[int, int]:
    """(input rows, input columns) that rl output rows of wl columns read over all taps."""
    return (rl - 1) * cv.stride[0] + (cv.kh - 1) * cv.dil[0] + 1, wl + (cv.kw - 1) * cv.dil[1]


def tap_window(cv: Conv, b: int, ch: int, cl: int, tap: int, r0: int, rl: int, c0: int, wl: int,
               dst: int) -> list[Load] | None:
    """The DMA of one tap's shifted input window [cl, rl, wl] (output rows r0.., columns c0..) into a
    staging tile at `dst`, or None when the tap reads only padding there."""
    kh, kw = divmod(tap, cv.kw)
    rows = Span(r0, rl, cv.stride[0], kh * cv.dil[0] - cv.pad[0], cv.h)
    cols = Span(c0, wl, cv.stride[1], kw * cv.dil[1] - cv.pad[1], cv.wd)
    return window(cv.x, b, ch, cl, rows, cols, dst, rl * wl * cv.x.dtype.itemsize, "conv2d")


def weights(cv: Conv, spec: Spec, o0: int, ol: int, t0: int, tn: int, c0: int, cl: int) -> list[Load]:
    """DMAs of a streamed weight tile [ol, (tap, channel)] for taps t0.. and channels c0.. ."""
    e = spec.a_src.itemsize
    so, sc, skh, skw = cv.w.strides
    k = tn * cl
    out = []
    for t in range(t0, t0 + tn):
        kh, kw = divmod(t, cv.kw)
        out += [Load(t_) for t_ in transfers(cv.w.base + o0 * so + c0 * sc + kh * skh + kw * skw,
                                             (t - t0) * cl * e, [(ol, so, k * e), (cl, sc, e)], e)]
    return out


def window_steps(cv: Conv, spec: Spec, b: int, gi: int, o0: int, ol: int, r0: int, rl: int,
                 c0: int, wl: int, cl: int, res: int | None) -> list[Step]:
    """The steps of one item that load, per chunk of channels, the input rows all its taps read once
    ([channels, rows, columns], padded with zeros outside the image), and multiply each tap's window out
    of them: one mma per output row and tap, B at the tap's offset into the staged rows."""
    hr, hc = halo(cv, rl, wl)
    ex, ew = spec.b_src.itemsize, spec.a_src.itemsize
    rows = Span(0, hr, 1, r0 * cv.stride[0] - cv.pad[0], cv.h)
    cols = Span(0, hc, 1, c0 - cv.pad[1], cv.wd)
    steps = []
    for ch in range(0, cv.cg, cl):
        ncl = min(cl, cv.cg - ch)
        bop = Operand(ncl * hr, hc)
        lds = window(cv.x, b, gi * cv.cg + ch, ncl, rows, cols, 0, hr * hc * ex, "conv2d")
        if lds is None:
            bop.zero.append((0, ncl * hr))
        else:
            bop.loads += lds
        if res is not None:  # A's columns (tap, channel) at a0: resident rows hold every tap's channels
            aop, a_tap = Operand(ol, cv.k, addr=res + ch * ew, stride=cv.k * ew), cv.cg
        else:
            aop, a_tap = Operand(ol, cv.taps * ncl, loads=weights(cv, spec, o0, ol, 0, cv.taps, ch, ncl)), ncl
        parts = tuple(Part(t * a_tap, ncl, (r * cv.stride[0] + kh) * hc + kw, hr * hc, r * wl, wl)
                      for r in range(rl) for t, (kh, kw) in enumerate(divmod(t, cv.kw) for t in range(cv.taps)))
        steps.append(Step(aop, bop, parts))
    return steps
