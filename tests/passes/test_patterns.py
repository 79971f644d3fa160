"""The recognize pass: a hand-written tanh GELU (GPT-2's NewGELUActivation) becomes one gelu op, which the
fuse pass folds into the matmul before it; near misses stay as they are."""

import math

import numpy as np
import torch

import dojoc
from dojoc.frontend import from_module
from dojoc.ir import Interpreter, Op
from dojoc.passes.patterns import recognize
from dojoc.pipeline import run_passes


def new_gelu(x: torch.Tensor) -> torch.Tensor:
    """transformers' NewGELUActivation."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class MLP(torch.nn.Module):
    def __init__(self, act: object = new_gelu) -> None:
        super().__init__()
        self.fc, self.proj, self.act = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))  # type: ignore[operator]


def test_new_gelu_becomes_one_op_with_the_same_numbers() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 8, 32)
    graph = from_module(MLP().eval(), (x,))
    after = recognize(graph)
    gelus = [n for n in after.nodes if n.op is Op.GELU]
    assert len(gelus) == 1 and gelus[0].attrs["approximate"] == "tanh"
    assert not any(n.op in (Op.POW, Op.TANH) for n in after.nodes)
    a, b = Interpreter(graph).run(x.numpy())[0], Interpreter(after).run(x.numpy())[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    fused = run_passes(graph)
    fc = next(n for n in fused.nodes if n.op is Op.MATMUL)
    assert ("act", "gelu_tanh") in fc.attrs["epilogue"]


def test_program_matches_eager() -> None:
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(4, 8, 32)
    prog = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32")
    torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)


def test_near_misses_are_left_alone() -> None:
    def wrong_constant(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(0.8 * (x + 0.044715 * torch.pow(x, 3.0))))

    def inner_value_read_twice(x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))
        return 0.5 * x * (1.0 + t) + t

    for act in (wrong_constant, inner_value_read_twice):
        graph = recognize(from_module(MLP(act).eval(), (torch.randn(4, 8, 32),)))
        assert not any(n.op is Op.GELU for n in graph.nodes), act.__name__


class Embeddings(torch.nn.Module):
    """BERT's embeddings: a gathered activation plus two constant tables, then a layer norm; and an add of
    a constant to an add of two activations, which stays."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = torch.nn.Parameter(torch.randn(1, 6, 16)), torch.nn.Parameter(torch.randn(6, 16))
        self.ln = torch.nn.LayerNorm(16)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ln((x + self.tok) + self.pos), (x + y) + self.pos


def test_two_constant_adds_become_one() -> None:
    from dojoc.passes.patterns import combine_constants

    torch.manual_seed(0)
    model, x, y = Embeddings().eval(), torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    before = from_module(model, (x, y))
    after = combine_constants(before)
    assert len(before.find(Op.ADD)) == 4 and len(after.find(Op.ADD)) == 3
    for a, b in zip(Interpreter(before).run(x.numpy(), y.numpy()), Interpreter(after).run(x.numpy(), y.numpy()),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    prog = dojoc.compile(model, (x, y), machine="mesh4x4", precision="fp32")
    with torch.no_grad():
        for got, want in zip(prog(x, y), model(x, y), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
