"""Code for the epilogue steps a node carries (dojoc/ir/epilogue.py; the `fuse` pass puts them there).

The matrix kernels (kernels/mxu.py) apply them to the FP32 accumulator tile, loading the bias and
residual tiles themselves; the elementwise and depthwise kernels apply the pointwise steps (scalar
arithmetic, clamp, activation) to their result tile. This module holds what they share: the instructions
of a pointwise step and their cost, computed from those very instructions (`isa.costs.cycles`).
"""

from __future__ import annotations

from collections.abc import Iterable

from dojoc.codegen.builder import R_A, R_D, CoreCode
from dojoc.ir.epilogue import POINTWISE_STEPS, Step
from isa.costs import cycles
from isa.dtypes import DType
from isa.encoding import make
from isa.machine import Machine

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
