"""Matrix products and convolutions: mm, bmm, matmul, addmm, baddbmm, linear, convolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dojoc.frontend.registry import LowerCtx, Unsupported, register
from dojoc.ir import Op, Value

aten = torch.ops.aten


def _require_float(*vs: Value) -> None:
    for v in vs:
        if not v.type.dtype.is_float:
            raise Unsupported(f"matrix product of {v.type} (only float32/bfloat16)")


def matmul_values(ctx: LowerCtx, a: Value, b: Value) -> Value:
    """torch.matmul semantics (1-D operands included) on IR MATMUL, which takes ranks >= 2."""
    _require_float(a, b)
    a2 = ctx.reshape(a, (1,) + a.type.shape) if a.type.rank == 1 else a
    b2 = ctx.reshape(b, b.type.shape + (1,)) if b.type.rank == 1 else b
    out = ctx.call(Op.MATMUL, a2, b2)
    shape = out.type.shape
    if a.type.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.type.rank == 1:
        shape = shape[:-1]
    return ctx.reshape(out, shape)


@register(aten.mm.default, aten.bmm.default, aten.matmul.default)
def mm(ctx: LowerCtx, a: Value, b: Value) -> Value:
    return matmul_values(ctx, a, b)


def _add_scaled(ctx: LowerCtx, prod: Value, bias: Value, beta: float, alpha: float) -> Value:
    dt = prod.type.dtype
    if alpha != 1:
        prod = ctx.call(Op.MUL, prod, ctx.const(alpha, dt))
    if beta == 0:
        return prod
    bias = ctx.cast(bias, dt)
    if beta != 1:
        bias = ctx.call(Op.MUL, bias, ctx.const(beta, dt))
    return ctx.call(Op.ADD, prod, bias)


@register(aten.addmm.default, aten.baddbmm.default)
def addmm(ctx: LowerCtx, bias: Value, a: Value, b: Value, *, beta: float = 1, alpha: float = 1) -> Value:
    return _add_scaled(ctx, matmul_values(ctx, a, b), bias, beta, alpha)


@register(aten.linear.default)
def linear(ctx: LowerCtx, x: Value, w: Value, b: Value | None = None) -> Value:
    wt = ctx.permute(w, (1, 0)) if w.type.rank == 2 else w
    out = matmul_values(ctx, x, wt)
    return out if b is None else ctx.call(Op.ADD, out, b)


@register(aten.t.default)
def t(ctx: LowerCtx, x: Value) -> Value:
    return ctx.permute(x, (1, 0)) if x.type.rank == 2 else x


@register(aten.convolution.default)
def convolution(ctx: LowerCtx, x: Value, w: Value, b: Value | None, stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], transposed: bool,
                output_padding: Sequence[int], groups: int) -> Value:
    if transposed:
        raise Unsupported("transposed convolution")
    _require_float(x, w)
    nd = w.type.rank - 2
    if nd not in (1, 2) or x.type.rank != nd + 2:
        raise Unsupported(f"{nd}-D convolution of {x.type} (conv1d and conv2d only)")

    def two(v: Sequence[int], fill: int) -> tuple[int, int]:
        t = tuple(v) if len(v) == nd else tuple(v) * nd
        return (fill, t[0]) if nd == 1 else (t[0], t[1])
    if nd == 1:  # conv1d as conv2d over [N, C, 1, L]
        x = ctx.reshape(x, x.type.shape[:2] + (1,) + x.type.shape[2:])
        w = ctx.reshape(w, w.type.shape[:2] + (1,) + w.type.shape[2:])
    inputs = [x, w] + ([ctx.cast(b, x.type.dtype)] if b is not None else [])
    out = ctx.call(Op.CONV2D, *inputs, stride=two(stride, 1), padding=two(padding, 0),
                   dilation=two(dilation, 1), groups=int(groups))
    if nd == 1:
        out = ctx.reshape(out, out.type.shape[:2] + out.type.shape[3:])
    return out
