"""Code for the epilogue steps a node carries (dojoc/ir/epilogue.py; the `fuse` pass puts them there).

The matrix kernels (kernels/mxu.py) apply them to the FP32 accumulator tile, loading the bias and
residual tiles themselves; the elementwise kernels apply the steps without extra inputs (scale,
activation) to the result tile. This module holds what both share: the instruction of a pointwise step
and its cost.
"""

from __future__ import annotations

from dojoc.codegen.builder import R_A, R_D, CoreCode
from dojoc.ir.epilogue import Step
from isa.costs import vector_cycles
from isa.dtypes import DType
from isa.machine import Machine

ACT_MNEMONICS = {"relu": "vrelu", "gelu": "vgelu", "gelu_tanh": "vgelut", "silu": "vsilu", "sigmoid": "vsigmoid",
                 "tanh": "vtanh"}
SCALE_MNEMONICS = {"mul": "vmuls", "div": "vdivs"}


def emit_pointwise(cc: CoreCode, step: Step, addr: int, rows: int, cols: int, stride: int, dt: DType) -> None:
    """One scale or activation step in place on the tile at `addr` (rows x cols, row stride in bytes)."""
    kind = step[0]
    tile = {"rd": cc.reg(R_D, addr), "ra": cc.reg(R_A, addr), "rows": rows, "cols": cols, "sd": stride, "sa": stride,
            "dt": dt}
    if kind in SCALE_MNEMONICS:
        cc.emit(SCALE_MNEMONICS[kind], imm=float(step[1]), **tile)
    elif kind == "act":
        cc.emit(ACT_MNEMONICS[step[1]], **tile)
    else:
        raise AssertionError(f"{kind} is not a pointwise epilogue step")


def scale_cycles(steps: tuple[Step, ...], elems: int, m: Machine) -> int:
    """Cost-model cycles of the scale steps on an FP32 tile of `elems` elements. Activations are left
    out, as they were when fusion lived in code generation, so that the decisions of the models that
    fused them already stay the same."""
    n = sum(1 for s in steps if s[0] in SCALE_MNEMONICS)
    return n * vector_cycles(elems, 4, elems * 4, elems * 4, m)
