"""Tensor factories (arange, full, zeros, scalar_tensor, ...) and size queries (sym_size, ...).

Sizes are static, so size queries return Python ints and factories become parameters or
broadcast constants, which constant folding then treats like any other constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dojoc.frontend.registry import LowerCtx, norm_dim, register
from dojoc.ir import IRDType, Value

aten = torch.ops.aten


@register(aten.sym_size.int)
def sym_size(ctx: LowerCtx, x: Value, dim: int) -> int:
    return x.type.shape[norm_dim(dim, x.type.rank)]


@register(aten.sym_numel.default)
def sym_numel(ctx: LowerCtx, x: Value) -> int:
    return x.type.numel


@register(aten.sym_stride.int)
def sym_stride(ctx: LowerCtx, x: Value, dim: int) -> int:
    return int(np.prod(x.type.shape[norm_dim(dim, x.type.rank) + 1:], dtype=np.int64))


@register(aten.arange.start_step, aten.arange.start, aten.arange.default)
def arange(ctx: LowerCtx, *args: Any, **kwargs: Any) -> Value:
    dt = ctx.out_dtype
    nums = [a for a in args if isinstance(a, int | float)]
    if dt == IRDType.BF16:
        values = np.arange(*nums, dtype=np.float32).astype(dt.numpy)
    else:
        values = np.arange(*nums, dtype=np.float64 if dt.is_float else np.int64).astype(dt.numpy)
    assert values.shape == ctx.out_type.shape, (values.shape, ctx.out_type)
    return ctx.param(f"{ctx.fx_node.name if ctx.fx_node else 'arange'}", values)


def _fill(ctx: LowerCtx, value: Any) -> Value:
    return ctx.full(value, ctx.out_type.shape, ctx.out_dtype)


@register(aten.full.default)
def full(ctx: LowerCtx, size: Sequence[int], fill_value: Any, **kwargs: Any) -> Value:
    return _fill(ctx, fill_value)


@register(aten.full_like.default)
def full_like(ctx: LowerCtx, x: Value, fill_value: Any, **kwargs: Any) -> Value:
    return _fill(ctx, fill_value)


@register(aten.zeros.default, aten.empty.memory_format, aten.new_zeros.default, aten.new_empty.default)
def zeros(ctx: LowerCtx, *args: Any, **kwargs: Any) -> Value:
    return _fill(ctx, 0)


@register(aten.zeros_like.default, aten.empty_like.default)
def zeros_like(ctx: LowerCtx, x: Value, **kwargs: Any) -> Value:
    return _fill(ctx, 0)


@register(aten.ones.default, aten.new_ones.default)
def ones(ctx: LowerCtx, *args: Any, **kwargs: Any) -> Value:
    return _fill(ctx, 1)


@register(aten.ones_like.default)
def ones_like(ctx: LowerCtx, x: Value, **kwargs: Any) -> Value:
    return _fill(ctx, 1)


@register(aten.scalar_tensor.default)
def scalar_tensor(ctx: LowerCtx, s: Any, **kwargs: Any) -> Value:
    return _fill(ctx, s)


@register(aten.new_full.default)
def new_full(ctx: LowerCtx, x: Value, size: Sequence[int], fill_value: Any, **kwargs: Any) -> Value:
    return _fill(ctx, fill_value)
