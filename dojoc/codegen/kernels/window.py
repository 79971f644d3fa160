"""Shifted input windows of a convolution: the DMA that brings the input pixels which a block of output
pixels reads at one offset into a dense SRAM tile, with the DMA's destination padding standing in for the
pixels outside the image (so padding costs no DRAM traffic). Shared by conv.py (one window per kernel tap)
and depthwise.py (one window per stride phase).

Along one spatial axis, output o reads input `o * stride + off`; `off` is the tap's offset
(`k * dilation - padding`). For outputs `lo .. lo + count - 1`, the valid ones form one run; those before
it are the tile's leading padding and those after it its trailing padding.
"""

from __future__ import annotations

from dataclasses import dataclass

from dojoc.codegen.kernels.mxu import Load
from dojoc.codegen.view import Transfer, View, transfers
from dojoc.errors import CompileError

MAX_PAD = 255  # the dmadim padlo/padhi fields


@dataclass(frozen=True)
class Span:
    """Outputs lo .. lo + count - 1 along one axis, reading input `o * stride + off` of an axis of `size`."""

    lo: int
    count: int
    stride: int
    off: int
    size: int


def valid_range(lo_out: int, count: int, s: int, off: int, size: int) -> tuple[int, int, int] | None:
    """For outputs lo_out..lo_out+count-1 reading input o*s + off: (first valid output, valid count,
    padding after), or None when every input falls outside 0..size-1."""
    first = max(lo_out, -(off // s))  # the least o with o * s + off >= 0
    last = min(lo_out + count - 1, (size - 1 - off) // s)
    if last < first:
        return None
    return first, last - first + 1, lo_out + count - 1 - last


def window(x: View, b: int, ch: int, cl: int, rows: Span, cols: Span, dst: int, dst_cstride: int,
           what: str) -> list[Load] | None:
    """The DMA of the window [cl channels from ch, rows.count, cols.count] of image b of NCHW view `x`
    into a tile at SRAM `dst` (relative to a staging buffer): channels `dst_cstride` bytes apart, each a
    dense rows x cols block, padded with zeros where the input is outside the image. None when the
    window reads only padding."""
    rr = valid_range(rows.lo, rows.count, rows.stride, rows.off, rows.size)
    cr = valid_range(cols.lo, cols.count, cols.stride, cols.off, cols.size)
    if rr is None or cr is None:
        return None
    (fr, nr, rhi), (fc, nc, chi) = rr, cr
    sn, sc, sh, sw = x.strides
    e = x.dtype.itemsize
    src = x.base + b * sn + ch * sc + (fr * rows.stride + rows.off) * sh + (fc * cols.stride + cols.off) * sw
    dims = [(cl, sc, dst_cstride), (nr, rows.stride * sh, cols.count * e), (nc, cols.stride * sw, e)]
    pads = ((0, 0), (fr - rows.lo, rhi), (fc - cols.lo, chi))
    if not any(lo or hi for lo, hi in pads):
        return [Load(t) for t in transfers(src, dst, dims, e)]
    if max(max(p) for p in pads) > MAX_PAD:
        raise CompileError(f"{what}: padding of more than {MAX_PAD} rows or columns in one tile")
    return [Load(Transfer(src, dst, tuple(dims), e), pads)]
