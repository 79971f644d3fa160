"""The fuse pass's layer_norm step: BERT's post-LN sublayer (linear, residual add, LayerNorm) fuses into the
matmul, the layer norms that cannot fuse say why, and the step is verified and interpreted."""

import numpy as np
import pytest
import torch
from graph_checks import fused_matmuls, same_numbers

from dojoc.errors import IRError, ShapeError
from dojoc.ir import Graph, Interpreter, IRDType, Node, Op, TensorType, verify
from dojoc.testing import assert_matches_eager

F32 = IRDType.F32


# -- layer norm after a matmul ----------------------------------------------------------------------------

class PostNorm(torch.nn.Module):
    """BERT's output sublayer: Linear, residual add, LayerNorm; and three layer norms that cannot fuse."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(48, 32)
        self.ln = torch.nn.LayerNorm(32)
        self.ln2 = torch.nn.LayerNorm((8, 32))
        self.ln3 = torch.nn.LayerNorm(32)
        with torch.no_grad():
            for ln in (self.ln, self.ln2, self.ln3):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-1.0, 1.0)

    def forward(self, h, res):
        y = self.ln(self.fc(h) + res)
        z = self.fc(h)
        return y, self.ln2(self.fc(h) * 2.0), self.ln3(z) + z, self.ln3(res)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_layer_norm_fuses_into_the_matmul_before_it(precision: str) -> None:
    torch.manual_seed(0)
    m = PostNorm().eval()
    h, res = torch.randn(2, 8, 48), torch.randn(2, 8, 32)
    before, graph, steps = fused_matmuls(m, h, res)
    assert (("bias",), ("residual",), ("layer_norm", 1e-5)) in steps
    assert len(graph.find(Op.LAYER_NORM)) == 3
    text = " | ".join(graph.fusion_notes[n.name] for n in graph.find(Op.LAYER_NORM))
    for why in ("normalises more than the matmul's last dim", "has 2 readers", "is a graph input"):
        assert why in text, (why, graph.fusion_notes)
    same_numbers(before, graph, h.numpy(), res.numpy())
    assert_matches_eager(m, h, res, machine="mesh4x4", precision=precision)


def test_a_layer_norm_step_is_verified_and_interpreted() -> None:
    g = Graph("ln")
    x = g.input("x", TensorType((3, 4), F32))
    w = g.param("w", np.arange(20, dtype=np.float32).reshape(4, 5) / 7)
    gamma = g.param("gamma", np.linspace(0.5, 1.5, 5, dtype=np.float32))
    beta = g.param("beta", np.linspace(-1, 1, 5, dtype=np.float32))
    n = g.add(Op.MATMUL, (x, w, gamma, beta), {"epilogue": (("layer_norm", 1e-5),), "fused": ("ln",)})
    g.set_outputs([n.output])
    verify(g)
    xs = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    (out,) = Interpreter(g).run(xs)
    y = xs.astype(np.float64) @ (np.arange(20).reshape(4, 5) / 7)
    want = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5) \
        * np.linspace(0.5, 1.5, 5) + np.linspace(-1, 1, 5)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    bad = [({"epilogue": (("layer_norm", 1e-5), ("act", "relu")), "fused": ("ln", "r")}, "must be an epilogue's last"),
           ({"epilogue": (("layer_norm", -1.0),), "fused": ("ln",)}, "is not tuple\\[step")]
    for attrs, msg in bad:
        node = Node(n.name, n.op, n.inputs, n.attrs.replace(**attrs), n.outputs)
        g2 = g.copy()
        g2.nodes = [node if m is n else m for m in g.nodes]
        with pytest.raises((IRError, ShapeError), match=msg):
            verify(g2)
    short = Node(n.name, n.op, n.inputs[:3], n.attrs, n.outputs)
    g3 = g.copy()
    g3.nodes = [short if m is n else m for m in g.nodes]
    with pytest.raises((IRError, ShapeError), match="inputs besides the 2 of its epilogue"):
        verify(g3)
