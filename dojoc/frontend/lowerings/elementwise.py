"""Elementwise ATen ops: arithmetic, comparisons, logical ops, activations, casts and identities.

Type promotion is torch's: arithmetic computes in the node's output dtype (from FX meta), comparisons
in the promoted dtype of their operands, logical ops on bools. Python scalars become CONST nodes.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from dojoc.frontend.registry import LowerCtx, Unsupported, ir_dtype, register, torch_dtype
from dojoc.ir import IRDType, Op, Value

aten = torch.ops.aten
Num = bool | int | float
Operand = Value | Num


def _promoted(a: Operand, b: Operand) -> IRDType:
    """torch's result dtype of a binary op on these operands (0-d tensors and scalars rank lower)."""
    def probe(x: Operand) -> Any:
        if isinstance(x, Value):
            return torch.empty(x.type.shape, dtype=torch_dtype(x.type.dtype), device="meta")
        return x
    return ir_dtype(torch.result_type(probe(a), probe(b)))


def _scaled(ctx: LowerCtx, y: Operand, alpha: Num, dt: IRDType) -> Value:
    if alpha == 1:
        return ctx.tensor(y, dt)
    if not isinstance(y, Value):
        return ctx.const(y * alpha, dt)
    return ctx.call(Op.MUL, ctx.tensor(y, dt), ctx.const(alpha, dt))


def _arith(ctx: LowerCtx, op: Op, x: Operand, y: Operand, **attrs: Any) -> Value:
    dt = ctx.out_dtype
    return ctx.call(op, ctx.tensor(x, dt), ctx.tensor(y, dt), **attrs)


@register(aten.add.Tensor, aten.add.Scalar)
def add(ctx: LowerCtx, x: Operand, y: Operand, alpha: Num = 1) -> Value:
    dt = ctx.out_dtype
    return ctx.call(Op.ADD, ctx.tensor(x, dt), _scaled(ctx, y, alpha, dt))


@register(aten.sub.Tensor, aten.sub.Scalar)
def sub(ctx: LowerCtx, x: Operand, y: Operand, alpha: Num = 1) -> Value:
    dt = ctx.out_dtype
    return ctx.call(Op.SUB, ctx.tensor(x, dt), _scaled(ctx, y, alpha, dt))


@register(aten.rsub.Tensor, aten.rsub.Scalar)
def rsub(ctx: LowerCtx, x: Operand, y: Operand, alpha: Num = 1) -> Value:
    dt = ctx.out_dtype
    return ctx.call(Op.SUB, ctx.tensor(y, dt), _scaled(ctx, x, alpha, dt))


@register(aten.mul.Tensor, aten.mul.Scalar)
def mul(ctx: LowerCtx, x: Operand, y: Operand) -> Value:
    return _arith(ctx, Op.MUL, x, y)


@register(aten.div.Tensor, aten.div.Scalar)
def div(ctx: LowerCtx, x: Operand, y: Operand) -> Value:
    return _arith(ctx, Op.DIV, x, y)


@register(aten.div.Tensor_mode, aten.div.Scalar_mode)
def div_mode(ctx: LowerCtx, x: Operand, y: Operand, *, rounding_mode: str | None = None) -> Value:
    return _arith(ctx, Op.DIV, x, y, rounding_mode=rounding_mode)


@register(aten.remainder.Tensor, aten.remainder.Scalar)
def remainder(ctx: LowerCtx, x: Operand, y: Operand) -> Value:
    """Python's modulo (the result takes the divisor's sign): x - floor(x / y) * y."""
    dt = ctx.out_dtype
    xv, yv = ctx.tensor(x, dt), ctx.tensor(y, dt)
    q = ctx.call(Op.DIV, xv, yv, rounding_mode="floor")
    return ctx.call(Op.SUB, xv, ctx.call(Op.MUL, q, yv))


