"""Elementwise epilogues fused into the matrix op that feeds them."""

import numpy as np
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
