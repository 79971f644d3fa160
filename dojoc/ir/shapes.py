"""Shape rules: output types from input types and attributes, one function per op family.

Every rule takes `(ins: list[TensorType], a: Attrs)` and returns a tuple of output types, or raises
`ShapeError` saying what is wrong. `dojoc.ir.table` assigns them to ops; `verify` and the graph
builder call them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dojoc.errors import ShapeError
from dojoc.ir.ops import Attrs
from dojoc.ir.types import IRDType, TensorType

T = TensorType
Out = tuple[TensorType, ...]


def require(cond: bool, message: str) -> None:
    """Raise ShapeError(message) unless cond."""
    if not cond:
        raise ShapeError(message)


def broadcast(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy broadcasting of shapes."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        require(len(dims) <= 1, f"shapes {' and '.join(map(str, map(tuple, shapes)))} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _same_dtype(ins: Sequence[TensorType]) -> IRDType:
    dts = {t.dtype for t in ins}
    require(len(dts) == 1, f"operand types {', '.join(map(str, ins))} differ in dtype; insert a cast")
    return ins[0].dtype


def _dim(d: int, rank: int, what: str = "dim") -> None:
    require(0 <= d < rank, f"{what} {d} is out of range for rank {rank} (dims are normalized, >= 0)")


# -- sources ----------------------------------------------------------------------------------------

def source(ins: list[T], a: Attrs) -> Out:
    """`shape`, `dtype` from the attributes"""
    return (T(tuple(a["shape"]), a["dtype"]),)


def const(ins: list[T], a: Attrs) -> Out:
    """`dtype[]` (a scalar)"""
    return (T((), a["dtype"]),)


# -- elementwise ------------------------------------------------------------------------------------

def unary_float(ins: list[T], a: Attrs) -> Out:
    """float x -> x's type"""
    require(ins[0].dtype.is_float, f"needs a floating-point operand, got {ins[0]}")
    return (ins[0],)


def unary_numeric(ins: list[T], a: Attrs) -> Out:
    """non-bool x -> x's type"""
    require(ins[0].dtype != IRDType.BOOL, f"needs a numeric operand, got {ins[0]}")
    return (ins[0],)


def unary_bool(ins: list[T], a: Attrs) -> Out:
    """bool x -> bool"""
    require(ins[0].dtype == IRDType.BOOL, f"needs a bool operand, got {ins[0]}")
    return (ins[0],)


def cast(ins: list[T], a: Attrs) -> Out:
    """x -> x's shape, `dtype`"""
    return (ins[0].with_dtype(a["dtype"]),)


def binary_arith(ins: list[T], a: Attrs) -> Out:
    """x, y of one non-bool dtype -> broadcast shape, that dtype"""
    dt = _same_dtype(ins)
    require(dt != IRDType.BOOL, f"needs numeric operands, got {ins[0]} and {ins[1]}")
    return (T(broadcast(ins[0].shape, ins[1].shape), dt),)


def div(ins: list[T], a: Attrs) -> Out:
    """as binary arithmetic; true division (no rounding_mode) needs floats"""
    out = binary_arith(ins, a)
    require(a["rounding_mode"] is not None or out[0].dtype.is_float,
            f"true division needs floating-point operands, got {ins[0]} and {ins[1]} (cast, or round)")
    return out


def compare(ins: list[T], a: Attrs) -> Out:
    """x, y of one dtype -> broadcast shape, bool"""
    _same_dtype(ins)
    return (T(broadcast(ins[0].shape, ins[1].shape), IRDType.BOOL),)


def logical(ins: list[T], a: Attrs) -> Out:
    """bool x, y -> broadcast shape, bool"""
    require(all(t.dtype == IRDType.BOOL for t in ins), f"needs bool operands, got {ins[0]} and {ins[1]}")
    return (T(broadcast(ins[0].shape, ins[1].shape), IRDType.BOOL),)


def where(ins: list[T], a: Attrs) -> Out:
    """bool cond; x, y of one dtype -> broadcast of all three, that dtype"""
    cond, x, y = ins
    require(cond.dtype == IRDType.BOOL, f"condition must be bool, got {cond}")
    return (T(broadcast(cond.shape, x.shape, y.shape), _same_dtype([x, y])),)


# -- contractions -----------------------------------------------------------------------------------