@register(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar)
def pow_(ctx: LowerCtx, x: Operand, y: Operand) -> Value:
    return _arith(ctx, Op.POW, x, y)


@register(aten.maximum.default)
def maximum(ctx: LowerCtx, x: Value, y: Value) -> Value:
    return _arith(ctx, Op.MAXIMUM, x, y)


@register(aten.minimum.default)
def minimum(ctx: LowerCtx, x: Value, y: Value) -> Value:
    return _arith(ctx, Op.MINIMUM, x, y)


def _compare(op: Op) -> Any:
    def lower(ctx: LowerCtx, x: Operand, y: Operand) -> Value:
        dt = _promoted(x, y)
        return ctx.call(op, ctx.tensor(x, dt), ctx.tensor(y, dt))
    lower.__name__ = op.value
    return lower


for _name, _op in [("eq", Op.EQ), ("ne", Op.NE), ("lt", Op.LT), ("le", Op.LE), ("gt", Op.GT), ("ge", Op.GE)]:
    register(getattr(aten, _name).Tensor, getattr(aten, _name).Scalar)(_compare(_op))


def _logical(op: Op, *, bitwise: bool) -> Any:
    def lower(ctx: LowerCtx, x: Operand, y: Operand) -> Value:
        if bitwise and ctx.out_dtype != IRDType.BOOL:
            raise Unsupported("bitwise ops on integers (only on bool)")
        return ctx.call(op, ctx.tensor(x, IRDType.BOOL), ctx.tensor(y, IRDType.BOOL))
    lower.__name__ = op.value
    return lower


for _name, _op in [("and", Op.LOGICAL_AND), ("or", Op.LOGICAL_OR), ("xor", Op.LOGICAL_XOR)]:
    register(getattr(aten, f"logical_{_name}").default)(_logical(_op, bitwise=False))
    register(getattr(aten, f"bitwise_{_name}").Tensor, getattr(aten, f"bitwise_{_name}").Scalar)(
        _logical(_op, bitwise=True))


@register(aten.logical_not.default, aten.bitwise_not.default)
def logical_not(ctx: LowerCtx, x: Value) -> Value:
    if ctx.fx_node is not None and ctx.fx_node.target == aten.bitwise_not.default \
            and x.type.dtype != IRDType.BOOL:
        raise Unsupported("bitwise_not on integers (only on bool)")
    return ctx.call(Op.LOGICAL_NOT, ctx.cast(x, IRDType.BOOL))


