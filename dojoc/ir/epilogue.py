"""Epilogues: elementwise steps an op applies to its result before storing it (docs/ir.md, "Epilogues").

The `fuse` pass (dojoc/passes/fuse.py) moves the elementwise ops after a matmul, a conv2d or an
elementwise arithmetic op into that op's `epilogue` attribute, a tuple of steps applied in order:

- `("bias",)`: add the next extra input, a vector [N] along the last dim (matmul: a linear layer's bias);
- `("residual",)`: add the next extra input, a tensor of the result's type (ResNet's shortcut, BERT's
  residual);
- `("sub_residual",)`: subtract the next extra input, a tensor of the result's type (x - y, with x the
  result: the form of a residual that an add does not cover; y - x is not a step);
- `("add", c)`, `("sub", c)`, `("mul", c)`, `("div", c)`: add, subtract, multiply or divide by the
  scalar constant c (a float);
- `("clamp", lo, hi)`: min(max(x, lo), hi), each bound a float or None for absent (clamp, hardtanh,
  relu6, clamp_min, clamp_max);
- `("act", name)`: an activation, one of ACTIVATIONS (`gelu` is the erf form, `gelu_tanh` the tanh one);
- `("row_max", k, s, p)`: max over windows of k rows, s apart, of the [N, C, H, W] result padded with p rows
  of -inf each side: the row half of a max pool fused into the convolution that feeds it (passes/fuse_pool.py;
  the pool left after it takes the columns). Conv2d only, and the last step: it changes the result's rows.
- `("layer_norm", eps)`: layer norm over the last dim (biased variance), then the next two extra inputs,
  its weight and bias, vectors [N] along the last dim (BERT's LayerNorm after a residual add). Matmul
  only, and the last step: it needs whole rows, which the matmul kernels gather (summa.py reduces each
  row's statistics over its mesh row).

The extra inputs of `bias` and `residual` steps follow the op's own inputs, in step order; `fused` names
the node each step came from (one per step), so the mapping still lists the fused ops by name. The
reference (`apply`) rounds to the op's output type after the op and after every step, as the unfused
graph did; the machine keeps the FP32 accumulator between the steps of a matrix op (more accurate for bf16).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from dojoc.ir import reference as R
from dojoc.ir.ops import Attr, Attrs, AttrType, ShapeRule, _is_num
from dojoc.ir.shapes import require
from dojoc.ir.types import TensorType

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh")
RESIDUAL_STEPS = ("residual", "sub_residual")  # a tensor of the result's type, added or subtracted
NORM = "layer_norm"
ROW_MAX = "row_max"  # changes the result's shape: the last step


def row_max_rows(h: int, k: int, s: int, p: int) -> int:
    """The rows of a row_max step's result over h rows (windows of k, s apart, p of padding each side)."""
    return (h + 2 * p - k) // s + 1
# the steps that read extra inputs, and the names of those inputs (`split_inputs`), in order
EXTRAS = {"bias": ("bias",), "residual": ("residual",), "sub_residual": ("residual",),
          NORM: ("norm_weight", "norm_bias")}
INPUT_STEPS = tuple(EXTRAS)
SCALAR_STEPS = ("add", "sub", "mul", "div")  # with a scalar constant
# the steps that read nothing but the result: one or two vector instructions on the tile, in place
POINTWISE_STEPS = (*SCALAR_STEPS, "clamp", "act")
# the steps each kind of op may take: a matrix op accumulates in FP32 and can load more tiles per item;
# an elementwise op applies its steps to its result tile, which holds no extra operand
MATMUL_STEPS = (*INPUT_STEPS, *POINTWISE_STEPS)
CONV_STEPS = (*RESIDUAL_STEPS, *POINTWISE_STEPS, ROW_MAX)
VECTOR_INPUTS = ("bias", "norm_weight", "norm_bias")  # extra inputs that are vectors [N], not tensors
ELEMENTWISE_STEPS = POINTWISE_STEPS

Step = tuple[Any, ...]
V = TypeVar("V")


def _is_step(s: Any) -> bool:
    if not isinstance(s, tuple) or not s or not isinstance(s[0], str):
        return False
    kind, args = s[0], s[1:]
    if kind == NORM:
        return len(args) == 1 and _is_num(args[0]) and args[0] > 0
    if kind in INPUT_STEPS:
        return not args
    if kind in SCALAR_STEPS:
        return len(args) == 1 and _is_num(args[0])
    if kind == "clamp":
        return len(args) == 2 and all(a is None or _is_num(a) for a in args)
    if kind == ROW_MAX:  # (torch's pooling rule: padding at most half the window)
        return len(args) == 3 and all(isinstance(a, int) for a in args) and args[0] >= 1 and args[1] >= 1 \
            and 0 <= 2 * args[2] <= args[0]
    return kind == "act" and len(args) == 1 and args[0] in ACTIVATIONS


EPILOGUE = AttrType("tuple[step, ...]", lambda v: isinstance(v, tuple) and all(map(_is_step, v)))
NAMES = AttrType("tuple[str, ...]", lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v))
ATTRS = {"epilogue": Attr(EPILOGUE, ()), "fused": Attr(NAMES, ())}


def steps_of(attrs: Attrs) -> tuple[Step, ...]:
    """The epilogue steps of a node's attributes (none for ops without the attribute)."""
    return tuple(attrs.get("epilogue", ()))


