"""The state shared by the kernels of one compile: buffers, SRAM plans, the program being built.

SRAM of each core is split in two (docs/compiler.md): the upper half holds resident weights, loaded
once before the first call; the lower half is the scratch arena of the op that runs now (ops are
separated by barriers, so every op may use all of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from dojoc.codegen.builder import CoreCode, ProgramBuilder
from dojoc.codegen.view import View, transfers
from dojoc.errors import SramOverflowError
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.types import IRDType
from isa import formats
from isa.dtypes import DType
from isa.machine import Machine
from isa.program import Tensor, TensorKind
from isa.table import COLS, ROWS, STRIDE

ALIGN = 64
MAX_ROWS = (1 << ROWS) - 1  # tile extents, from the instruction table's field widths
MAX_COLS = (1 << COLS) - 1
MAX_STRIDE = (1 << STRIDE) - 1  # tile row strides in bytes
# A core should have at least this many cycles of work in an op before the op spreads to another core:
# below it, the barrier and DMA latency of one more core (a few hundred cycles on d1) would be a large
# share of its time. Measured on ResNet-50 at 224 on d1: 4096 -> 1.06 M cycles, 1024 -> 0.93 M,
# 256 -> 0.92 M; 1024 keeps synchronisation under about a quarter of a core's time.
MIN_CYCLES_PER_CORE = 1024


@dataclass
class SramPlan:
    """One core's SRAM: resident bytes (upper half, growing up) and this op's scratch (lower half)."""

    size: int
    resident: int = 0
    scratch: int = 0
    peak_scratch: int = 0

    @property
    def half(self) -> int:
        return (self.size // 2) // ALIGN * ALIGN

    def alloc_resident(self, nbytes: int) -> int | None:
        """An address in the resident half, or None when it is full (then the kernel streams)."""
        n = -(-nbytes // ALIGN) * ALIGN
        if self.resident + n > self.size - self.half:
            return None
        addr = self.half + self.resident
        self.resident += n
        return addr

    def alloc(self, nbytes: int, what: str) -> int:
        """Scratch for the current op; SramOverflowError names the tensor when it cannot fit."""
        n = -(-nbytes // ALIGN) * ALIGN
        if self.scratch + n > self.half:
            raise SramOverflowError(f"{what} needs {nbytes:,} bytes of SRAM scratch but only "
                                    f"{self.half - self.scratch:,} of {self.half:,} are free; "
                                    "use a machine with more SRAM (--set sram_bytes=...) or smaller inputs")
        addr = self.scratch
        self.scratch += n
        self.peak_scratch = max(self.peak_scratch, self.scratch)
        return addr

    def scratch_free(self) -> int:
        return self.half - self.scratch

    @property
    def peak(self) -> int:
        return self.resident + self.peak_scratch


@dataclass
class Ctx:
    """Everything a kernel needs: the graph, the machine, buffers and the code of every core."""

    graph: Graph
    machine: Machine
    precision: str
    builder: ProgramBuilder
    views: dict[Value, View] = field(default_factory=dict)
    consts: dict[Value, float | int | bool] = field(default_factory=dict)
    tensors: list[Tensor] = field(default_factory=list)
    sram: list[SramPlan] = field(default_factory=list)
    load: list[CoreCode] = field(default_factory=list)  # resident-weight loading, before the first call
    used: set[int] = field(default_factory=set)
    epilogue: dict[Node, str] = field(default_factory=dict)  # matrix op -> fused activation mnemonic
    col_bias: dict[Node, np.ndarray] = field(default_factory=dict)  # matmul -> fused FP32 bias [N] per column
    ranges: dict[str, float] = field(default_factory=dict)  # value name -> max |x| on calibration inputs
    _dram_top: int = 0

    # -- types ----------------------------------------------------------------------------------------

    def storage(self, t: IRDType) -> DType:
        """The DRAM/SRAM type of an IR type at this precision (floats: FP32 or BF16; i64 narrows to i32)."""
        if t.is_float:
            return DType.F32 if self.precision == "fp32" else DType.BF16
        if t is IRDType.BOOL:
            return DType.BOOL
        return DType.I32

    @property
    def mxu_dtype(self) -> DType:
        return DType.F32 if self.precision == "fp32" else DType.BF16

    # -- DRAM -----------------------------------------------------------------------------------------

    def dram(self, name: str, kind: TensorKind, shape: tuple[int, ...], dtype: DType,
             data: bytes | None = None) -> View:
        """Allocate a dense DRAM tensor and declare it in the program."""
        addr = self._dram_top
        nbytes = prod(shape) * dtype.itemsize
        self._dram_top += -(-max(nbytes, 1) // ALIGN) * ALIGN
        if self._dram_top > self.machine.dram_bytes:
            raise SramOverflowError(f"tensor {name} does not fit in the machine's DRAM")
        self.tensors.append(Tensor(name, kind, addr, tuple(shape), dtype, data,
                                   f"{name}.bin" if data is not None else None))
        return View.dense(addr, tuple(shape), dtype)

    def weight(self, name: str, array: np.ndarray, dtype: DType) -> View:
        """A constant in DRAM, converted to `dtype` (RNE)."""
        bits = formats.encode(np.asarray(array), dtype)
        return self.dram(name, TensorKind.WEIGHT, tuple(array.shape), dtype, np.ascontiguousarray(bits).tobytes())

    # -- cores ----------------------------------------------------------------------------------------

    def cores_for(self, cycles: float, items: int) -> int:
        """How many cores an op of `cycles` total work over `items` independent pieces should use."""
        n = max(1, int(cycles // MIN_CYCLES_PER_CORE))
        return max(1, min(n, items, self.builder.participants))

    def core(self, c: int) -> CoreCode:
        self.used.add(c)
        return self.builder.cores[c]

    def begin_op(self) -> None:
        for s in self.sram:
            s.scratch = 0


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """`n` items in `parts` contiguous (start, count) ranges, as even as possible (no empty ranges)."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, s = [], 0
    for i in range(parts):
        c = q + (1 if i < r else 0)
        out.append((s, c))
        s += c
    return out