@register(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def where(ctx: LowerCtx, cond: Value, x: Operand, y: Operand) -> Value:
    dt = ctx.out_dtype
    return ctx.call(Op.WHERE, ctx.cast(cond, IRDType.BOOL), ctx.tensor(x, dt), ctx.tensor(y, dt))


@register(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def masked_fill(ctx: LowerCtx, x: Value, mask: Value, value: Operand) -> Value:
    dt = ctx.out_dtype
    return ctx.call(Op.WHERE, ctx.cast(mask, IRDType.BOOL), ctx.tensor(value, dt), ctx.cast(x, dt))


# -- unary ------------------------------------------------------------------------------------------

def _unary(op: Op) -> Any:
    def lower(ctx: LowerCtx, x: Value) -> Value:
        return ctx.call(op, ctx.cast(x, ctx.out_dtype))
    lower.__name__ = op.value
    return lower


for _target, _op in [
    (aten.relu.default, Op.RELU), (aten.sigmoid.default, Op.SIGMOID), (aten.tanh.default, Op.TANH),
    (aten.exp.default, Op.EXP), (aten.log.default, Op.LOG), (aten.sqrt.default, Op.SQRT),
    (aten.rsqrt.default, Op.RSQRT), (aten.abs.default, Op.ABS), (aten.neg.default, Op.NEG),
    (aten.erf.default, Op.ERF), (aten.silu.default, Op.SILU),
]:
    register(_target)(_unary(_op))


@register(aten.leaky_relu.default)
def leaky_relu(ctx: LowerCtx, x: Value, negative_slope: float = 0.01) -> Value:
    dt = ctx.out_dtype
    positive = ctx.call(Op.GT, x, ctx.const(0, dt))
    return ctx.call(Op.WHERE, positive, x, ctx.call(Op.MUL, x, ctx.const(negative_slope, dt)))


@register(aten.reciprocal.default)
def reciprocal(ctx: LowerCtx, x: Value) -> Value:
    dt = ctx.out_dtype
    return ctx.call(Op.DIV, ctx.const(1.0, dt), ctx.cast(x, dt))


@register(aten.gelu.default)
def gelu(ctx: LowerCtx, x: Value, *, approximate: str = "none") -> Value:
    return ctx.call(Op.GELU, x, approximate=approximate)


def _bound(b: Any) -> float | None:
    if b is None:
        return None
    if isinstance(b, Value):
        raise Unsupported("clamp with tensor bounds")
    return float(b)


@register(aten.clamp.default)
def clamp(ctx: LowerCtx, x: Value, min: Num | None = None, max: Num | None = None) -> Value:
    return ctx.call(Op.CLAMP, ctx.cast(x, ctx.out_dtype), min=_bound(min), max=_bound(max))


@register(aten.hardtanh.default)
def hardtanh(ctx: LowerCtx, x: Value, min_val: Num = -1.0, max_val: Num = 1.0) -> Value:
    return clamp(ctx, x, min_val, max_val)


@register(aten.clamp_min.default)
def clamp_min(ctx: LowerCtx, x: Value, min: Num) -> Value:
    return clamp(ctx, x, min, None)


@register(aten.clamp_max.default)
def clamp_max(ctx: LowerCtx, x: Value, max: Num) -> Value:
    return clamp(ctx, x, None, max)


@register(aten.clamp.Tensor)
def clamp_tensor(ctx: LowerCtx, x: Value, min: Value | None = None, max: Value | None = None) -> Value:
    dt = ctx.out_dtype
    out = ctx.cast(x, dt)
    if min is not None:
        out = ctx.call(Op.MAXIMUM, out, ctx.cast(min, dt))
    if max is not None:
        out = ctx.call(Op.MINIMUM, out, ctx.cast(max, dt))
    return out


# -- casts and identities ---------------------------------------------------------------------------

@register(aten._to_copy.default)
def to_copy(ctx: LowerCtx, x: Value, **kwargs: Any) -> Value:
    return ctx.cast(x, ctx.out_dtype)


@register(aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default, aten.detach.default,
          aten.contiguous.default)
def identity(ctx: LowerCtx, x: Value, *args: Any, **kwargs: Any) -> Value:
    return x


@register(aten.dropout.default)
def dropout(ctx: LowerCtx, x: Value, p: float, train: bool) -> Value:
    if train and p > 0:
        raise Unsupported("dropout in training mode; call .eval()")
    return x


@register(aten._assert_tensor_metadata.default, aten._assert_scalar.default,
          aten.sym_constrain_range_for_size.default, aten._assert_async.msg)
def drop(ctx: LowerCtx, *args: Any, **kwargs: Any) -> None:
    return None


# -- Python operators on shapes and tuples (FX emits them for sizes and multi-output ops) ----------

@register(operator.getitem)
def getitem(ctx: LowerCtx, x: Any, i: int) -> Any:
    return x[i]


def _scalar_op(fn: Any) -> Any:
    def lower(ctx: LowerCtx, *args: Any) -> Any:
        if any(isinstance(a, Value) for a in args):
            raise Unsupported(f"{fn.__name__} on a tensor in Python")
        return fn(*args)
    lower.__name__ = fn.__name__
    return lower


for _fn in [operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod,
            operator.neg, operator.pow, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
            operator.ge]:
    register(_fn)(_scalar_op(_fn))