def extra_count(steps: Sequence[Step]) -> int:
    """How many extra inputs the steps read."""
    return sum(len(EXTRAS.get(s[0], ())) for s in steps)


def split_inputs(inputs: Sequence[V], attrs: Attrs) -> tuple[tuple[V, ...], dict[str, V]]:
    """(the op's own inputs, {"bias", "residual", "norm_weight" or "norm_bias": its extra input}) of a
    node's inputs (at most one of each; a `sub_residual` step's input is the "residual" too: the kernels
    load it the same way)."""
    steps = steps_of(attrs)
    n = len(inputs) - extra_count(steps)
    kinds = [k for s in steps for k in EXTRAS.get(s[0], ())]
    return tuple(inputs[:n]), dict(zip(kinds, inputs[n:], strict=True))


def with_epilogue(rule: ShapeRule, arity: tuple[int, int], kinds: tuple[str, ...]) -> ShapeRule:
    """The shape rule of an op that may carry an epilogue: `rule` on its own inputs (`arity` of them),
    steps among `kinds`, each extra input checked against the result type, one `fused` name per step."""

    def shape(ins: list[TensorType], a: Attrs) -> tuple[TensorType, ...]:
        steps, fused = a["epilogue"], a["fused"]
        require(len(fused) == len(steps), f"fused names {len(fused)} ops but the epilogue has {len(steps)} steps")
        bad = [s[0] for s in steps if s[0] not in kinds]
        require(not bad, f"an epilogue step {bad[:1]} is not one this op takes ({', '.join(kinds)})")
        require(sum(s[0] == "bias" for s in steps) <= 1, "an epilogue takes at most one bias step")
        require(sum(s[0] in RESIDUAL_STEPS for s in steps) <= 1,
                "an epilogue takes at most one residual or sub_residual step")
        require(all(s[0] not in (NORM, ROW_MAX) for s in steps[:-1]),
                "a layer_norm or row_max step must be an epilogue's last")
        n = len(ins) - extra_count(steps)
        require(arity[0] <= n <= arity[1], f"takes {arity[0]}..{arity[1]} inputs besides the "
                f"{extra_count(steps)} of its epilogue, got {n}")
        out = rule(ins[:n], a)
        t = out[0]
        require(not steps or t.dtype.is_float, f"an epilogue needs a floating-point result, got {t}")
        extras = [k for s in steps for k in EXTRAS.get(s[0], ())]
        for kind, v in zip(extras, ins[n:], strict=True):
            want = TensorType((t.shape[-1],), t.dtype) if kind in VECTOR_INPUTS else t
            require(bool(t.shape) and v == want, f"the epilogue's {kind} must be {want}, got {v}")
        if steps and steps[-1][0] == ROW_MAX:
            k, st, pad = steps[-1][1:]
            require(t.rank == 4 and t.shape[2] + 2 * pad >= k, f"row_max {steps[-1][1:]} needs a result [N, C, H, W] "
                    f"with H + 2 * padding >= the window, got {t}")
            out = (t.with_shape((*t.shape[:2], row_max_rows(t.shape[2], k, st, pad), t.shape[3])), *out[1:])
        return out

    extra_doc = dict.fromkeys({"bias": "bias [N]", NORM: "layer norm weight and bias [N]"}.get(
        k, "residual of the result's type") for k in kinds if k in INPUT_STEPS)
    shape.__doc__ = (rule.__doc__ or "").strip() + (
        "; epilogue steps keep the type" + ("; extra inputs: " + ", ".join(extra_doc) if extra_doc else ""))
    return shape


def _gelu(approximate: str) -> Callable[[np.ndarray], np.ndarray]:
    attrs = Attrs(approximate=approximate)
    return lambda x: R.gelu([x], attrs)


ACT_REFS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{name: (lambda fn: lambda x: fn([x], Attrs()))(R.unary(name)) for name in ("relu", "silu", "sigmoid", "tanh")},
    "gelu": _gelu("none"), "gelu_tanh": _gelu("tanh"),
}


SCALAR_REFS: dict[str, Callable[[np.ndarray, np.float32], np.ndarray]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide}


def apply(x: np.ndarray, extras: Sequence[np.ndarray], steps: Sequence[Step],
          rnd: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The reference of an epilogue: each step on float32 operands (x already rounded to the output
    type), the result rounded by `rnd` (to the output type, widened again) after each step."""
    rest = iter(extras)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for s in steps:
            kind = s[0]
            if kind == "sub_residual":
                x = np.subtract(x, next(rest))
            elif kind == NORM:  # over the last dim, in float64 as the layer_norm op's reference
                w, b = next(rest), next(rest)
                x = R.layer_norm([x, w, b], Attrs(normalized_ndim=1, eps=s[1])).astype(np.float32)
            elif kind in INPUT_STEPS:  # a bias [N] broadcasts along the last dim
                x = np.add(x, next(rest))
            elif kind in SCALAR_STEPS:
                x = SCALAR_REFS[kind](x, np.float32(s[1]))
            elif kind == "clamp":  # one rounding after both bounds, as the clamp op rounds once
                x = R.clamp([x], Attrs(min=s[1], max=s[2]))
            elif kind == ROW_MAX:  # the max pool's reference over windows of rows alone
                x = R.max_pool2d([x], Attrs(kernel=(s[1], 1), stride=(s[2], 1), padding=(s[3], 0), dilation=(1, 1),
                                            ceil_mode=False))[0]
            else:
                x = ACT_REFS[s[1]](x)
            x = rnd(x)
    return x