def boxes(shape: tuple[int, ...], max_elems: int, max_rows: int = MAX_ROWS,
          max_cols: int = MAX_COLS) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Cover `shape` with row-major boxes (starts, sizes): inner dims whole, one dim partial, outer dims 1,
    each box at most `max_elems` elements, its last dim at most `max_cols` and the product of the others
    at most `max_rows`, so a box is one 2-D tile (rows x cols) in SRAM."""
    shape = tuple(shape) or (1,)
    nd = len(shape)
    # the split dim k: dims after k are whole
    k, inner = nd - 1, 1
    while k >= 0:
        whole = inner * shape[k]
        rows = whole // shape[-1] if k < nd - 1 else 1
        if shape[-1] > max_cols or whole > max_elems or rows > max_rows:
            break
        inner = whole
        k -= 1
    out: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    if k < 0:
        return [((0,) * nd, shape)]
    if k == nd - 1:  # even the last dim does not fit: chunk it
        chunk = max(1, min(max_elems, max_cols))
    else:
        chunk = max(1, min(max_elems // inner, max_rows * shape[-1] // inner if k < nd - 1 else max_rows))
    outer = shape[:k]
    for idx in np.ndindex(*outer) if outer else [()]:
        for s in range(0, shape[k], chunk):
            n = min(chunk, shape[k] - s)
            out.append((tuple(idx) + (s,) + (0,) * (nd - k - 1), (1,) * k + (n,) + shape[k + 1:]))
    return out


def box_view(v: View, starts: tuple[int, ...], sizes: tuple[int, ...]) -> View:
    base = v.base + sum(s * st for s, st in zip(starts, v.strides, strict=True))
    return View(base, tuple(sizes), v.strides, v.dtype)


def load_view(cc: CoreCode, v: View, sram: int, sem: int) -> int:
    """DMA all of view `v` into a dense SRAM tile at `sram`; returns the number of DMAs (to wait for)."""
    dense = View.dense(sram, v.shape, v.dtype)
    ts = transfers(v.base, sram, [(n, s, d) for n, s, d in zip(v.shape, v.strides, dense.strides, strict=True)],
                   v.dtype.itemsize)
    for t in ts:
        cc.dma_load(t, sem)
    return len(ts)


def store_view(cc: CoreCode, sram: int, v: View, sem: int) -> int:
    """DMA a dense SRAM tile at `sram` to all of view `v`; returns the number of DMAs."""
    dense = View.dense(sram, v.shape, v.dtype)
    ts = transfers(sram, v.base, [(n, d, s) for n, s, d in zip(v.shape, v.strides, dense.strides, strict=True)],
                   v.dtype.itemsize)
    for t in ts:
        cc.dma_store(t, sem)
    return len(ts)


def tile2d(sizes: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of a dense box."""
    return (prod(sizes[:-1]) if len(sizes) > 1 else 1), (sizes[-1] if sizes else 1)

