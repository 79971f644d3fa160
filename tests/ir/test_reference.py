"""Every op's numpy reference (through the Interpreter) against the PyTorch function it stands for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dojoc.ir import Graph, Interpreter, IRDType, Op, TensorType, verify

rng = np.random.default_rng(0)


def f(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape).astype(np.float32)


def i64(high: int, *shape: int) -> np.ndarray:
    return rng.integers(0, high, shape).astype(np.int64)


def b(*shape: int) -> np.ndarray:
    return rng.random(shape) < 0.5


T = torch.from_numpy
Case = tuple[list[np.ndarray], dict[str, Any], Callable[..., Any]]
CASES: dict[Op, list[Case]] = {
    Op.RELU: [([f(3, 4)], {}, torch.relu)],
    Op.GELU: [([f(3, 4)], {}, F.gelu), ([f(3, 4)], {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh"))],
    Op.SILU: [([f(5)], {}, F.silu)],
    Op.SIGMOID: [([f(5) * 20], {}, torch.sigmoid)],
    Op.TANH: [([f(5)], {}, torch.tanh)],
    Op.CLAMP: [([f(9)], {"min": -0.5, "max": 0.5}, lambda x: torch.clamp(x, -0.5, 0.5)),
               ([f(9)], {"min": 0.0}, lambda x: torch.clamp(x, min=0.0))],
    Op.EXP: [([f(5)], {}, torch.exp)],
    Op.LOG: [([pos(5)], {}, torch.log)],
    Op.SQRT: [([pos(5)], {}, torch.sqrt)],
    Op.RSQRT: [([pos(5)], {}, torch.rsqrt)],
    Op.ABS: [([f(5)], {}, torch.abs), ([i64(9, 4) - 4], {}, torch.abs)],
    Op.NEG: [([f(5)], {}, torch.neg)],
    Op.ERF: [([f(5)], {}, torch.erf)],
    Op.LOGICAL_NOT: [([b(5)], {}, torch.logical_not)],
    Op.CAST: [([f(6) * 5], {"dtype": IRDType.I64}, lambda x: x.to(torch.int64)),
              ([f(6)], {"dtype": IRDType.BOOL}, lambda x: x.to(torch.bool)),
              ([f(6)], {"dtype": IRDType.BF16}, lambda x: x.to(torch.bfloat16))],
    Op.ADD: [([f(2, 3), f(3)], {}, torch.add), ([i64(5, 3), i64(5, 1)], {}, torch.add)],
    Op.SUB: [([f(2, 3), f(2, 1)], {}, torch.sub)],
    Op.MUL: [([f(2, 3), f(1, 3)], {}, torch.mul)],
    Op.DIV: [([f(4), pos(4)], {}, torch.div),
             ([f(4) * 9, pos(4)], {"rounding_mode": "floor"}, lambda x, y: torch.div(x, y, rounding_mode="floor")),
             ([i64(20, 6) - 10, i64(3, 6) + 1], {"rounding_mode": "trunc"},
              lambda x, y: torch.div(x, y, rounding_mode="trunc")),
             ([i64(20, 6) - 10, i64(3, 6) + 1], {"rounding_mode": "floor"},
              lambda x, y: torch.div(x, y, rounding_mode="floor"))],
    Op.POW: [([pos(4), f(4)], {}, torch.pow)],
    Op.MAXIMUM: [([f(4), f(4)], {}, torch.maximum)],
    Op.MINIMUM: [([f(4), f(4)], {}, torch.minimum)],
    **{op: [([f(3, 1), f(4)], {}, fn)] for op, fn in [(Op.EQ, torch.eq), (Op.NE, torch.ne), (Op.LT, torch.lt),
                                                       (Op.LE, torch.le), (Op.GT, torch.gt), (Op.GE, torch.ge)]},
    Op.LOGICAL_AND: [([b(4), b(4)], {}, torch.logical_and)],
    Op.LOGICAL_OR: [([b(4), b(4)], {}, torch.logical_or)],
    Op.LOGICAL_XOR: [([b(4), b(4)], {}, torch.logical_xor)],
    Op.WHERE: [([b(3, 1), f(3, 4), f(4)], {}, torch.where)],
    Op.MATMUL: [([f(2, 1, 3, 5), f(4, 5, 6)], {}, torch.matmul)],
    Op.CONV2D: [
        ([f(2, 4, 9, 8), f(6, 2, 3, 3), f(6)], {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2},
         lambda x, w, bias: F.conv2d(x, w, bias, (2, 1), (1, 2), (1, 2), 2)),
        ([f(1, 4, 7, 7), f(4, 1, 3, 3)], {"padding": (1, 1), "groups": 4},
         lambda x, w: F.conv2d(x, w, None, 1, 1, 1, 4))],
    Op.SUM: [([f(2, 3, 4)], {"dims": (0, 2)}, lambda x: x.sum((0, 2))),
             ([i64(5, 2, 3)], {"dims": (1,), "keepdim": True}, lambda x: x.sum(1, keepdim=True))],
    Op.MEAN: [([f(2, 3, 4)], {"dims": (1,), "keepdim": True}, lambda x: x.mean(1, keepdim=True))],
    Op.AMAX: [([f(2, 3, 4)], {"dims": (0, 1)}, lambda x: torch.amax(x, (0, 1)))],
    Op.AMIN: [([f(2, 3, 4)], {"dims": (2,)}, lambda x: torch.amin(x, 2))],
    Op.VAR: [([f(3, 5)], {"dims": (1,)}, lambda x: torch.var(x, 1)),
             ([f(3, 5)], {"dims": (0, 1), "correction": 0.0, "keepdim": True},
              lambda x: torch.var(x, (0, 1), correction=0, keepdim=True))],
    Op.CUMSUM: [([f(3, 5)], {"dim": 1}, lambda x: torch.cumsum(x, 1)),
                ([i64(4, 3, 5)], {"dim": 0}, lambda x: torch.cumsum(x, 0))],
    Op.SOFTMAX: [([f(3, 5) * 10], {"dim": 1}, lambda x: torch.softmax(x, 1))],
    Op.LOG_SOFTMAX: [([f(3, 5) * 10], {"dim": 0}, lambda x: torch.log_softmax(x, 0))],
    Op.LAYER_NORM: [([f(2, 3, 4) + 3, f(3, 4), f(3, 4)], {"normalized_ndim": 2, "eps": 1e-3},
                     lambda x, w, bias: F.layer_norm(x, (3, 4), w, bias, 1e-3))],
    Op.BATCH_NORM: [([f(2, 3, 4, 4), f(3), f(3), f(3), pos(3)], {"eps": 1e-3},
                     lambda x, w, bias, m, v: F.batch_norm(x, m, v, w, bias, False, 0.1, 1e-3))],
    Op.SDPA: [
        ([f(2, 2, 5, 8), f(2, 2, 7, 8), f(2, 2, 7, 4)], {"scale": 0.3},
         lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3)),
        ([f(1, 2, 5, 8), f(1, 2, 5, 8), f(1, 2, 5, 8)], {"causal": True},
         lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        ([f(2, 1, 4, 8), f(2, 1, 6, 8), f(2, 1, 6, 8), np.tril(np.ones((4, 6), bool))], {},
         lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)),
        ([f(1, 2, 4, 8), f(1, 2, 6, 8), f(1, 2, 6, 8), f(1, 1, 4, 6)], {},
         lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)),
        ([f(1, 1, 3, 8), f(1, 1, 4, 8), f(1, 1, 4, 8), np.array([[True] * 4, [False] * 4, [True, False] * 2])], {},
         lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)),
        ([f(1, 4, 3, 8), f(1, 2, 5, 8), f(1, 2, 5, 8)], {"enable_gqa": True},
         lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))],
    Op.MAX_POOL2D: [
        ([f(2, 3, 9, 8)], {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)},
         lambda x: F.max_pool2d_with_indices(x, (3, 3), (2, 2), (1, 1))),
        ([f(1, 2, 10, 9)], {"kernel": (3, 2), "stride": (2, 2), "padding": (1, 0), "dilation": (2, 1),
                            "ceil_mode": True},
         lambda x: F.max_pool2d_with_indices(x, (3, 2), (2, 2), (1, 0), (2, 1), ceil_mode=True))],
    Op.AVG_POOL2D: [
        ([f(2, 3, 9, 8)], {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)},
         lambda x: F.avg_pool2d(x, 3, 2, 1)),
        ([f(1, 2, 10, 9)], {"kernel": (3, 2), "stride": (2, 3), "padding": (1, 1), "ceil_mode": True,
                            "count_include_pad": False},
         lambda x: F.avg_pool2d(x, (3, 2), (2, 3), 1, ceil_mode=True, count_include_pad=False)),
        ([f(1, 2, 10, 9)], {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True},
         lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
        ([f(1, 2, 6, 6)], {"kernel": (2, 2), "stride": (2, 2), "divisor_override": 3},
         lambda x: F.avg_pool2d(x, 2, 2, divisor_override=3))],
    Op.ADAPTIVE_AVG_POOL2D: [([f(2, 3, 7, 10)], {"output_size": (3, 4)}, lambda x: F.adaptive_avg_pool2d(x, (3, 4)))],
    Op.EMBEDDING: [([f(10, 4), i64(10, 2, 3)], {}, lambda w, i: F.embedding(i, w))],
    Op.GATHER: [([f(3, 5), i64(5, 2, 4)], {"dim": 1}, lambda x, i: torch.gather(x, 1, i))],
    Op.INDEX_SELECT: [([f(3, 5), i64(3, 4)], {"dim": 0}, lambda x, i: torch.index_select(x, 0, i))],
    Op.RESHAPE: [([f(2, 6)], {"shape": (3, 1, 4)}, lambda x: x.reshape(3, 1, 4))],
    Op.PERMUTE: [([f(2, 3, 4)], {"perm": (2, 0, 1)}, lambda x: x.permute(2, 0, 1))],
    Op.EXPAND: [([f(3, 1)], {"shape": (2, 3, 4)}, lambda x: x.expand(2, 3, 4))],
    Op.SLICE: [([f(4, 10)], {"dim": 1, "start": 1, "end": 8, "step": 3}, lambda x: x[:, 1:8:3])],
    Op.SELECT: [([f(4, 10)], {"dim": 1, "index": 7}, lambda x: x[:, 7])],
    Op.CAT: [([f(2, 3), f(2, 1), f(2, 2)], {"dim": 1}, lambda *xs: torch.cat(xs, 1))],
    Op.PAD: [([f(2, 3)], {"pads": (1, 0, 2, 3), "value": 0.5}, lambda x: F.pad(x, (2, 3, 1, 0), value=0.5))],
}
SOURCES = {Op.INPUT, Op.PARAM, Op.CONST}


def test_every_op_has_a_case() -> None:
    assert set(CASES) | SOURCES == set(Op)


@pytest.mark.parametrize("op,i", [(op, i) for op, cases in CASES.items() for i in range(len(cases))],
                         ids=lambda v: v.value if isinstance(v, Op) else str(v))
def test_reference_matches_torch(op: Op, i: int) -> None:
    arrays, attrs, fn = CASES[op][i]
    g = Graph(op.value)
    ins = [g.input(f"x{k}", TensorType.of(a)) for k, a in enumerate(arrays)]
    node = g.add(op, ins, attrs)
    g.set_outputs(list(node.outputs))
    verify(g)
    outs = Interpreter(g).run(*arrays)
    expected = fn(*[T(a) for a in arrays])
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    for o, e in zip(outs, expected, strict=True):
        e = e.float() if e.dtype == torch.bfloat16 else e
        o = o.astype(np.float32) if o.dtype == IRDType.BF16.numpy else o
        assert o.shape == tuple(e.shape)
        np.testing.assert_allclose(o, e.numpy(), rtol=1e-5, atol=1e-5)


def test_const_source() -> None:
    g = Graph()
    c = g.const(2, IRDType.I32)
    g.set_outputs([g.call(Op.EXPAND, c, shape=(2, 2))])
    (out,) = Interpreter(verify(g)).run()
    assert out.dtype == np.int32 and out.tolist() == [[2, 2], [2, 2]]
