"""Elementwise epilogues fused into the matrix op that feeds them."""

import numpy as np
import pytest
import torch

from dojoc.codegen.lower import lower_graph
from dojoc.frontend import from_module
from dojoc.ir import Op
from dojoc.pipeline import run_passes
from isa.presets import load_machine
from runtime_emu import run


class ConvAct(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 1)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return (torch.sigmoid(self.conv2(y)), torch.tanh(x.flatten(1) @ torch.ones(8 * 6 * 6, 5)),
                torch.relu(y + self.conv2(y)))


def test_activations_fuse_into_conv_and_matmul_and_match_eager() -> None:
    torch.manual_seed(0)
    m = ConvAct().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 6, 6)
    graph = run_passes(from_module(m, (x,)))
    assert not graph.find(Op.BATCH_NORM)
    machine = load_machine("mesh2x2")
    low = lower_graph(graph, machine, "fp32")
    ops = {e.op for e in low.image.debug}
    acts = [n.name for n in graph.nodes if n.op in (Op.RELU, Op.SIGMOID, Op.TANH)]
    assert len(acts) == 4 and not ops & set(acts), "every activation runs inside its matrix op"
    got = run(low.image, [x.numpy()]).outputs
    with torch.no_grad():
        want = m(x)
    for name, w in zip(low.output_names, want, strict=True):
        np.testing.assert_allclose(got[name], w.numpy(), rtol=1e-4, atol=1e-4)


class Batched(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(24, 40)

    def forward(self, x):
        return self.fc(x)


class ViaReshape(torch.nn.Module):
    """A linear layer written by hand: the matmul's result is reshaped before its bias and activation."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(24, 40) * 0.2)
        self.b = torch.nn.Parameter(torch.randn(40))

    def forward(self, x):
        return torch.nn.functional.gelu((x.reshape(-1, 24) @ self.w).reshape(2, 7, 40) + self.b)


LINEARS = {
    "via_reshape": (ViaReshape, (2, 7, 24)),
    "linear": (lambda: torch.nn.Linear(48, 40), (6, 48)),
    "linear_gelu": (lambda: torch.nn.Sequential(torch.nn.Linear(32, 72), torch.nn.GELU()), (10, 32)),
    "linear_relu": (lambda: torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.ReLU(), torch.nn.Linear(24, 16)),
                    (5, 32)),
    "batched": (Batched, (3, 7, 24)),
}


@pytest.mark.parametrize("machine", ["mesh2x2", "mesh4x4"])
@pytest.mark.parametrize("case", sorted(LINEARS))
def test_linear_bias_and_activation_fuse_into_matmul(case: str, machine: str) -> None:
    torch.manual_seed(0)
    make, shape = LINEARS[case]
    m = make().eval()
    x = torch.randn(*shape)
    graph = run_passes(from_module(m, (x,)))
    fused = [n.name for n in graph.nodes if n.op in (Op.ADD, Op.RELU, Op.GELU)]
    assert len([n for n in graph.nodes if n.op is Op.ADD]) == len(graph.find(Op.MATMUL)), "one bias add per linear"
    with torch.no_grad():
        want = m(x).numpy()
    for precision in ("fp32", "bf16"):
        low = lower_graph(graph, load_machine(machine), precision)
        ops = {e.op for e in low.image.debug}
        assert not ops & set(fused), "the bias add and the activation run inside the matmul"
        got = run(low.image, [x.numpy()]).outputs[low.output_names[0]]
        assert got.shape == want.shape
        if precision == "fp32":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        else:
            assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.99


class SharedBias(torch.nn.Module):
    """A bias add whose result is also a graph output and feeds an activation: the activation cannot fuse."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x):
        y = self.fc(x)
        return y, torch.relu(y)


def test_linear_bias_that_is_an_output_still_fuses_but_keeps_its_value() -> None:
    torch.manual_seed(0)
    m = SharedBias().eval()
    x = torch.randn(4, 16)
    graph = run_passes(from_module(m, (x,)))
    low = lower_graph(graph, load_machine("mesh2x2"), "fp32")
    ops = {e.op for e in low.image.debug}
    assert not ops & {n.name for n in graph.nodes if n.op is Op.ADD}
    got = run(low.image, [x.numpy()]).outputs
    with torch.no_grad():
        want = m(x)
    for name, w in zip(low.output_names, want, strict=True):
        np.testing.assert_allclose(got[name], w.numpy(), rtol=1e-4, atol=1e-4)