def matmul(ins: list[T], a: Attrs) -> Out:
    """[..., M, K] x [..., K, N] (ranks >= 2, one dtype) -> [broadcast batch..., M, N], out_dtype or theirs"""
    x, w = ins
    require(x.rank >= 2 and w.rank >= 2, f"operands must have rank >= 2, got {x} and {w}")
    dt = _same_dtype(ins)
    require(dt != IRDType.BOOL, "bool matmul is not defined")
    require(x.shape[-1] == w.shape[-2], f"contracted sizes differ: {x} @ {w}")
    batch = broadcast(x.shape[:-2], w.shape[:-2])
    return (T(batch + (x.shape[-2], w.shape[-1]), a["out_dtype"] or dt),)


def conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    """Output length of a convolution (floor mode)."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv2d(ins: list[T], a: Attrs) -> Out:
    """[N, C, H, W] x [O, C/groups, KH, KW] (+ [O]) -> [N, O, OH, OW], OH = (H + 2p - d(KH-1) - 1) // s + 1"""
    x, w = ins[0], ins[1]
    require(x.rank == 4 and w.rank == 4, f"input and weight must be 4-D (N,C,H,W / O,C/g,KH,KW): {x}, {w}")
    dt = _same_dtype(ins)
    require(dt.is_float, f"needs floating-point operands, got {dt}")
    g = a["groups"]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    require(g >= 1 and c % g == 0 and o % g == 0 and c // g == cg,
            f"groups={g} does not fit input channels {c}, weight {w}")
    require(min(a["stride"] + a["dilation"]) >= 1 and min(a["padding"]) >= 0, "bad stride/dilation/padding")
    if len(ins) == 3:
        require(ins[2].shape == (o,), f"bias must be [{o}], got {ins[2]}")
    oh = conv_out(h, kh, a["stride"][0], a["padding"][0], a["dilation"][0])
    ow = conv_out(wd, kw, a["stride"][1], a["padding"][1], a["dilation"][1])
    require(oh >= 1 and ow >= 1, f"kernel {kh}x{kw} does not fit input {h}x{wd} with this padding")
    return (T((n, o, oh, ow), a["out_dtype"] or dt),)


# -- reductions -------------------------------------------------------------------------------------

def reduce(ins: list[T], a: Attrs, *, float_only: bool = False) -> Out:
    """non-bool x -> x's dtype; dims removed (or kept as 1 with keepdim)"""
    x = ins[0]
    dims = a["dims"]
    require(len(set(dims)) == len(dims), f"repeated dims {dims}")
    for d in dims:
        _dim(d, x.rank)
    if float_only:
        require(x.dtype.is_float, f"needs a floating-point operand, got {x}")
    else:
        require(x.dtype != IRDType.BOOL, f"needs a numeric operand (cast bool first), got {x}")
    shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape) if a["keepdim"] or i not in dims)
    return (x.with_shape(shape),)


def reduce_float(ins: list[T], a: Attrs) -> Out:
    """float x -> x's dtype; dims removed (or kept as 1 with keepdim)"""
    return reduce(ins, a, float_only=True)


def cumsum(ins: list[T], a: Attrs) -> Out:
    """non-bool x -> x's type"""
    _dim(a["dim"], ins[0].rank)
    return unary_numeric(ins, a)


# -- normalizations ---------------------------------------------------------------------------------

def softmax(ins: list[T], a: Attrs) -> Out:
    """float x -> x's type"""
    _dim(a["dim"], ins[0].rank)
    return unary_float(ins, a)


def layer_norm(ins: list[T], a: Attrs) -> Out:
    """float x; weight, bias of x.shape[-normalized_ndim:] -> x's type"""
    x, w, b = ins
    n = a["normalized_ndim"]
    require(1 <= n <= x.rank, f"normalized_ndim={n} out of range for {x}")
    require(x.dtype.is_float and _same_dtype(ins) == x.dtype, f"needs floating operands of one dtype: {ins}")
    require(w.shape == b.shape == x.shape[x.rank - n:],
            f"weight {w} and bias {b} must have the normalized shape {x.shape[x.rank - n:]}")
    return (x,)


def batch_norm(ins: list[T], a: Attrs) -> Out:
    """float x [N, C, ...]; four [C] vectors -> x's type"""
    x = ins[0]
    require(x.rank >= 2, f"input must be (N, C, ...), got {x}")
    require(x.dtype.is_float and _same_dtype(ins) == x.dtype, f"needs floating operands of one dtype: {ins}")
    for t in ins[1:]:
        require(t.shape == (x.shape[1],), f"weight/bias/mean/var must be [{x.shape[1]}], got {t}")
    return (x,)


