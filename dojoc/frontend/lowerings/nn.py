"""Reductions, softmax, normalizations, attention and pooling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dojoc.frontend.registry import LowerCtx, Unsupported, norm_dim, register
from dojoc.ir import IRDType, Op, Value

aten = torch.ops.aten


def _dims(d: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """ATen's dim argument normalized: None or [] reduces every dim."""
    if d is None or (isinstance(d, Sequence) and len(d) == 0):
        return tuple(range(rank))
    ds = [d] if isinstance(d, int) else list(d)
    return tuple(sorted({norm_dim(x, rank) for x in ds}))


def _reduce(ctx: LowerCtx, op: Op, x: Value, d: Any, keepdim: bool, **attrs: Any) -> Value:
    x = ctx.cast(x, ctx.out_dtype)
    return ctx.call(op, x, dims=_dims(d, x.type.rank), keepdim=bool(keepdim), **attrs)


@register(aten.sum.dim_IntList)
def sum_dim(ctx: LowerCtx, x: Value, dim: Any, keepdim: bool = False, *, dtype: Any = None) -> Value:
    return _reduce(ctx, Op.SUM, x, dim, keepdim)


@register(aten.sum.default)
def sum_all(ctx: LowerCtx, x: Value, *, dtype: Any = None) -> Value:
    return _reduce(ctx, Op.SUM, x, None, False)


@register(aten.mean.dim)
def mean_dim(ctx: LowerCtx, x: Value, dim: Any, keepdim: bool = False, *, dtype: Any = None) -> Value:
    return _reduce(ctx, Op.MEAN, x, dim, keepdim)


@register(aten.mean.default)
def mean_all(ctx: LowerCtx, x: Value, *, dtype: Any = None) -> Value:
    return _reduce(ctx, Op.MEAN, x, None, False)


@register(aten.amax.default)
def amax(ctx: LowerCtx, x: Value, dim: Any = (), keepdim: bool = False) -> Value:
    return _reduce(ctx, Op.AMAX, x, dim, keepdim)


@register(aten.amin.default)
def amin(ctx: LowerCtx, x: Value, dim: Any = (), keepdim: bool = False) -> Value:
    return _reduce(ctx, Op.AMIN, x, dim, keepdim)


@register(aten.max.default)
def max_all(ctx: LowerCtx, x: Value) -> Value:
    return _reduce(ctx, Op.AMAX, x, None, False)


@register(aten.min.default)
def min_all(ctx: LowerCtx, x: Value) -> Value:
    return _reduce(ctx, Op.AMIN, x, None, False)


@register(aten.var.correction)
def var(ctx: LowerCtx, x: Value, dim: Any = None, *, correction: float | None = None,
        keepdim: bool = False) -> Value:
    return _reduce(ctx, Op.VAR, x, dim, keepdim, correction=float(1 if correction is None else correction))


@register(aten.var.dim)
def var_dim(ctx: LowerCtx, x: Value, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> Value:
    return _reduce(ctx, Op.VAR, x, dim, keepdim, correction=1.0 if unbiased else 0.0)


@register(aten.cumsum.default)
def cumsum(ctx: LowerCtx, x: Value, dim: int, *, dtype: Any = None) -> Value:
    x = ctx.cast(x, ctx.out_dtype)
    return ctx.call(Op.CUMSUM, x, dim=norm_dim(dim, x.type.rank))


# -- softmax and normalizations ---------------------------------------------------------------------

@register(aten._softmax.default, aten.softmax.int)
def softmax(ctx: LowerCtx, x: Value, dim: int, half_to_float: Any = False) -> Value:
    x = ctx.cast(x, ctx.out_dtype)
    return ctx.call(Op.SOFTMAX, x, dim=norm_dim(dim, x.type.rank))


@register(aten._log_softmax.default, aten.log_softmax.int)
def log_softmax(ctx: LowerCtx, x: Value, dim: int, half_to_float: Any = False) -> Value:
    x = ctx.cast(x, ctx.out_dtype)
    return ctx.call(Op.LOG_SOFTMAX, x, dim=norm_dim(dim, x.type.rank))


def _affine(ctx: LowerCtx, v: Value | None, fill: float, shape: tuple[int, ...], like: Value) -> Value:
    return ctx.full(fill, shape, like.type.dtype) if v is None else ctx.cast(v, like.type.dtype)


def _layer_norm(ctx: LowerCtx, x: Value, normalized_shape: Sequence[int], w: Value | None,
                b: Value | None, eps: float) -> Value:
    n = len(normalized_shape)
    shape = x.type.shape[x.type.rank - n:]
    return ctx.call(Op.LAYER_NORM, x, _affine(ctx, w, 1.0, shape, x), _affine(ctx, b, 0.0, shape, x),
                    normalized_ndim=n, eps=float(eps))


@register(aten.layer_norm.default)
def layer_norm(ctx: LowerCtx, x: Value, normalized_shape: Sequence[int], weight: Value | None = None,
               bias: Value | None = None, eps: float = 1e-5, cudnn_enable: bool = True) -> Value:
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps)


@register(aten.native_layer_norm.default)
def native_layer_norm(ctx: LowerCtx, x: Value, normalized_shape: Sequence[int], weight: Value | None,
                      bias: Value | None, eps: float) -> tuple[Value, Value, Value]:
    """(out, mean, rstd); the statistics are computed as separate nodes that DCE drops when unused."""
    dims = tuple(range(x.type.rank - len(normalized_shape), x.type.rank))
    mean = ctx.call(Op.MEAN, x, dims=dims, keepdim=True)
    var = ctx.call(Op.VAR, x, dims=dims, keepdim=True, correction=0.0)
    rstd = ctx.call(Op.RSQRT, ctx.call(Op.ADD, var, ctx.const(eps, x.type.dtype)))
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps), mean, rstd


