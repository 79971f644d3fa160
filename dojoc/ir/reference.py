"""numpy reference semantics of every IR op: the numbers the emulator and codegen are checked against.

Functions take `(xs: list[np.ndarray], a: Attrs)`. Floating inputs arrive as float32 (the interpreter
widens bf16); results may be any numeric dtype: the interpreter casts them to the output type.
Contractions, reductions and normalizations accumulate in float64; everything else runs in float32,
as eager PyTorch does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from dojoc.ir.ops import Attrs
from dojoc.ir.shapes import pool_out

A = np.ndarray
F64 = np.float64


def _f64(x: A) -> A:
    return x.astype(F64) if x.dtype.kind == "f" else x


# -- sources are the interpreter's business; these are for completeness -----------------------------

def const(xs: list[A], a: Attrs) -> A:
    return np.asarray(a["value"])


# -- unary ------------------------------------------------------------------------------------------

def gelu(xs: list[A], a: Attrs) -> A:
    x = xs[0]
    if a["approximate"] == "tanh":
        return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)))
    return 0.5 * x * (1.0 + special.erf(x / np.float32(math.sqrt(2.0))))


def clamp(xs: list[A], a: Attrs) -> A:
    x = xs[0]
    lo, hi = a["min"], a["max"]
    if lo is not None:
        x = np.maximum(x, np.asarray(lo, x.dtype))
    if hi is not None:
        x = np.minimum(x, np.asarray(hi, x.dtype))
    return x


def _sigmoid(x: A) -> A:
    return special.expit(x)


def rsqrt(xs: list[A], a: Attrs) -> A:
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(xs[0])


def cast(xs: list[A], a: Attrs) -> A:
    return xs[0].astype(a["dtype"].numpy)


UNARY: dict[str, Any] = {
    "relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "silu": lambda x: x * _sigmoid(x),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "neg": np.negative,
    "erf": special.erf,
    "logical_not": np.logical_not,
}


def unary(name: str) -> Any:
    fn = UNARY[name]

    def ref(xs: list[A], a: Attrs) -> A:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(xs[0])
    ref.__name__ = name
    return ref


# -- binary -----------------------------------------------------------------------------------------

def _div(x: A, y: A, mode: str | None) -> A:
    if mode is None:
        return np.true_divide(x, y)
    if x.dtype.kind == "f":
        q = np.true_divide(x, y)
        return np.floor(q) if mode == "floor" else np.trunc(q)
    if mode == "floor":
        return np.floor_divide(x, y)
    return (np.sign(x) * np.sign(y) * (np.abs(x) // np.abs(y))).astype(x.dtype)


BINARY: dict[str, Any] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}


def binary(name: str) -> Any:
    def ref(xs: list[A], a: Attrs) -> A:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if name == "div":
                return _div(xs[0], xs[1], a["rounding_mode"])
            return BINARY[name](xs[0], xs[1])
    ref.__name__ = name
    return ref


def where(xs: list[A], a: Attrs) -> A:
    return np.where(xs[0], xs[1], xs[2])


# -- contractions -----------------------------------------------------------------------------------

def matmul(xs: list[A], a: Attrs) -> A:
    return np.matmul(_f64(xs[0]), _f64(xs[1]))


def conv2d(xs: list[A], a: Attrs) -> A:
    """Grouped 2-D convolution by im2col and one batched matmul over the groups."""
    x, w = _f64(xs[0]), _f64(xs[1])
    (sh, sw), (ph, pw), (dh, dw), g = a["stride"], a["padding"], a["dilation"], a["groups"]
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]                       # N, C, OH, OW, KH, KW
    oh, ow = win.shape[2], win.shape[3]
    cols = win.reshape(n, g, cg, oh, ow, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    cols = cols.reshape(g, n * oh * ow, cg * kh * kw)
    wg = w.reshape(g, o // g, cg * kh * kw).transpose(0, 2, 1)
    out = np.matmul(cols, wg)                                      # G, N*OH*OW, O/G
    out = out.reshape(g, n, oh, ow, o // g).transpose(1, 0, 4, 2, 3).reshape(n, o, oh, ow)
    if len(xs) == 3:
        out = out + _f64(xs[2])[None, :, None, None]
    return out


# -- reductions -------------------------------------------------------------------------------------

def reduction(name: str) -> Any:
    def ref(xs: list[A], a: Attrs) -> A:
        x, dims, keep = xs[0], a["dims"], a["keepdim"]
        if name == "sum":
            return np.sum(_f64(x), axis=dims, keepdims=keep)
        if name == "mean":
            return np.mean(_f64(x), axis=dims, keepdims=keep)
        if name == "var":
            n = math.prod(x.shape[d] for d in dims)
            x64 = _f64(x)
            dev = x64 - np.mean(x64, axis=dims, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.sum(dev * dev, axis=dims, keepdims=keep) / max(n - a["correction"], 0)
        fn = np.max if name == "amax" else np.min
        return fn(x, axis=dims, keepdims=keep)
    ref.__name__ = name
    return ref


def cumsum(xs: list[A], a: Attrs) -> A:
    return np.cumsum(_f64(xs[0]), axis=a["dim"])


# -- normalizations ---------------------------------------------------------------------------------

def _softmax(x: A, dim: int) -> A:
    x = x.astype(F64)
    e = np.exp(x - np.max(x, axis=dim, keepdims=True))
    return e / np.sum(e, axis=dim, keepdims=True)


def softmax(xs: list[A], a: Attrs) -> A:
    return _softmax(xs[0], a["dim"])


def log_softmax(xs: list[A], a: Attrs) -> A:
    x = xs[0].astype(F64)
    m = np.max(x, axis=a["dim"], keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=a["dim"], keepdims=True))


def layer_norm(xs: list[A], a: Attrs) -> A:
    x, w, b = (_f64(t) for t in xs)
    axes = tuple(range(x.ndim - a["normalized_ndim"], x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + a["eps"]) * w + b


def batch_norm(xs: list[A], a: Attrs) -> A:
    x, w, b, mean, var = (_f64(t) for t in xs)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = w / np.sqrt(var + a["eps"])
    return x * scale.reshape(shape) + (b - mean * scale).reshape(shape)


def sdpa(xs: list[A], a: Attrs) -> A:
    q, k, v = (_f64(t) for t in xs[:3])
    if a["enable_gqa"] and q.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, rep, axis=-3), np.repeat(v, rep, axis=-3)
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    L, S = q.shape[-2], k.shape[-2]
    if a["causal"]:
        s = np.where(np.tril(np.ones((L, S), dtype=bool)), s, -np.inf)
    if len(xs) == 4:
        m = xs[3]
        s = np.where(m, s, -np.inf) if m.dtype == np.bool_ else s + _f64(m)
    with np.errstate(invalid="ignore"):
        p = _softmax(s, -1)
    p = np.where(np.all(s == -np.inf, axis=-1, keepdims=True), 0.0, p)  # fully masked rows: 0, as torch
    return np.matmul(p, v)


# -- pooling ----------------------------------------------------------------------------------------

def _windows(x: A, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], d: tuple[int, int],
             out: tuple[int, int], fill: float) -> A:
    """N, C, OH, OW, KH, KW windows of x padded with `fill` (extra on the far side for ceil mode)."""
    eh, ew = d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1
    extra_h = max(0, (out[0] - 1) * s[0] + eh - (x.shape[2] + 2 * p[0]))
    extra_w = max(0, (out[1] - 1) * s[1] + ew - (x.shape[3] + 2 * p[1]))
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0] + extra_h), (p[1], p[1] + extra_w)), constant_values=fill)
    win = sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::s[0], ::s[1], ::d[0], ::d[1]]
    return win[:, :, :out[0], :out[1]]


def max_pool2d(xs: list[A], a: Attrs) -> tuple[A, A]:
    x = xs[0]
    k, s, p, d, cm = a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"]
    W = x.shape[3]
    oh, ow = (pool_out(x.shape[2 + i], k[i], s[i], p[i], d[i], cm) for i in (0, 1))
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = _windows(x, k, s, p, d, (oh, ow), low)
    flat = win.reshape(win.shape[:4] + (-1,))
    arg = np.argmax(flat, axis=-1)                               # first maximum, as torch
    vals = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    ki, kj = arg // k[1], arg % k[1]
    rows = np.arange(oh)[:, None] * s[0] - p[0] + ki * d[0]
    cols = np.arange(ow)[None, :] * s[1] - p[1] + kj * d[1]
    return vals, (rows * W + cols).astype(np.int64)


def avg_pool2d(xs: list[A], a: Attrs) -> A:
    x = _f64(xs[0])
    k, s, p, cm = a["kernel"], a["stride"], a["padding"], a["ceil_mode"]
    H, W = x.shape[2], x.shape[3]
    oh, ow = (pool_out(x.shape[2 + i], k[i], s[i], p[i], 1, cm) for i in (0, 1))
    sums = _windows(x, k, s, p, (1, 1), (oh, ow), 0.0).sum(axis=(-1, -2))
    if a["divisor_override"] is not None:
        return sums / a["divisor_override"]

    def counts(n_out: int, size: int, kk: int, ss: int, pp: int) -> A:
        start = np.arange(n_out) * ss - pp
        end = np.minimum(start + kk, size + pp)
        full = end - start
        clipped = np.minimum(end, size) - np.maximum(start, 0)
        return full if a["count_include_pad"] else clipped
    div = counts(oh, H, k[0], s[0], p[0])[:, None] * counts(ow, W, k[1], s[1], p[1])[None, :]
    return sums / div


def adaptive_avg_pool2d(xs: list[A], a: Attrs) -> A:
    x = _f64(xs[0])
    (oh, ow), (H, W) = a["output_size"], x.shape[2:]
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
        for j in range(ow):
            w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


# -- indexing ---------------------------------------------------------------------------------------

def embedding(xs: list[A], a: Attrs) -> A:
    return xs[0][xs[1]]


def gather(xs: list[A], a: Attrs) -> A:
    x, idx, d = xs[0], xs[1], a["dim"]
    x = x[tuple(slice(None) if i == d else slice(0, n) for i, n in enumerate(idx.shape))]
    return np.take_along_axis(x, idx, axis=d)


def index_select(xs: list[A], a: Attrs) -> A:
    return np.take(xs[0], xs[1], axis=a["dim"])


# -- data movement ----------------------------------------------------------------------------------

def reshape(xs: list[A], a: Attrs) -> A:
    return xs[0].reshape(a["shape"])


def permute(xs: list[A], a: Attrs) -> A:
    return np.transpose(xs[0], a["perm"])


def expand(xs: list[A], a: Attrs) -> A:
    return np.broadcast_to(xs[0], a["shape"])


def slice_(xs: list[A], a: Attrs) -> A:
    sl = [slice(None)] * xs[0].ndim
    sl[a["dim"]] = slice(a["start"], a["end"], a["step"])
    return xs[0][tuple(sl)]


def select(xs: list[A], a: Attrs) -> A:
    return np.take(xs[0], a["index"], axis=a["dim"])


def cat(xs: list[A], a: Attrs) -> A:
    return np.concatenate(xs, axis=a["dim"])


def pad(xs: list[A], a: Attrs) -> A:
    p = a["pads"]
    return np.pad(xs[0], [(p[2 * i], p[2 * i + 1]) for i in range(xs[0].ndim)], constant_values=a["value"])
