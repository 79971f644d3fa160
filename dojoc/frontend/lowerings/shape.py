"""The view family and indexing: view/reshape, permute, expand, slice, select, cat, split, squeeze,
unsqueeze, constant_pad_nd; embedding, gather, index_select and advanced indexing (index.Tensor)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dojoc.frontend.registry import LowerCtx, Unsupported, norm_dim, register
from dojoc.ir import IRDType, Op, Value

aten = torch.ops.aten


@register(aten.view.default, aten._unsafe_view.default, aten.reshape.default)
def view(ctx: LowerCtx, x: Value, size: Sequence[int]) -> Value:
    return ctx.reshape(x, size)


@register(aten.view_as.default)
def view_as(ctx: LowerCtx, x: Value, other: Value) -> Value:
    return ctx.reshape(x, other.type.shape)


@register(aten.flatten.using_ints)
def flatten(ctx: LowerCtx, x: Value, start_dim: int = 0, end_dim: int = -1) -> Value:
    r = x.type.rank
    if r == 0:
        return ctx.reshape(x, (1,))
    s, e = norm_dim(start_dim, r), norm_dim(end_dim, r)
    shape = x.type.shape
    return ctx.reshape(x, shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:])


@register(aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default)
def squeeze(ctx: LowerCtx, x: Value, dim: int | Sequence[int] | None = None) -> Value:
    r = x.type.rank
    ds = range(r) if dim is None else [norm_dim(i, r) for i in ([dim] if isinstance(dim, int) else dim)]
    drop = {i for i in ds if x.type.shape[i] == 1} if r else set()
    return ctx.reshape(x, tuple(s for i, s in enumerate(x.type.shape) if i not in drop))


@register(aten.unsqueeze.default)
def unsqueeze(ctx: LowerCtx, x: Value, dim: int) -> Value:
    d = norm_dim(dim, x.type.rank + 1)
    return ctx.reshape(x, x.type.shape[:d] + (1,) + x.type.shape[d:])


@register(aten.permute.default)
def permute(ctx: LowerCtx, x: Value, dims: Sequence[int]) -> Value:
    return ctx.permute(x, [norm_dim(d, x.type.rank) for d in dims])


@register(aten.transpose.int)
def transpose(ctx: LowerCtx, x: Value, d0: int, d1: int) -> Value:
    r = x.type.rank
    perm = list(range(r))
    if r:
        a, b = norm_dim(d0, r), norm_dim(d1, r)
        perm[a], perm[b] = perm[b], perm[a]
    return ctx.permute(x, perm)


@register(aten.expand.default)
def expand(ctx: LowerCtx, x: Value, size: Sequence[int], *, implicit: bool = False) -> Value:
    return ctx.expand(x, size)


@register(aten.expand_as.default)
def expand_as(ctx: LowerCtx, x: Value, other: Value) -> Value:
    return ctx.expand(x, other.type.shape)


def slice_value(ctx: LowerCtx, x: Value, d: int, start: int | None, end: int | None, step: int = 1) -> Value:
    """x[start:end:step] along d with Python's clamping of out-of-range bounds."""
    d = norm_dim(d, x.type.rank)
    n = x.type.shape[d]
    if step < 1:
        raise Unsupported(f"slice step {step}")
    s, e, _ = slice(start, end, step).indices(n)
    e = max(e, s)
    if (s, e, step) == (0, n, 1):
        return x
    return ctx.call(Op.SLICE, x, dim=d, start=s, end=e, step=int(step))


@register(aten.slice.Tensor)
def slice_tensor(ctx: LowerCtx, x: Value, dim: int = 0, start: int | None = None, end: int | None = None,
                 step: int = 1) -> Value:
    return slice_value(ctx, x, dim, start, end, step)


@register(aten.narrow.default)
def narrow(ctx: LowerCtx, x: Value, dim: int, start: int, length: int) -> Value:
    n = x.type.shape[norm_dim(dim, x.type.rank)]
    start = start + n if start < 0 else start
    return slice_value(ctx, x, dim, start, start + length)


@register(aten.select.int)
def select(ctx: LowerCtx, x: Value, dim: int, index: int) -> Value:
    d = norm_dim(dim, x.type.rank)
    n = x.type.shape[d]
    if not -n <= index < n:
        raise Unsupported(f"select index {index} out of range for size {n}")
    return ctx.call(Op.SELECT, x, dim=d, index=index % n)


@register(aten.cat.default)
def cat(ctx: LowerCtx, xs: Sequence[Value], dim: int = 0) -> Value:
    dt = ctx.out_dtype
    parts = [ctx.cast(v, dt) for v in xs if not (v.type.rank == 1 and v.type.shape[0] == 0)]
    if len(parts) == 1:
        return parts[0]
    return ctx.call(Op.CAT, *parts, dim=norm_dim(dim, parts[0].type.rank))


def _split(ctx: LowerCtx, x: Value, sizes: Sequence[int], d: int) -> list[Value]:
    out, start = [], 0
    for s in sizes:
        out.append(slice_value(ctx, x, d, start, start + s))
        start += s
    return out


