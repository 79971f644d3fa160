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


@dataclass(frozen=True)
class Phases:
    """The input rows that rl output rows of wl columns read over every tap, staged once in SRAM in column
    phases, [channel, phase, row, column]: phase f holds the padded input columns c * s_w + f of the output
    columns c, so a tap's window is a dense run of one phase's columns, and its rows are every s_h-th staged
    row. With s_w = 1 there is one phase. Shared by gather.py (a convolution's im2col tile built in SRAM)
    and pool.py (max_pool2d's values)."""

    stride: tuple[int, int]
    dil: tuple[int, int]
    rows: int  # staged rows
    cols: int  # columns of a phase

    @staticmethod
    def reach(rl: int, k: int, s: int, d: int) -> int:
        """Input rows (or columns) that rl consecutive outputs read over a kernel of k taps."""
        return (rl - 1) * s + (k - 1) * d + 1

    @staticmethod
    def of(kernel: tuple[int, int], stride: tuple[int, int], dil: tuple[int, int], rl: int, wl: int) -> Phases:
        return Phases(stride, dil, Phases.reach(rl, kernel[0], stride[0], dil[0]),
                      wl + ((kernel[1] - 1) * dil[1]) // stride[1])

    @property
    def size(self) -> int:
        """Elements of one channel's staged rows, every phase."""
        return self.stride[1] * self.rows * self.cols

    def tap(self, r: int, kh: int, kw: int) -> int:
        """The element (in a channel's staged rows) where output row r's window of tap (kh, kw) begins."""
        (sh, sw), (dh, dw) = self.stride, self.dil
        f, j0 = (kw * dw) % sw, (kw * dw) // sw
        return (f * self.rows + r * sh + kh * dh) * self.cols + j0

    def loads(self, x: View, b: int, ch: int, cl: int, kh: int, r0: int, rl: int, c0: int, pad: tuple[int, int],
              dst: int, what: str) -> list[list[Load] | None]:
        """Per phase, the DMA of channels ch .. ch + cl - 1 of image b of NCHW view `x` for output rows
        r0 .. r0 + rl - 1 and columns from c0 (a kernel of kh rows, padding `pad`) into the staged rows at
        SRAM `dst`, padded outside the image; None for a phase wholly in the padding."""
        (sh, sw), e = self.stride, x.dtype.itemsize
        rows = Span(0, Phases.reach(rl, kh, sh, self.dil[0]), 1, r0 * sh - pad[0], x.shape[2])
        return [window(x, b, ch, cl, rows, Span(c0, self.cols, sw, f - pad[1], x.shape[3]),
                       dst + f * self.rows * self.cols * e, self.size * e, what) for f in range(sw)]
