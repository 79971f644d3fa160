"""Strided views of DRAM buffers, and the DMA transfers that move a box of a view.

Activations live in DRAM between ops (docs/compiler.md). A view op (reshape, permute, slice, select,
expand, squeeze) costs no kernel: it makes a new `View` over the same bytes, and the op that reads it
folds the strides into its DMA. `dma_transfers` splits a box of a view into the hardware's DMAs: at most
four dimensions each (merged where both sides are contiguous), counts of at most 65,535.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from isa.dtypes import DType

MAX_DIMS = 4
MAX_COUNT = (1 << 16) - 1  # the dmadim count field


@dataclass(frozen=True)
class View:
    """`shape` elements of `dtype` at DRAM byte address `base + sum(i_d * strides[d])` (strides in bytes)."""

    base: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: DType

    @staticmethod
    def dense(base: int, shape: tuple[int, ...], dtype: DType) -> View:
        """A row-major contiguous view."""
        strides, acc = [], dtype.itemsize
        for s in reversed(shape):
            strides.append(acc)
            acc *= s
        return View(base, tuple(shape), tuple(reversed(strides)), dtype)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def is_dense(self) -> bool:
        return self == View.dense(self.base, self.shape, self.dtype)

    # -- view ops (no data moves) -------------------------------------------------------------------

    def permute(self, perm: tuple[int, ...]) -> View:
        return View(self.base, tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm),
                    self.dtype)

    def slice(self, dim: int, start: int, stop: int, step: int = 1) -> View:
        n = max(0, -(-(stop - start) // step))
        shape = list(self.shape)
        strides = list(self.strides)
        shape[dim] = n
        base = self.base + start * self.strides[dim]
        strides[dim] = self.strides[dim] * step
        return View(base, tuple(shape), tuple(strides), self.dtype)

    def select(self, dim: int, index: int) -> View:
        v = self.slice(dim, index, index + 1)
        return View(v.base, v.shape[:dim] + v.shape[dim + 1:], v.strides[:dim] + v.strides[dim + 1:], v.dtype)

    def expand(self, shape: tuple[int, ...]) -> View:
        """numpy broadcasting to `shape` (new leading dims and size-1 dims get stride 0)."""
        lead = len(shape) - len(self.shape)
        old = (1,) * lead + self.shape
        strides = (0,) * lead + self.strides
        out = tuple(0 if (o == 1 and n != 1) else s for o, n, s in zip(old, shape, strides, strict=True))
        return View(self.base, tuple(shape), out, self.dtype)

    def reshape(self, shape: tuple[int, ...]) -> View | None:
        """The same elements in row-major order with another shape, or None when the strides forbid it
        (then the caller copies). Size-1 dims are free; other dims must split or merge contiguously."""
        if prod(shape) != self.numel:
            raise ValueError(f"cannot reshape {self.shape} to {shape}")
        # Group the old dims (without size-1 dims) into contiguous runs, then deal the new dims out.
        old = [(n, s) for n, s in zip(self.shape, self.strides, strict=True) if n != 1]
        new_strides: list[int] = []
        i = 0
        for n in shape:
            if n == 1:
                new_strides.append(0)
                continue
            if i >= len(old):
                return None
            # take old dims while their product is below n, requiring contiguity between them
            count, stride = old[i]
            while count < n and n % count == 0 and i + 1 < len(old):
                nxt_n, nxt_s = old[i + 1]
                if stride != nxt_n * nxt_s:
                    return None
                count, stride = count * nxt_n, nxt_s
                i += 1
            if count == n:
                new_strides.append(stride)
                i += 1
            elif count % n == 0:  # split: n is the outer part of this run
                inner = count // n
                new_strides.append(stride * inner)
                old[i] = (inner, stride)
            else:
                return None
        return View(self.base, tuple(shape), tuple(new_strides), self.dtype)


@dataclass(frozen=True)
class Transfer:
    """One DMA: source and destination addresses and dims (count, source stride, destination stride),
    outermost first, at most MAX_DIMS of them, each count <= MAX_COUNT."""

    src: int
    dst: int
    dims: tuple[tuple[int, int, int], ...]
    esize: int

    @property
    def nbytes(self) -> int:
        return prod(c for c, _, _ in self.dims) * self.esize


def merge_dims(dims: list[tuple[int, int, int]], esize: int) -> tuple[list[tuple[int, int, int]], int]:
    """Drop count-1 dims, merge dims contiguous on both sides, and widen the element when the innermost
    dim is contiguous on both sides (fewer, larger elements). Returns (dims, esize)."""
    out: list[tuple[int, int, int]] = []
    for c, s, d in dims:
        if c == 1:
            continue
        if out:
            pc, ps, pd = out[-1]
            if ps == c * s and pd == c * d:
                out[-1] = (pc * c, s, d)
                continue
        out.append((c, s, d))
    if not out:
        return [(1, esize, esize)], esize
    c, s, d = out[-1]
    if s == esize and d == esize:  # contiguous innermost: one element of `c * esize` bytes when it fits
        for w in (8, 4, 2):
            if w > esize and (c * esize) % w == 0:
                out[-1] = ((c * esize) // w, w, w)
                return out, w
    return out, esize


def transfers(src: int, dst: int, dims: list[tuple[int, int, int]], esize: int) -> list[Transfer]:
    """Split a strided copy of any rank into hardware DMAs (<= 4 dims, counts <= 65,535)."""
    dims, esize = merge_dims(dims, esize)
    # split over-long counts into an outer and an inner dim, or into pieces
    fixed: list[tuple[int, int, int]] = []
    for c, s, d in dims:
        if c <= MAX_COUNT:
            fixed.append((c, s, d))
            continue
        f = next((f for f in range(MAX_COUNT, 1, -1) if c % f == 0 and c // f <= MAX_COUNT), None)
        if f is not None:
            fixed += [(c // f, s * f, d * f), (f, s, d)]
        else:
            fixed.append((c, s, d))  # split into pieces below
    out: list[Transfer] = []

    def emit(s0: int, d0: int, ds: list[tuple[int, int, int]]) -> None:
        if len(ds) > MAX_DIMS or any(c > MAX_COUNT for c, _, _ in ds[:1]):
            c, s, d = ds[0]
            step = 1 if len(ds) > MAX_DIMS else MAX_COUNT
            for i in range(0, c, step):
                n = min(step, c - i)
                emit(s0 + i * s, d0 + i * d, ([(n, s, d)] if n > 1 else []) + ds[1:])
            return
        out.append(Transfer(s0, d0, tuple(ds), esize))

    emit(src, dst, fixed)
    return out