def _batch_norm(ctx: LowerCtx, x: Value, w: Value | None, b: Value | None, mean: Value | None,
                var: Value | None, eps: float) -> Value:
    if mean is None or var is None:
        raise Unsupported("batch norm without running statistics (training mode); call .eval()")
    c = (x.type.shape[1],)
    return ctx.call(Op.BATCH_NORM, x, _affine(ctx, w, 1.0, c, x), _affine(ctx, b, 0.0, c, x),
                    ctx.cast(mean, x.type.dtype), ctx.cast(var, x.type.dtype), eps=float(eps))


@register(aten._native_batch_norm_legit_no_training.default)
def batch_norm_no_training(ctx: LowerCtx, x: Value, w: Value | None, b: Value | None, mean: Value,
                           var: Value, momentum: float, eps: float) -> tuple[Value, None, None]:
    return _batch_norm(ctx, x, w, b, mean, var, eps), None, None


@register(aten.native_batch_norm.default, aten._native_batch_norm_legit.default)
def native_batch_norm(ctx: LowerCtx, x: Value, w: Value | None, b: Value | None, mean: Value | None,
                      var: Value | None, training: bool, momentum: float, eps: float) -> tuple[Value, None, None]:
    if training:
        raise Unsupported("batch norm in training mode; call .eval()")
    return _batch_norm(ctx, x, w, b, mean, var, eps), None, None


# -- attention --------------------------------------------------------------------------------------

def _sdpa(ctx: LowerCtx, q: Value, k: Value, v: Value, mask: Value | None, dropout_p: float, causal: bool,
          scale: float | None, enable_gqa: bool) -> Value:
    if dropout_p:
        raise Unsupported(f"attention dropout p={dropout_p}; call .eval()")
    s = float(scale) if scale is not None else 1.0 / math.sqrt(q.type.shape[-1])
    ins = [q, k, v]
    if mask is not None:
        ins.append(mask if mask.type.dtype == IRDType.BOOL else ctx.cast(mask, q.type.dtype))
    return ctx.call(Op.SDPA, *ins, causal=bool(causal), scale=s, enable_gqa=bool(enable_gqa))


@register(aten.scaled_dot_product_attention.default)
def sdpa(ctx: LowerCtx, q: Value, k: Value, v: Value, attn_mask: Value | None = None, dropout_p: float = 0.0,
         is_causal: bool = False, *, scale: float | None = None, enable_gqa: bool = False) -> Value:
    return _sdpa(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)


@register(aten._scaled_dot_product_flash_attention_for_cpu.default)
def sdpa_flash_cpu(ctx: LowerCtx, q: Value, k: Value, v: Value, dropout_p: float = 0.0, is_causal: bool = False,
                   *, attn_mask: Value | None = None, scale: float | None = None) -> tuple[Value, None]:
    return _sdpa(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, False), None


@register(aten._scaled_dot_product_attention_math.default)
def sdpa_math(ctx: LowerCtx, q: Value, k: Value, v: Value, attn_mask: Value | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, dropout_mask: Value | None = None, *,
              scale: float | None = None, enable_gqa: bool = False) -> tuple[Value, None]:
    return _sdpa(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa), None


# -- pooling ----------------------------------------------------------------------------------------

def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    t = [v] if isinstance(v, int) else list(v)
    return (int(t[0]), int(t[-1])) if t else (0, 0)


def _batched(ctx: LowerCtx, x: Value) -> Value:
    if x.type.rank == 3:
        return ctx.reshape(x, (1,) + x.type.shape)
    if x.type.rank != 4:
        raise Unsupported(f"2-D pooling of {x.type}")
    return x


def _unbatch(ctx: LowerCtx, v: Value, rank: int) -> Value:
    return ctx.reshape(v, v.type.shape[1:]) if rank == 3 else v


@register(aten.max_pool2d_with_indices.default)
def max_pool2d_with_indices(ctx: LowerCtx, x: Value, kernel_size: Sequence[int], stride: Sequence[int] = (),
                            padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> tuple[Value, Value]:
    k = _pair(kernel_size)
    node = ctx.add(Op.MAX_POOL2D, [_batched(ctx, x)], dict(kernel=k, stride=_pair(stride) if stride else k,
                                                           padding=_pair(padding), dilation=_pair(dilation),
                                                           ceil_mode=bool(ceil_mode)))
    return _unbatch(ctx, node.outputs[0], x.type.rank), _unbatch(ctx, node.outputs[1], x.type.rank)


@register(aten.avg_pool2d.default)
def avg_pool2d(ctx: LowerCtx, x: Value, kernel_size: Sequence[int], stride: Sequence[int] = (), padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None) -> Value:
    k = _pair(kernel_size)
    out = ctx.call(Op.AVG_POOL2D, _batched(ctx, x), kernel=k, stride=_pair(stride) if stride else k,
                   padding=_pair(padding), ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
                   divisor_override=divisor_override)
    return _unbatch(ctx, out, x.type.rank)


@register(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default)
def adaptive_avg_pool2d(ctx: LowerCtx, x: Value, output_size: Sequence[int]) -> Value:
    out = ctx.call(Op.ADAPTIVE_AVG_POOL2D, _batched(ctx, x), output_size=_pair(output_size))
    return _unbatch(ctx, out, x.type.rank)