def sdpa(ins: list[T], a: Attrs) -> Out:
    """q [..., L, E], k [..., S, E], v [..., S, Ev], mask bool or q's dtype, broadcast to [..., L, S]
    -> [..., L, Ev]"""
    q, k, v = ins[:3]
    require(q.rank >= 2 and q.rank == k.rank == v.rank, f"q, k, v must have one rank >= 2: {q}, {k}, {v}")
    require(q.dtype.is_float and _same_dtype([q, k, v]) == q.dtype, "q, k, v must share a float dtype")
    require(q.shape[-1] == k.shape[-1] and k.shape[-2] == v.shape[-2], f"q {q}, k {k}, v {v} do not fit")
    qb, kb, vb = q.shape[:-2], k.shape[:-2], v.shape[:-2]
    require(kb == vb, f"k {k} and v {v} batch dims differ")
    if a["enable_gqa"] and q.rank >= 3 and qb != kb:
        require(qb[:-1] == kb[:-1] and qb[-1] % kb[-1] == 0, f"q heads {qb} not a multiple of kv heads {kb}")
    else:
        require(qb == kb, f"q {q} and k {k} batch dims differ")
    if len(ins) == 4:
        m = ins[3]
        require(m.dtype in (IRDType.BOOL, q.dtype), f"mask must be bool or {q.dtype}, got {m}")
        broadcast(m.shape, qb + (q.shape[-2], k.shape[-2]))
    return (T(qb + (q.shape[-2], v.shape[-1]), q.dtype),)


# -- pooling ----------------------------------------------------------------------------------------

def pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of a pooling window (torch's rule, including ceil mode)."""
    num = size + 2 * p - d * (k - 1) - 1
    out = (num + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool(x: T, a: Attrs, dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    require(x.rank == 4, f"input must be 4-D (N,C,H,W), got {x}")
    k, s, p = a["kernel"], a["stride"], a["padding"]
    require(min(k + s + dilation) >= 1 and min(p) >= 0, f"bad kernel/stride/padding {k}/{s}/{p}")
    require(all(2 * p[i] <= dilation[i] * (k[i] - 1) + 1 for i in (0, 1)),
            f"padding {p} must be at most half the kernel {k}")
    oh = pool_out(x.shape[2], k[0], s[0], p[0], dilation[0], a["ceil_mode"])
    ow = pool_out(x.shape[3], k[1], s[1], p[1], dilation[1], a["ceil_mode"])
    require(oh >= 1 and ow >= 1, f"window {k} does not fit input {x}")
    return x.shape[0], x.shape[1], oh, ow


def max_pool2d(ins: list[T], a: Attrs) -> Out:
    """[N, C, H, W] -> values [N, C, OH, OW] of x's dtype and i64 indices (torch's size rule, ceil mode too)"""
    x = ins[0]
    require(x.dtype != IRDType.BOOL, f"needs a numeric operand, got {x}")
    shape = _pool(x, a, a["dilation"])
    return (x.with_shape(shape), T(shape, IRDType.I64))


def avg_pool2d(ins: list[T], a: Attrs) -> Out:
    """float [N, C, H, W] -> [N, C, OH, OW] (torch's size rule, ceil mode too)"""
    require(ins[0].dtype.is_float, f"needs a floating-point operand, got {ins[0]}")
    require(a["divisor_override"] is None or a["divisor_override"] > 0, "divisor_override must be > 0")
    return (ins[0].with_shape(_pool(ins[0], a, (1, 1))),)


def adaptive_avg_pool2d(ins: list[T], a: Attrs) -> Out:
    """float [N, C, H, W] -> [N, C, *output_size]"""
    x = ins[0]
    require(x.rank == 4 and x.dtype.is_float, f"input must be a 4-D float tensor, got {x}")
    require(min(a["output_size"]) >= 1, f"bad output size {a['output_size']}")
    return (x.with_shape(x.shape[:2] + a["output_size"]),)


# -- indexing ---------------------------------------------------------------------------------------

def _index_type(t: T) -> None:
    require(t.dtype.is_int, f"indices must be i32 or i64, got {t}")


def embedding(ins: list[T], a: Attrs) -> Out:
    """weight [V, D], int indices -> indices.shape + [D], weight's dtype"""
    w, idx = ins
    require(w.rank == 2, f"weight must be 2-D, got {w}")
    _index_type(idx)
    return (T(idx.shape + (w.shape[1],), w.dtype),)


def gather(ins: list[T], a: Attrs) -> Out:
    """x, int index of x's rank (no larger outside dim) -> index.shape, x's dtype"""
    x, idx = ins
    _index_type(idx)
    require(x.rank == idx.rank, f"input {x} and index {idx} must have one rank")
    _dim(a["dim"], x.rank)
    require(all(i <= s for d, (i, s) in enumerate(zip(idx.shape, x.shape, strict=True)) if d != a["dim"]),
            f"index {idx} is larger than input {x} outside dim {a['dim']}")
    return (idx.with_dtype(x.dtype),)


def index_select(ins: list[T], a: Attrs) -> Out:
    """x, 1-D int index -> x.shape with dim's size = len(index)"""
    x, idx = ins
    _index_type(idx)
    require(idx.rank == 1, f"index must be 1-D, got {idx}")
    _dim(a["dim"], x.rank)
    d = a["dim"]
    return (x.with_shape(x.shape[:d] + idx.shape + x.shape[d + 1:]),)


# -- data movement ----------------------------------------------------------------------------------

def reshape(ins: list[T], a: Attrs) -> Out:
    """x -> `shape` (explicit sizes, same element count)"""
    shape = a["shape"]
    require(all(s >= 0 for s in shape) and math.prod(shape) == ins[0].numel,
            f"cannot reshape {ins[0]} to {shape} (sizes must be explicit and keep the element count)")
    return (ins[0].with_shape(shape),)


def permute(ins: list[T], a: Attrs) -> Out:
    """x -> x.shape permuted"""
    perm = a["perm"]
    require(sorted(perm) == list(range(ins[0].rank)), f"{perm} is not a permutation of {ins[0].rank} dims")
    return (ins[0].with_shape(tuple(ins[0].shape[p] for p in perm)),)


def expand(ins: list[T], a: Attrs) -> Out:
    """x -> `shape` (size-1 dims broadcast, leading dims added)"""
    x, shape = ins[0], a["shape"]
    lead = len(shape) - x.rank
    require(lead >= 0 and all(s in (shape[lead + i], 1) for i, s in enumerate(x.shape)),
            f"cannot expand {x} to {shape} (sizes must be explicit)")
    return (x.with_shape(shape),)


def slice_(ins: list[T], a: Attrs) -> Out:
    """x -> size ceil((end - start) / step) on dim"""
    x, d = ins[0], a["dim"]
    _dim(d, x.rank)
    start, end, step = a["start"], a["end"], a["step"]
    require(0 <= start <= end <= x.shape[d] and step >= 1,
            f"slice {start}:{end}:{step} is not normalized for size {x.shape[d]} (0 <= start <= end <= size)")
    n = (end - start + step - 1) // step
    return (x.with_shape(x.shape[:d] + (n,) + x.shape[d + 1:]),)


def select(ins: list[T], a: Attrs) -> Out:
    """x -> x.shape without dim"""
    x, d = ins[0], a["dim"]
    _dim(d, x.rank)
    require(0 <= a["index"] < x.shape[d], f"index {a['index']} out of range for size {x.shape[d]}")
    return (x.with_shape(x.shape[:d] + x.shape[d + 1:]),)


def cat(ins: list[T], a: Attrs) -> Out:
    """xs of one dtype and rank, equal but on dim -> sizes summed on dim"""
    d, first = a["dim"], ins[0]
    _dim(d, first.rank)
    _same_dtype(ins)
    for t in ins:
        require(t.rank == first.rank and all(s == f for i, (s, f) in enumerate(zip(t.shape, first.shape, strict=True))
                                            if i != d), f"cannot concatenate {first} and {t} on dim {d}")
    return (first.with_shape(first.shape[:d] + (sum(t.shape[d] for t in ins),) + first.shape[d + 1:]),)


def pad(ins: list[T], a: Attrs) -> Out:
    """x -> each dim grown by its (lo, hi)"""
    x, pads = ins[0], a["pads"]
    require(len(pads) == 2 * x.rank and min(pads, default=0) >= 0,
            f"pads {pads} must be (lo, hi) >= 0 for each of the {x.rank} dims, in dim order")
    return (x.with_shape(tuple(s + pads[2 * i] + pads[2 * i + 1] for i, s in enumerate(x.shape))),)
