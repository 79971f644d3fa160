"""The merge_siblings pass: matmuls of one input by weights of their own (attention's query, key and value
projections) become one matmul and three slices; the numbers stay the same, the mapping lists the merged
ops, and siblings that differ (a residual, another epilogue) stay apart."""

import numpy as np
import torch

import dojoc
from dojoc.frontend import from_module
from dojoc.ir import Interpreter, Op
from dojoc.passes.fuse import fuse
from dojoc.passes.merge import merge_siblings
from dojoc.pipeline import run_passes


class QKV(torch.nn.Module):
    """Three projections of one input, as attention has, and a fourth with another activation."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = torch.nn.Linear(32, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 16)
        self.o = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        att = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        return att.sum(-1, keepdim=True) + torch.relu(self.o(x)).sum(-1, keepdim=True)


def test_siblings_merge_into_one_matmul_with_the_same_numbers() -> None:
    torch.manual_seed(0)
    model, x = QKV().eval(), torch.randn(2, 6, 32)
    fused = fuse(from_module(model, (x,)))
    merged = merge_siblings(fused)
    mm = [n for n in merged.nodes if n.op is Op.MATMUL and n.inputs[0].name == "x"]
    # q, k and v (bias epilogues) merge; o has a relu step too, so it stays alone
    assert len(mm) == 2
    big = next(n for n in mm if n.attrs["merged"])
    assert big.output.type.shape == (2, 6, 80) and len(big.attrs["merged"]) == 4  # k, v and their bias adds
    slices = [n for n in merged.nodes if n.op is Op.SLICE and n.inputs[0] is big.output]
    assert [(n.attrs["start"], n.attrs["end"]) for n in slices] == [(0, 32), (32, 64), (64, 80)]
    for a, b in zip(Interpreter(fused).run(x.numpy()), Interpreter(merged).run(x.numpy()), strict=True):
        np.testing.assert_array_equal(a, b)


def test_merged_program_matches_eager_and_names_the_merged_ops() -> None:
    torch.manual_seed(0)
    model, x = QKV().eval(), torch.randn(2, 6, 32)
    prog = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32")
    torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)
    assert prog.mapping is not None
    merged = [o for o in prog.mapping.ops if o.kernel == "merged"]
    assert len(merged) == 4 and len({o.fused_into for o in merged}) == 1
    graph = run_passes(from_module(model, (x,)))
    assert sum(n.op is Op.MATMUL for n in graph.nodes) == 4  # the merged projection, o, and attention's two


def test_a_residual_keeps_a_sibling_apart() -> None:
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) * (self.b(x) + x)

    torch.manual_seed(0)
    graph = merge_siblings(fuse(from_module(Two().eval(), (torch.randn(4, 16),))))
    assert sum(n.op is Op.MATMUL for n in graph.nodes) == 2
    assert not any(n.attrs.get("merged") for n in graph.nodes if n.op is Op.MATMUL)