@register(aten.split.Tensor)
def split(ctx: LowerCtx, x: Value, split_size: int, dim: int = 0) -> list[Value]:
    n = x.type.shape[norm_dim(dim, x.type.rank)]
    sizes = [min(split_size, n - i) for i in range(0, n, split_size)] or [0]
    return _split(ctx, x, sizes, dim)


@register(aten.split_with_sizes.default)
def split_with_sizes(ctx: LowerCtx, x: Value, split_sizes: Sequence[int], dim: int = 0) -> list[Value]:
    return _split(ctx, x, split_sizes, dim)


@register(aten.unbind.int)
def unbind(ctx: LowerCtx, x: Value, dim: int = 0) -> list[Value]:
    d = norm_dim(dim, x.type.rank)
    return [ctx.call(Op.SELECT, x, dim=d, index=i) for i in range(x.type.shape[d])]


@register(aten.constant_pad_nd.default)
def constant_pad_nd(ctx: LowerCtx, x: Value, pad: Sequence[int], value: float = 0) -> Value:
    r = x.type.rank
    if len(pad) % 2 or len(pad) > 2 * r:
        raise Unsupported(f"pad {list(pad)} for rank {r}")
    pads = [0] * (2 * r)
    for i in range(len(pad) // 2):   # torch lists (lo, hi) from the last dim backwards
        d = r - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        if lo < 0 or hi < 0:         # negative padding crops
            x = slice_value(ctx, x, d, max(-lo, 0), x.type.shape[d] - max(-hi, 0))
        pads[2 * d], pads[2 * d + 1] = max(lo, 0), max(hi, 0)
    if not any(pads):
        return x
    dt = x.type.dtype
    v: bool | int | float = bool(value) if dt == IRDType.BOOL else int(value) if dt.is_int else float(value)
    return ctx.call(Op.PAD, x, pads=tuple(pads), value=v)


# -- indexing ---------------------------------------------------------------------------------------

def _indices(ctx: LowerCtx, idx: Value) -> Value:
    if not idx.type.dtype.is_int:
        raise Unsupported(f"indices of type {idx.type} (integer indices only)")
    return idx


@register(aten.embedding.default)
def embedding(ctx: LowerCtx, weight: Value, indices: Value, padding_idx: int = -1, scale_grad_by_freq: bool = False,
              sparse: bool = False) -> Value:
    return ctx.call(Op.EMBEDDING, weight, _indices(ctx, indices))


@register(aten.gather.default)
def gather(ctx: LowerCtx, x: Value, dim: int, index: Value, *, sparse_grad: bool = False) -> Value:
    return ctx.call(Op.GATHER, x, _indices(ctx, index), dim=norm_dim(dim, x.type.rank))


@register(aten.index_select.default)
def index_select(ctx: LowerCtx, x: Value, dim: int, index: Value) -> Value:
    index = ctx.reshape(_indices(ctx, index), (index.type.numel,))
    return ctx.call(Op.INDEX_SELECT, x, index, dim=norm_dim(dim, x.type.rank))


def _wrap_negative(ctx: LowerCtx, idx: Value, size: int) -> Value:
    dt = idx.type.dtype
    neg = ctx.call(Op.LT, idx, ctx.const(0, dt))
    return ctx.call(Op.WHERE, neg, ctx.call(Op.ADD, idx, ctx.const(size, dt)), idx)


@register(aten.index.Tensor)
def index(ctx: LowerCtx, x: Value, indices: Sequence[Value | None]) -> Value:
    """x[i0, i1, ...] with integer index tensors: one index_select over the indexed dims flattened."""
    r = x.type.rank
    picked = [i for i, v in enumerate(indices) if v is not None]
    for i in picked:
        if indices[i].type.dtype == IRDType.BOOL:  # type: ignore[union-attr]
            raise Unsupported("boolean-mask indexing (its result size depends on the data)")
    rest = [i for i in range(r) if i not in picked]
    adjacent = picked == list(range(picked[0], picked[-1] + 1))
    xp = ctx.permute(x, picked + rest)
    sizes = [x.type.shape[i] for i in picked]
    flat: Value | None = None
    stride = 1
    for i, size in reversed(list(zip(picked, sizes, strict=True))):
        v = _wrap_negative(ctx, ctx.cast(_indices(ctx, indices[i]), IRDType.I64), size)  # type: ignore[arg-type]
        term = v if stride == 1 else ctx.call(Op.MUL, v, ctx.const(stride, IRDType.I64))
        flat = term if flat is None else ctx.call(Op.ADD, term, flat)
        stride *= size
    assert flat is not None
    bshape = flat.type.shape
    rest_shape = tuple(x.type.shape[i] for i in rest)
    table = ctx.reshape(xp, (stride,) + rest_shape)
    out = ctx.call(Op.INDEX_SELECT, table, ctx.reshape(flat, (flat.type.numel,)), dim=0)
    out = ctx.reshape(out, bshape + rest_shape)
    if adjacent and picked[0] > 0:  # torch keeps the result dims where the indexed dims were
        nb, p = len(bshape), picked[0]
        perm = list(range(nb, nb + p)) + list(range(nb)) + list(range(nb + p, nb + len(rest)))
        out = ctx.permute(out, perm)
    return out
