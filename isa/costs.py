"""Cost rules: the cycles an instruction occupies its core, derived from the machine description.

The emulator charges exactly these cycles; the compiler's cost model calls the same functions, so the
two cannot disagree. Stalls (waiting for a semaphore, a barrier, DMA or network) are not part of an
instruction's cost: the emulator measures them.
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil

from isa.dtypes import DType
from isa.machine import Machine
from isa.table import Bcast, Cost, Instr

_R8 = 8  # the matrix unit is four 8x8 arrays: M, N and K are rounded up to multiples of 8


def up8(x: int) -> int:
    """`x` rounded up to the matrix unit's granularity (8)."""
    return -(-x // _R8) * _R8


def matmul_cycles(m: int, n: int, k: int, dt: DType, acc: bool, machine: Machine) -> int:
    """Cycles of an m x k by k x n multiply-accumulate with `dt` operands and an FP32 result."""
    kind = dt.mxu_kind or "fp32"
    compute = up8(m) * up8(n) * up8(k) / machine.macs_per_cycle(kind)
    read = (m * k + k * n) * dt.itemsize + (m * n * 4 if acc else 0)
    write = m * n * 4
    return ceil(max(compute, read / machine.sram_load_bytes_per_cycle,
                    write / machine.sram_store_bytes_per_cycle)) + machine.mxu_latency


def vector_cycles(elements: int, width: int, read_bytes: int, write_bytes: int, machine: Machine,
                  passes_per_vector: int = 1) -> int:
    """Cycles of a SIMD op over `elements` elements of `width` bytes, bounded by SRAM bandwidth."""
    passes = ceil(elements * width / machine.simd_bytes) * passes_per_vector
    return ceil(max(passes, read_bytes / machine.sram_load_bytes_per_cycle,
                    write_bytes / machine.sram_store_bytes_per_cycle)) + machine.simd_latency


def _bcast_elems(bc: Bcast, rows: int, cols: int) -> int:
    return {Bcast.NONE: rows * cols, Bcast.ROW: cols, Bcast.COL: rows, Bcast.SCALAR: 1}[bc]


def _vector(ins: Instr, m: Machine) -> int:
    d = ins.as_dict()
    sem = ins.spec.semantics
    rows, cols = d.get("rows", 1), d.get("cols", 1)
    n = rows * cols
    dt: DType = d.get("dt", DType.F32)
    w = dt.itemsize
    out_w = 1 if ins.spec.result_bool else w
    if sem == "vbinary":
        read = (_bcast_elems(d["bca"], rows, cols) + _bcast_elems(d["bcb"], rows, cols)) * w
    elif sem in ("vbinary_s", "vunary"):
        read = _bcast_elems(d["bca"], rows, cols) * w
    elif sem == "vsel":
        read = n * (2 * w + 1)
    elif sem == "vfill":
        read = 0
    else:
        raise AssertionError(f"no vector cost for {ins.spec.mnemonic}")
    passes = m.transcendental_passes if ins.spec.cost is Cost.TRANSCENDENTAL else 1
    return vector_cycles(n, max(w, out_w), read, n * out_w, m, passes)


def _reduce(ins: Instr, m: Machine) -> int:
    d = ins.as_dict()
    rows, cols, dt = d["rows"], d["cols"], d["dt"]
    n = rows * cols
    if ins.spec.semantics == "vscan":
        out = n
    else:
        out = rows if d["axis"].name == "ROW" else cols
    out_w = 4 if ins.spec.mnemonic.startswith("vrarg") else dt.itemsize
    return vector_cycles(n, dt.itemsize, n * dt.itemsize, out * out_w, m)


def _transpose(ins: Instr, m: Machine) -> int:
    n, w = ins["rows"] * ins["cols"], ins["dt"].itemsize
    return vector_cycles(n, w, n * w, n * w, m)


def _convert(ins: Instr, m: Machine) -> int:
    n = ins["rows"] * ins["cols"]
    ws, wd = ins["dts"].itemsize, ins["dtd"].itemsize
    return vector_cycles(n, max(ws, wd), n * ws, n * wd, m)


def _gather(ins: Instr, m: Machine) -> int:
    n, w = ins["n"] * ins["cols"], ins["dt"].itemsize
    return vector_cycles(n, w, n * w + ins["n"] * 4, n * w, m)


def _matmul(ins: Instr, m: Machine) -> int:
    return matmul_cycles(ins["m"], ins["n"], ins["k"], ins["dt"], bool(ins["acc"]), m)


RULES: dict[Cost, Callable[[Instr, Machine], int]] = {
    Cost.SCALAR: lambda ins, m: m.scalar_cycles,
    Cost.MATMUL: _matmul,
    Cost.VECTOR: _vector,
    Cost.TRANSCENDENTAL: _vector,
    Cost.REDUCE: _reduce,
    Cost.TRANSPOSE: _transpose,
    Cost.CONVERT: _convert,
    Cost.GATHER: _gather,
    Cost.ISSUE: lambda ins, m: m.issue_cycles,
    Cost.SEM: lambda ins, m: m.sem_cycles,
    Cost.BARRIER: lambda ins, m: m.sem_cycles,
}
assert set(RULES) == set(Cost), "every cost rule needs a function"


def cycles(ins: Instr, machine: Machine) -> int:
    """Cycles `ins` occupies its core (excluding stalls), from its cost rule and the machine."""
    return RULES[ins.spec.cost](ins, machine)


def link_cycles(nbytes: int, machine: Machine, d2d: bool = False) -> int:
    """Cycles a transfer of `nbytes` occupies one link (a zero-byte message still takes one cycle)."""
    width = machine.d2d_link_bytes_per_cycle if d2d else machine.link_bytes_per_cycle
    return max(1, ceil(nbytes / width))


def dram_cycles(nbytes: int, bytes_per_cycle: int) -> int:
    """Cycles one DMA request of `nbytes` occupies its DRAM port (at least one: a port serves one request
    at a time, so many small requests waste it)."""
    return max(1, ceil(nbytes / bytes_per_cycle))


def inject_cycles(nbytes: int, machine: Machine) -> int:
    """Cycles a transfer of `nbytes` occupies its source router's injection port (at least one)."""
    return max(1, ceil(nbytes / machine.inject_bytes_per_cycle))


def eject_cycles(nbytes: int, machine: Machine) -> int:
    """Cycles a transfer of `nbytes` occupies a destination router's ejection port (at least one)."""
    return max(1, ceil(nbytes / machine.eject_bytes_per_cycle))
