"""Code for the epilogue steps a node carries (dojoc/ir/epilogue.py; the `fuse` pass puts them there).

The matrix kernels (kernels/mxu.py) apply them to the FP32 accumulator tile, loading the bias and
residual tiles themselves; the elementwise and depthwise kernels apply the pointwise steps (scalar
arithmetic, clamp, activation) to their result tile. This module holds what they share: the instructions
of a pointwise step and their cost, computed from those very instructions (`isa.costs.cycles`), and the
instructions of a `layer_norm` step (`norm_program`): the two-pass mean and variance over rows whose
columns lie in one or more FP32 tiles, with a hook where each row statistic is complete on this core
(the tiled kernel's tiles hold whole rows) or must be summed over the cores that hold the rest of the
row (SUMMA's mesh row, summa_emit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dojoc.codegen.builder import R_A, R_B, R_D, CoreCode
from dojoc.ir.epilogue import POINTWISE_STEPS, Step
from isa.costs import cycles
from isa.dtypes import DType
from isa.encoding import make
from isa.machine import Machine

F32 = DType.F32

ACT_MNEMONICS = {"relu": "vrelu", "gelu": "vgelu", "gelu_tanh": "vgelut", "silu": "vsilu", "sigmoid": "vsigmoid",
                 "tanh": "vtanh"}
SCALAR_MNEMONICS = {"add": "vadds", "sub": "vsubs", "mul": "vmuls", "div": "vdivs"}


def instructions(step: Step) -> list[tuple[str, float | None]]:
    """The (mnemonic, immediate or None) of each vector instruction a pointwise step takes, in order: a
    clamp is a `vmaxs` by its lower bound then a `vmins` by its upper one (an absent bound, none)."""
    kind = step[0]
    if kind in SCALAR_MNEMONICS:
        return [(SCALAR_MNEMONICS[kind], float(step[1]))]
    if kind == "clamp":
        return [(m, float(b)) for m, b in (("vmaxs", step[1]), ("vmins", step[2])) if b is not None]
    if kind == "act":
        return [(ACT_MNEMONICS[step[1]], None)]
    raise AssertionError(f"{kind} is not a pointwise epilogue step")


def emit_pointwise(cc: CoreCode, step: Step, addr: int, rows: int, cols: int, stride: int, dt: DType) -> None:
    """One pointwise step in place on the tile at `addr` (rows x cols, row stride in bytes)."""
    tile = {"rd": cc.reg(R_D, addr), "ra": cc.reg(R_A, addr), "rows": rows, "cols": cols, "sd": stride, "sa": stride,
            "dt": dt}
    for mnemonic, imm in instructions(step):
        cc.emit(mnemonic, **tile, **({"imm": imm} if imm is not None else {}))


def pointwise_cycles(steps: Iterable[Step], rows: int, cols: int, m: Machine, dt: DType = DType.F32) -> int:
    """Cycles of the pointwise steps among `steps` on a dense rows x cols tile of `dt` (an FP32
    accumulator unless told): the cost rule of each instruction they emit."""
    w = dt.itemsize
    return sum(cycles(make(mn, rd=R_D, ra=R_A, rows=rows, cols=cols, sd=cols * w, sa=cols * w, dt=dt,
                           **({"imm": imm} if imm is not None else {})), m)
               for s in steps if s[0] in POINTWISE_STEPS for mn, imm in instructions(s))


@dataclass(frozen=True)
class NormTile:
    """Columns of the rows a layer_norm step normalises: an FP32 tile [rows, cols] (dense, row stride
    cols x 4) at `addr`, and the FP32 weights and biases of its columns at `weight` and `bias`."""

    addr: int
    cols: int
    weight: int
    bias: int


REDUCE = "reduce"  # norm_program's marker: the statistic at the address given is this core's partial sum

Instr = tuple[str, dict[str, int], dict[str, Any]]  # mnemonic, address operands, other fields


def norm_program(tiles: list[NormTile], rows: int, n: int, eps: float,
                 stats: tuple[int, int, int], sq: int) -> Iterator[Instr]:
    """The instructions of a layer norm over `rows` rows of `n` elements in `tiles`, FP32 in place:
    the mean, centring, the mean square of the centred values, then x * rsqrt(var + eps) * weight + bias.
    `stats` are three FP32 vectors [rows] (mean, variance, a partial sum); `sq` a scratch FP32 tile as
    large as the largest. (REDUCE, {"rd": vector}, {}) marks where a row statistic must be summed over cores."""
    mean, var, part = stats
    col = {"rows": rows, "cols": 1, "sd": 4, "sa": 4, "dt": F32}

    def rsum(i: int, dst: int, src: int, cols: int) -> Iterator[Instr]:
        """Tile i's row sums at `src` into dst (the first tile) or added to it (through `part`)."""
        yield ("vrsum", {"rd": dst if i == 0 else part, "ra": src},
               {"rows": rows, "cols": cols, "sd": 4, "sa": cols * 4, "dt": F32, "axis": "row"})
        if i:
            yield ("vadd", {"rd": dst, "ra": dst, "rb": part}, {**col, "sb": 4})

    def each(mnemonic: str, operand: Callable[[NormTile], int], bcb: str) -> Iterator[Instr]:
        for t in tiles:
            yield (mnemonic, {"rd": t.addr, "ra": t.addr, "rb": operand(t)},
                   {"rows": rows, "cols": t.cols, "sd": t.cols * 4, "sa": t.cols * 4, "sb": 4 if bcb == "col" else 0,
                    "dt": F32, "bcb": bcb})

    for i, t in enumerate(tiles):
        yield from rsum(i, mean, t.addr, t.cols)
    yield (REDUCE, {"rd": mean}, {})
    yield ("vdivs", {"rd": mean, "ra": mean}, {**col, "imm": float(n)})
    yield from each("vsub", lambda t: mean, "col")
    for i, t in enumerate(tiles):  # each tile's squares, summed as they are made (sq holds one tile)
        yield ("vmul", {"rd": sq, "ra": t.addr, "rb": t.addr},
               {"rows": rows, "cols": t.cols, "sd": t.cols * 4, "sa": t.cols * 4, "sb": t.cols * 4, "dt": F32,
                "bcb": "none"})
        yield from rsum(i, var, sq, t.cols)
    yield (REDUCE, {"rd": var}, {})
    yield ("vdivs", {"rd": var, "ra": var}, {**col, "imm": float(n)})
    yield ("vadds", {"rd": var, "ra": var}, {**col, "imm": float(eps)})
    yield ("vrsqrt", {"rd": var, "ra": var}, col)
    yield from each("vmul", lambda t: var, "col")
    yield from each("vmul", lambda t: t.weight, "row")
    yield from each("vadd", lambda t: t.bias, "row")


