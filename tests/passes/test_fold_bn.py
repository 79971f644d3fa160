"""fold_batch_norm: batch norm and per-channel affine epilogues folded into convolutions."""

from __future__ import annotations

import numpy as np
import torch

from dojoc.frontend import from_module
from dojoc.ir import Graph, Interpreter, IRDType, Op, TensorType, verify
from dojoc.passes.fold_bn import fold_batch_norm


def _randomize(m: torch.nn.Module) -> torch.nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(0)
    for bn in m.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            if bn.affine:
                bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
                bn.bias.data.copy_(torch.randn(bn.num_features, generator=g))
    return m.eval()


def _same(a: Graph, b: Graph, *xs: np.ndarray) -> None:
    for x, y in zip(Interpreter(a).run(*xs), Interpreter(b).run(*xs), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


class Block(torch.nn.Module):
    """ResNet-like: conv-bn-relu, conv(bias)-bn(no affine), depthwise conv-bn, then x * 2 + 1 per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8)
        self.c2, self.b2 = torch.nn.Conv2d(8, 8, 1), torch.nn.BatchNorm2d(8, affine=False)
        self.c3, self.b3 = torch.nn.Conv2d(8, 8, 3, groups=8, stride=2), torch.nn.BatchNorm2d(8)
        self.scale = torch.nn.Parameter(torch.randn(8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return (self.b3(self.c3(y)) * self.scale - 0.5) / 4.0


def test_folds_every_batch_norm_and_the_affine_tail() -> None:
    x = torch.randn(2, 3, 9, 9)
    m = _randomize(Block())
    g = from_module(m, (x,))
    f = fold_batch_norm(g)
    verify(f)
    assert "batch_norm" not in f.op_counts()
    assert f.op_counts() == {"conv2d": 3, "relu": 1}
    _same(g, f, x.numpy())
    np.testing.assert_allclose(Interpreter(f).run(x.numpy())[0], m(x).detach().numpy(), rtol=1e-4, atol=1e-4)
    assert "batch_norm" in g.op_counts()  # the input graph is unchanged
    assert not any(k.endswith(".folded.folded") for k in f.parameters)


def test_a_conv_output_read_twice_is_not_folded() -> None:
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.b = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.c(x)
            return self.b(y), y

    x = torch.randn(1, 3, 6, 6)
    g = from_module(_randomize(Two()), (x,))
    f = fold_batch_norm(g)
    assert f.op_counts() == g.op_counts()
    _same(g, f, x.numpy())


def _hand_graph(mean_is_input: bool, add_shape: tuple[int, ...]) -> tuple[Graph, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.input("x", TensorType((1, 2, 5, 5), IRDType.F32))
    inputs = [rng.standard_normal((1, 2, 5, 5)).astype(np.float32)]
    w = g.param("w", rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    y = g.call(Op.CONV2D, x, w)
    if mean_is_input:
        mean = g.input("mean", TensorType((3,), IRDType.F32))
        inputs.append(rng.standard_normal(3).astype(np.float32))
    else:
        mean = g.param("mean", rng.standard_normal(3).astype(np.float32))
    ps = [g.param(n, (rng.random(3) + 0.5).astype(np.float32)) for n in ("gamma", "beta", "var")]
    y = g.call(Op.BATCH_NORM, y, ps[0], ps[1], mean, ps[2], eps=1e-3)
    y = g.call(Op.ADD, y, g.param("shift", rng.standard_normal(add_shape).astype(np.float32)))
    g.set_outputs([y])
    return verify(g), inputs


def test_batch_norm_with_a_runtime_statistic_is_kept() -> None:
    g, xs = _hand_graph(mean_is_input=True, add_shape=(3, 1, 1))
    f = fold_batch_norm(g)
    assert f.op_counts() == g.op_counts()
    _same(g, f, *xs)


def test_an_add_that_varies_over_pixels_is_not_folded() -> None:
    g, xs = _hand_graph(mean_is_input=False, add_shape=(3, 3, 3))
    f = fold_batch_norm(g)
    assert f.op_counts() == {"conv2d": 1, "add": 1}  # the batch norm folds, the add stays
    _same(g, f, *xs)
    g, xs = _hand_graph(mean_is_input=False, add_shape=(1, 3, 1, 1))
    f = fold_batch_norm(g)
    assert f.op_counts() == {"conv2d": 1}
    _same(g, f, *xs)


def test_bf16_weights_stay_bf16() -> None:
    m = _randomize(Block()).to(torch.bfloat16)
    x = torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)
    g = from_module(m, (x,))
    f = fold_batch_norm(g)
    assert "batch_norm" not in f.op_counts()
    assert all(n.output.type.dtype is IRDType.BF16 for n in f.find(Op.PARAM))
    a = Interpreter(g).run(x.float().numpy().astype(g.inputs[0].type.dtype.numpy))[0].astype(np.float64)
    b = Interpreter(f).run(x.float().numpy().astype(g.inputs[0].type.dtype.numpy))[0].astype(np.float64)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
