"""Elementwise, copy, cat and pad kernels against eager PyTorch, on a small mesh."""

import numpy as np
import pytest
import torch

from dojoc.codegen.lower import lower_graph
from dojoc.frontend import from_module
from isa.presets import load_machine
from runtime_emu import run


def compile_and_run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], precision: str,
                    machine: str = "mesh2x2") -> tuple[list[np.ndarray], list[torch.Tensor]]:
    graph = from_module(module.eval(), inputs)
    low = lower_graph(graph, load_machine(machine), precision)
    res = run(low.image, [x.numpy() for x in inputs])
    want = module(*inputs)
    want = list(want) if isinstance(want, tuple) else [want]
    return [res.outputs[n] for n in low.output_names], want


class Arith(torch.nn.Module):
    def forward(self, x, y):
        return (torch.relu(x * 2.0 + y).sigmoid() - 1.0, 3.0 - x, x / (y.abs() + 1.0), torch.clamp(x, -0.5, 0.5),
                torch.nn.functional.gelu(x), torch.nn.functional.gelu(x, approximate="tanh"), torch.exp(x).log(),
                torch.maximum(x, y), torch.tanh(x) ** 2, torch.nn.functional.silu(y))


class Logic(torch.nn.Module):
    def forward(self, x, y):
        return (x > y), (x <= y).logical_not(), torch.where(x > 0, x, y[0]), (x > 0) & (y < 0)


class Moves(torch.nn.Module):
    def forward(self, x, y):
        return (x.permute(1, 0), torch.cat([x, y], dim=1), torch.nn.functional.pad(x, (1, 2, 3, 0), value=0.5),
                x.t().reshape(-1), x[1:5:2, ::3] * 1.0, x.unsqueeze(0).expand(3, -1, -1) + y)


@pytest.mark.parametrize("module", [Arith(), Logic(), Moves()], ids=lambda m: type(m).__name__)
def test_fp32_matches_eager(module: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(24, 40), torch.randn(24, 40)
    got, want = compile_and_run(module, (x, y), "fp32")
    for g, w in zip(got, want, strict=True):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g.astype(np.float32), w.numpy().astype(np.float32), rtol=1e-4, atol=1e-4)


def test_bf16_pcc() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(64, 96), torch.randn(64, 96)
    got, want = compile_and_run(Arith(), (x, y), "bf16", "mesh4x4")
    for g, w in zip(got, want, strict=True):
        pcc = np.corrcoef(g.astype(np.float64).ravel(), w.numpy().astype(np.float64).ravel())[0, 1]
        assert pcc > 0.99


def test_big_elementwise_spreads_over_cores_and_a_tiny_one_does_not() -> None:
    class Add(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    m = load_machine("mesh4x4")
    big = lower_graph(from_module(Add().eval(), (torch.randn(512, 1024), torch.randn(512, 1024))), m, "fp32")
    tiny = lower_graph(from_module(Add().eval(), (torch.randn(4, 4), torch.randn(4, 4))), m, "fp32")
    assert big.cores_used == 16 and tiny.cores_used == 1


def test_rank0_results() -> None:
    class Scalar(torch.nn.Module):
        def forward(self, x):
            s = x.sum()
            return s * 2.0, s + x

    x = torch.randn(4, 6)
    got, want = compile_and_run(Scalar(), (x,), "fp32", "mesh1x1")
    for g, w in zip(got, want, strict=True):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)
