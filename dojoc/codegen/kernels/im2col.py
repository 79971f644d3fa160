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


@dataclass(frozen=True)
class Shifted:
    """A convolution whose B is its padded input itself (`summa` tile field `shift`), read once for every
    tap. Of stride 1, the output is computed over the padded grid (hp x wp pixels an image, image-major:
    hp = rows + ph, consecutive images sharing their ph zero rows), where tap (i, j) reads the padded input
    at a fixed offset i * dh * wp + j * dw. Of stride (sh, sw), the padded input is cut into its stride
    *phases* (phase (a, b): padded pixels (sh y + a, sw x + b)), the output is computed over the phases' grid
    (hp = ceil(padded rows / sh) x wp = ceil(padded columns / sw)), and tap (i, j) reads phase
    (i dh mod sh, j dw mod sw) at offset (i dh // sh) * wp + j dw // sw. So a K
    chunk is a range of input channels for every tap: its loader DMAs the channels' grid pixels n0 .. n0 + n +
    halo - 1 of every phase once (`pads`, one 1 x 1 window of stride (sh, sw) per phase, zeros from the DMA's
    padding; the B tile is phase after phase of the chunk's rows), and each core multiplies it once per tap,
    at the tap's phase and offset, by that tap's columns of the weight chunk. The grid's extra columns (and
    rows) are computed and never stored (`segments`); they cost (hp x wp) / (oh x ow) of the multiplies,
    against the input read once instead of once per tap (a 3 x 3 convolution of stride 2 reads 4 phases,
    not 9 windows). A slice beside a disabled core so narrow that its halo would outweigh its columns comes
    as a window per tap instead (`win`, over the grid)."""

    pads: tuple[Im2col, ...]  # per phase, the grid of the padded input's phase, as a 1 x 1 window's
    win: Im2col  # the windows of every tap, over the grid's columns
    offsets: tuple[int, ...]  # per tap, tap-major as the weights' columns: its window's offset in pixels
    phase: tuple[int, ...]  # per tap: the phase it reads (an index into pads)
    hp: int
    wp: int
    oh: int
    ow: int
    images: int

    @staticmethod
    def of(g: Im2col, kh: int, images: int) -> Shifted | None:
        """The shifted form of a convolution's implicit GEMM, or None when it has one tap, or no more taps
        than phases (its input would be read as often)."""
        (ph, pw), (dh, dw), (sh, sw) = g.pad, g.dil, g.stride
        taps = [(i * dh, j * dw) for i in range(kh) for j in range(g.kw)]
        used = sorted({(y % sh, x % sw) for y, x in taps})
        if len(taps) == 1 or len(taps) <= len(used) and (sh, sw) != (1, 1):
            return None
        # (of stride 1, consecutive images share their padding rows: image b's bottom ph rows, zeros, are image
        # b + 1's top ones, so an image takes h + ph rows of the grid; the last image's come as zero fills)
        hp = g.h + ph if (sh, sw) == (1, 1) else -(-(g.h + 2 * ph) // sh)
        wp = -(-(g.wd + 2 * pw) // sw)
        pads = tuple(Im2col(g.x, g.c, g.h, g.wd, 1, hp, wp, (sh, sw), (ph - a, pw - b), (1, 1)) for a, b in used)
        win = Im2col(g.x, g.c, g.h, g.wd, g.kw, hp, wp, (sh, sw), g.pad, g.dil)
        offsets = tuple(y // sh * wp + x // sw for y, x in taps)
        phase = tuple(used.index((y % sh, x % sw)) for y, x in taps)
        return Shifted(pads, win, offsets, phase, hp, wp, g.oh, g.ow, images)

    @property
    def phases(self) -> int:
        return len(self.pads)

    def chunk(self, k0: int, kl: int, n0: int, n: int, dst: int, stride: int) -> tuple[list[Load], list[Fill]]:
        """DMAs and zero fills of channels k0 .. k0 + kl - 1 of every phase's grid pixels n0 .. n0 + n - 1 at
        SRAM `dst`, phase after phase (rows `stride` bytes apart)."""
        loads: list[Load] = []
        fills: list[Fill] = []
        for i, pad in enumerate(self.pads):
            got = pad.chunk(k0, kl, n0, n, dst + i * kl * stride, stride)
            loads += got[0]
            fills += got[1]
        return loads, fills

    def slice_windows(self, n: int) -> bool:
        """Whether a slice of n columns comes as a window per tap (fewer columns than its halo would add)."""
        return self.taps * n < self.phases * (n + self.halo)

    def windows(self, e: int, k0: int, kl: int, n0: int, n: int, dst: int) -> tuple[list[Load], list[Fill]]:
        """DMAs and zero fills of channels k0 .. k0 + kl - 1 of every tap's window for columns n0 .. n0 + n - 1,
        tap after tap, at SRAM `dst` (rows n elements apart)."""
        loads: list[Load] = []
        fills: list[Fill] = []
        for t in range(self.taps):
            got = self.win.chunk(t * self.win.c + k0, kl, n0, n, dst + t * kl * n * e, n * e)
            loads += got[0]
            fills += got[1]
        return loads, fills

    @property
    def taps(self) -> int:
        return len(self.offsets)

    @property
    def halo(self) -> int:
        """Grid pixels a block of columns reads past its last one (the largest tap offset)."""
        return max(self.offsets)

    @property
    def n(self) -> int:
        """Columns of the matmul: every image's grid, but the last image's rows and columns past its last
        output pixel (whose windows would run past the input)."""
        return (self.images - 1) * self.hp * self.wp + (self.oh - 1) * self.wp + self.ow

    def segments(self, n0: int, n: int) -> list[tuple[int, int, int, int]]:
        """The output pixels among columns n0 .. n0 + n - 1: runs within one output row, as (image, first
        pixel in the image, pixels, offset of the run in the block)."""
        out = []
        per = self.hp * self.wp
        q = n0
        while q < n0 + n:
            img, r = divmod(q, per)
            y, x = divmod(r, self.wp)
            end = min(n0 + n, q + self.wp - x)  # the rest of this padded row
            if y < self.oh and x < self.ow:
                out.append((img, y * self.ow + x, min(end, q + self.ow - x) - q, q - n0))
            q = end
        return out