_REGS = {"rd": R_D, "ra": R_A, "rb": R_B}


def emit_norm(cc: CoreCode, tiles: list[NormTile], rows: int, n: int, eps: float, stats: tuple[int, int, int],
              sq: int, reduce: Callable[[int], None] | None = None) -> None:
    """Emit `norm_program`; `reduce(vector)` sums a partial statistic over the cores that share the rows
    (None: the tiles hold whole rows)."""
    for mnemonic, addrs, fields in norm_program(tiles, rows, n, eps, stats, sq):
        if mnemonic == REDUCE:
            if reduce is not None:
                reduce(addrs["rd"])
            continue
        cc.emit(mnemonic, **{k: cc.reg(_REGS[k], a) for k, a in addrs.items()}, **fields)


def norm_cycles(widths: list[int], rows: int, m: Machine) -> int:
    """Cycles of a layer_norm step's instructions on this core (its exchanges not counted) over rows
    whose columns lie in tiles of `widths` columns: the cost rule of each instruction emitted."""
    tiles = [NormTile(0, w, 0, 0) for w in widths]
    return sum(cycles(make(mn, **{k: _REGS[k] for k in addrs}, **fields), m)
               for mn, addrs, fields in norm_program(tiles, rows, 1, 1e-5, (0, 0, 0), 0) if mn != REDUCE)
