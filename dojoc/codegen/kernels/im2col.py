"""A convolution as a matrix multiplication whose B operand is never built in DRAM (implicit GEMM):

    out[o, (image, pixel)] = W[o, (tap, channel)] @ X_col[(tap, channel), (image, pixel)]

`Im2col` gives the DMAs that bring a chunk of X_col's rows (a range of (tap, channel) indices, tap-major
like the weights' compile-time layout [O, KH*KW*C]) for a range of its columns (output pixels of the
batch, image-major, row-major within an image) into a dense SRAM tile [rows, columns]: per tap of the
chunk, per image, per run of whole output rows (with a partial row before and after), one shifted-window
DMA (window.py), whose destination padding stands in for the input outside the image. A window that reads
only padding is a zero fill. summa.py multiplies with it over the whole mesh (conv.py chooses that
kernel when its cost model predicts it faster).
"""

from __future__ import annotations

from dataclasses import dataclass

from dojoc.codegen.kernels.mxu import Load
from dojoc.codegen.kernels.window import Span, window
from dojoc.codegen.view import View


@dataclass(frozen=True)
class Fill:
    """A zero fill of `rows` x `cols` elements at `dst` (row stride `stride` bytes)."""

    dst: int
    rows: int
    cols: int
    stride: int


@dataclass(frozen=True)
class Im2col:
    """The convolution geometry that X_col's chunks need (groups = 1)."""

    x: View  # the NCHW input
    c: int
    h: int
    wd: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    pad: tuple[int, int]
    dil: tuple[int, int]

    def runs(self, n0: int, n: int) -> list[tuple[int, int, int, int]]:
        """The columns n0 .. n0 + n - 1 cut into runs that a window DMA can take: the rest of a partial output
        row, whole rows, or the head of a row; each as (image, first pixel in the image, pixels, offset of
        the run in the block)."""
        hw = self.oh * self.ow
        out = []
        p, end = n0, n0 + n
        while p < end:
            img, q = divmod(p, hw)
            r, c = divmod(q, self.ow)
            if c:  # the rest of a partial row
                count = min(self.ow - c, end - p)
            else:  # whole rows, or the head of the last one
                rows = min((end - p) // self.ow, self.oh - r)
                count = rows * self.ow if rows else end - p
            out.append((img, q, count, p - n0))
            p += count
        return out

    def chunk(self, k0: int, kl: int, n0: int, n: int, dst: int, stride: int) -> tuple[list[Load], list[Fill]]:
        """DMAs and zero fills that write X_col[k0 .. k0 + kl, n0 .. n0 + n] at SRAM `dst`, row stride
        `stride` bytes (rows are (tap, channel), tap-major)."""
        e = self.x.dtype.itemsize
        loads: list[Load] = []
        fills: list[Fill] = []
        runs = self.runs(n0, n)
        k = k0
        while k < k0 + kl:
            tap, ch = divmod(k, self.c)
            cl = min(self.c - ch, k0 + kl - k)
            kh, kw = divmod(tap, self.kw)
            row = dst + (k - k0) * stride
            for img, q, count, off in runs:
                r, c = divmod(q, self.ow)
                nr, nc = (count // self.ow, self.ow) if count >= self.ow else (1, count)
                rows = Span(r, nr, self.stride[0], kh * self.dil[0] - self.pad[0], self.h)
                cols = Span(c, nc, self.stride[1], kw * self.dil[1] - self.pad[1], self.wd)
                got = window(self.x, img, ch, cl, rows, cols, row + off * e, stride, "conv2d")
                if got is None:
                    fills.append(Fill(row + off * e, cl, count, stride))
                else:
                    loads += got
            k += cl
        return loads, fills
