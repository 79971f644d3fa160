"""The fuse pass: elementwise ops after a matrix or elementwise op become its epilogue (an IR attribute),
code generation runs them there, and the ops left unfused say why (graph.fusion_notes, the mapping)."""

import json

import ml_dtypes
import numpy as np
import pytest
import torch
from graph_checks import fused_matmuls, same_numbers

import dojoc
from dojoc.codegen.lower import lower_graph
from dojoc.errors import IRError, ShapeError
from dojoc.frontend import from_module
from dojoc.ir import Graph, Interpreter, IRDType, Node, Op, TensorType, verify
from dojoc.mapping import Mapping
from dojoc.mapping.explain import format_explain, op_rows
from dojoc.passes.fold_bn import fold_batch_norm
from dojoc.passes.fuse import fuse
from dojoc.pipeline import run_passes
from isa.presets import load_machine
from runtime_emu import run

F32 = IRDType.F32


def _fused(graph: Graph) -> dict[str, tuple[object, ...]]:
    """{fused node name: (its producer, its step)} over the graph's epilogues."""
    return {name: (n.name, step) for n in graph.nodes for name, step in zip(n.attrs.get("fused", ()),
                                                                           n.attrs.get("epilogue", ()), strict=True)}


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
    folded = fold_batch_norm(from_module(m, (x,)))
    acts = [n.name for n in folded.nodes if n.op in (Op.RELU, Op.SIGMOID, Op.TANH)]
    graph = run_passes(from_module(m, (x,)))
    assert not graph.find(Op.BATCH_NORM) and not graph.find(Op.RELU) and not graph.find(Op.ADD)
    assert len(acts) == 4 and set(acts) <= set(_fused(graph)), "every activation is in a matrix op's epilogue"
    same_numbers(folded, graph, x.numpy())
    low = lower_graph(graph, load_machine("mesh2x2"), "fp32")
    ops = {e.op for e in low.image.debug}
    assert not ops & set(acts), "the fused ops emit no code of their own"
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
    before = fold_batch_norm(from_module(m, (x,)))
    graph = fuse(before)
    matmuls = graph.find(Op.MATMUL)
    assert all(n.attrs["epilogue"][0] == ("bias",) for n in matmuls), "one bias per linear, in its epilogue"
    assert not graph.find(Op.ADD) and not graph.find(Op.RELU) and not graph.find(Op.GELU)
    fused = set(_fused(graph))
    same_numbers(before, graph, x.numpy())
    with torch.no_grad():
        want = m(x).numpy()
    for precision in ("fp32", "bf16"):
        low = lower_graph(graph, load_machine(machine), precision)
        ops = {e.op for e in low.image.debug}
        assert not ops & fused, "the bias add and the activation run inside the matmul"
        assert not any(o.startswith("output") for o in ops), "the matmul writes the output itself"
        got = run(low.image, [x.numpy()]).outputs[low.output_names[0]]
        assert got.shape == want.shape
        if precision == "fp32":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        else:
            assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.99


def test_a_bf16_models_bias_fuses_too() -> None:
    """Parameters of a bfloat16 module are bf16 arrays (not numpy floating): the bias still fuses."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.ReLU()).eval().to(torch.bfloat16)
    x = torch.randn(5, 24).to(torch.bfloat16)
    graph = fuse(fold_batch_norm(from_module(m, (x,))))
    (mm,) = graph.find(Op.MATMUL)
    assert mm.attrs["epilogue"][0] == ("bias",) and not graph.find(Op.ADD)
    low = lower_graph(graph, load_machine("mesh2x2"), "bf16")
    got = run(low.image, [x.float().numpy().astype(ml_dtypes.bfloat16)]).outputs[low.output_names[0]]
    with torch.no_grad():
        want = m(x).float().numpy()
    assert np.corrcoef(np.asarray(got, dtype=np.float32).ravel(), want.ravel())[0, 1] >= 0.99


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
    (mm,) = graph.find(Op.MATMUL)
    (relu,) = graph.find(Op.RELU)
    assert mm.attrs["epilogue"] == (("bias",),) and relu.inputs == (mm.output,)
    assert graph.fusion_notes == {relu.name: f"its input %{mm.name} is a graph output"}
    low = lower_graph(graph, load_machine("mesh2x2"), "fp32")
    got = run(low.image, [x.numpy()]).outputs
    with torch.no_grad():
        want = m(x)
    for name, w in zip(low.output_names, want, strict=True):
        np.testing.assert_allclose(got[name], w.numpy(), rtol=1e-4, atol=1e-4)


# -- residuals: ResNet's bottleneck, BERT's output layer ---------------------------------------------------

class Bottleneck(torch.nn.Module):
    """ResNet's bottleneck block (as transformers' ResNetBottleNeckLayer orders it): the main branch, then
    the shortcut (a strided 1x1 conv with batch norm when the shape changes, else the identity), their sum
    and a relu."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        nn = torch.nn
        self.main = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        y = self.main(x)
        return torch.relu(y + self.shortcut(x))


class ResNetish(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Bottleneck(8, 4, 16, 2)   # downsampling shortcut
        self.b = Bottleneck(16, 4, 16, 1)  # identity shortcut

    def forward(self, x):
        return self.b(self.a(x))


def _randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_residual_and_relu_fuse_into_the_convolution_and_no_op_moves() -> None:
    torch.manual_seed(0)
    m = _randomize_bn(ResNetish())
    x = torch.randn(1, 8, 12, 12)
    before = fold_batch_norm(from_module(m, (x,)))
    graph = fuse(before)
    assert not graph.find(Op.ADD) and not graph.find(Op.RELU), "every add and relu is in an epilogue"
    convs = graph.find(Op.CONV2D)
    res = [n for n in convs if ("residual",) in n.attrs["epilogue"]]
    assert len(res) == 2 and all(n.attrs["epilogue"] == (("residual",), ("act", "relu")) for n in res)
    # block a: the sum fuses into the shortcut conv (defined after the main branch), not into the last main
    # conv, so the convolutions keep their order; block b adds its input (the identity shortcut)
    order = [n.name for n in before.nodes if n.op is Op.CONV2D]
    assert [n.name for n in convs] == order
    a_last, a_short = order[2], order[3]
    assert res[0].name == a_short and res[0].inputs[-1].name == a_last
    assert res[1].inputs[-1] is res[0].output
    assert graph.fusion_notes == {}
    same_numbers(before, graph, x.numpy())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resnet_block_with_fused_residuals_matches_eager(precision: str) -> None:
    torch.manual_seed(0)
    m = _randomize_bn(ResNetish())
    x = torch.randn(1, 8, 12, 12)
    prog = dojoc.compile(m, (x,), machine="mesh4x4", precision=precision)
    got, report = prog.run(x)
    with torch.no_grad():
        want = m(x)
    if precision == "fp32":
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    else:
        assert np.corrcoef(got.numpy().ravel(), want.numpy().ravel())[0, 1] >= 0.99
    assert prog.mapping is not None
    fused = {o.op: o.fused_into for o in prog.mapping.ops if o.fused_into is not None}
    assert sum(1 for o in fused if o.startswith("add")) == 2 and all(o.kernel != "eltwise" for o in prog.mapping.ops)
    assert report.cycles > 0


class BertOutput(torch.nn.Module):
    """BERT's output layer: dense, then the residual add (through the linear's reshape), then layer norm;
    and the same dense scaled and with a gelu, written to a graph output."""

    def __init__(self) -> None:
        super().__init__()
        self.dense, self.norm = torch.nn.Linear(48, 32), torch.nn.LayerNorm(32)

    def forward(self, h, res):
        y = self.dense(h)
        return self.norm(y + res), torch.nn.functional.gelu(self.dense(h) * 0.5 + res) / 4


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_matmul_residual_through_a_reshape_and_scaling(precision: str) -> None:
    torch.manual_seed(0)
    m = BertOutput().eval()
    h, res = torch.randn(2, 8, 48), torch.randn(2, 8, 32)
    before, graph, steps = fused_matmuls(m, h, res)
    assert steps == [(("bias",), ("mul", 0.5), ("residual",), ("act", "gelu"), ("div", 4.0)),
                     (("bias",), ("residual",), ("layer_norm", 1e-5))]
    assert not graph.find(Op.ADD) and not graph.find(Op.MUL) and not graph.find(Op.DIV)
    same_numbers(before, graph, h.numpy(), res.numpy())
    prog = dojoc.compile(m, (h, res), machine="mesh4x4", precision=precision)
    got = prog(h, res)
    with torch.no_grad():
        want = m(h, res)
    for g, w in zip(got, want, strict=True):
        if precision == "fp32":
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-4)
        else:
            assert np.corrcoef(g.numpy().ravel(), w.numpy().ravel())[0, 1] >= 0.99


# -- what does not fuse, and why ------------------------------------------------------------------------

class Unfusable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)
        self.table = torch.nn.Parameter(torch.randn(4, 16))
        self.row = torch.nn.Parameter(torch.randn(4, 1))

    def forward(self, x, z):
        y = x @ self.fc.weight          # two readers: neither reader fuses
        a = torch.relu(y) + torch.sigmoid(y)
        b = (x @ self.fc.weight) + self.row  # a constant that varies along the rows
        c = (x @ self.fc.weight) + z[0]      # a tensor that broadcasts
        d = (x * z) + x                      # an elementwise op adds no tensor
        e = (x @ self.fc.weight) * z         # not a scalar
        return a, b, c, d, e, torch.relu(torch.softmax(x, -1))


def test_the_ops_left_unfused_say_why() -> None:
    torch.manual_seed(0)
    m = Unfusable().eval()
    x, z = torch.randn(4, 16), torch.randn(4, 16)
    before = fold_batch_norm(from_module(m, (x, z)))
    graph = fuse(before)
    notes = graph.fusion_notes
    by_op = {n.name: n for n in graph.nodes}
    assert set(notes) <= set(by_op), "notes are for ops still in the graph"
    text = " | ".join(sorted(notes.values()))
    for why in ("has 2 readers", "neither a vector along the last dim", "broadcasts; a residual must be",
                "the epilogue of an elementwise op adds no tensor", "is not a scalar constant",
                "comes from softmax"):
        assert why in text, (why, notes)
    # the add of relu and sigmoid (both fused into nothing: two readers) is an elementwise producer itself
    assert len([n for n in notes if by_op[n].op in (Op.RELU, Op.SIGMOID)]) == 3
    same_numbers(before, graph, x.numpy(), z.numpy())


def test_notes_reach_the_mapping_and_explain() -> None:
    torch.manual_seed(0)
    m = SharedBias().eval()
    x = torch.randn(4, 16)
    prog = dojoc.compile(m, (x,), machine="mesh2x2", precision="fp32")
    _, report = prog.run(x)
    assert prog.mapping is not None
    by_op = {o.key: o for o in prog.mapping.ops}
    relu = next(k for k in by_op if k.startswith("relu"))
    assert "is a graph output" in by_op[relu].note
    assert by_op["linear"].fused_into == "linear_matmul"
    d = prog.mapping.to_dict()
    rows = {r["op"]: r for r in d["ops"]}
    assert rows[relu]["note"] == by_op[relu].note and "note" not in rows["linear_matmul"]
    assert Mapping.from_json(prog.mapping.to_json()).by_key()[relu].note == by_op[relu].note
    explain = format_explain(op_rows(prog.lowered))
    assert f"not fused: {by_op[relu].note}" in explain
    assert any(r.get("note") for r in report.ops)
    assert json.loads(json.dumps(list(report.ops)))  # report.json's ops carry it


def test_a_dumped_mapping_with_fused_ops_feeds_back() -> None:
    torch.manual_seed(0)
    m = ResNetish().eval()
    x = torch.randn(1, 8, 12, 12)
    prog = dojoc.compile(m, (x,), machine="mesh4x4", precision="bf16")
    assert prog.mapping is not None
    again = dojoc.compile(m, (x,), machine="mesh4x4", precision="bf16", mapping=prog.mapping.to_dict())
    assert [(s.cores, s.code) for s in again.image.sections] == [(s.cores, s.code) for s in prog.image.sections]


# -- the IR: the attribute is checked and interpreted --------------------------------------------------------

def _matmul_graph() -> tuple[Graph, Node]:
    g = Graph("epi")
    x = g.input("x", TensorType((3, 4), F32))
    w = g.param("w", np.ones((4, 5), np.float32))
    b = g.param("b", np.arange(5, dtype=np.float32))
    r = g.input("r", TensorType((3, 5), F32))
    n = g.add(Op.MATMUL, (x, w, b, r), {"epilogue": (("bias",), ("residual",), ("mul", 2.0), ("act", "relu")),
                                        "fused": ("add", "add_1", "mul", "relu")})
    g.set_outputs([n.output])
    return g, n


def test_the_epilogue_attribute_is_verified_and_interpreted() -> None:
    g, n = _matmul_graph()
    verify(g)
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    r = np.ones((3, 5), np.float32) * -3
    (out,) = Interpreter(g).run(x, r)
    np.testing.assert_array_equal(out, np.maximum((x @ np.ones((4, 5)) + np.arange(5) + r) * 2, 0))
    bad = [({"epilogue": (("bias",),), "fused": ()}, "fused names 0 ops"),
           ({"epilogue": (("act", "exp"),), "fused": ("e",)}, "is not tuple\\[step"),
           ({"epilogue": (("residual",), ("bias",)), "fused": ("a", "b")}, "must be f32\\[3,5\\], got f32\\[5\\]")]
    for attrs, msg in bad:
        node = Node(n.name, n.op, n.inputs, n.attrs.replace(**attrs), n.outputs)
        g2 = g.copy()
        g2.nodes = [node if m is n else m for m in g.nodes]
        with pytest.raises((IRError, ShapeError), match=msg):
            verify(g2)
    conv_in = Graph("c")
    xi = conv_in.input("x", TensorType((1, 2, 4, 4), F32))
    wi = conv_in.param("w", np.ones((2, 2, 1, 1), np.float32))
    bi = conv_in.param("b", np.ones(2, np.float32))
    with pytest.raises(ShapeError, match="not one this op takes"):
        conv_in.add(Op.CONV2D, (xi, wi, bi), {"epilogue": (("bias",),), "fused": ("add",)})


# -- clamp (ReLU6, hardtanh), scalar add and sub, residual subtract ---------------------------------------

class Clamps(torch.nn.Module):
    """conv -> batch norm -> relu6, conv -> hardtanh(a, b), conv -> clamp(min only), a matmul's bias then
    clamp(max only), and an elementwise op's relu6."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.a = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Hardtanh(-0.5, 2.0))
        self.c = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6 * 5 * 5, 10)

    def forward(self, x):
        y = torch.clamp(self.c(self.b(self.a(x))), min=0.1)
        return torch.clamp(self.fc(y.flatten(1)), max=0.3), torch.nn.functional.relu6(x * 3.0)


def test_clamp_fuses_into_conv_matmul_and_elementwise_ops() -> None:
    torch.manual_seed(0)
    m = _randomize_bn(Clamps())
    x = torch.randn(2, 4, 5, 5)
    before = fold_batch_norm(from_module(m, (x,)))
    graph = fuse(before)
    assert not graph.find(Op.CLAMP) and set(graph.fusion_notes) == {"mul"}  # x * 3 reads a graph input
    convs = graph.find(Op.CONV2D)
    assert [n.attrs["epilogue"] for n in convs] == [(("clamp", 0.0, 6.0),), (("clamp", -0.5, 2.0),),
                                                   (("clamp", 0.1, None),)]
    (mm,) = graph.find(Op.MATMUL)
    assert mm.attrs["epilogue"] == (("bias",), ("clamp", None, 0.3))
    (mul,) = graph.find(Op.MUL)
    assert mul.attrs["epilogue"] == (("clamp", 0.0, 6.0),)
    same_numbers(before, graph, x.numpy())
    low = lower_graph(graph, load_machine("mesh2x2"), "fp32")
    assert not {e.op for e in low.image.debug} & set(_fused(graph)), "the clamps emit no code of their own"
    got = run(low.image, [x.numpy()]).outputs
    with torch.no_grad():
        want = m(x)
    for name, w in zip(low.output_names, want, strict=True):
        np.testing.assert_allclose(got[name], w.numpy(), rtol=1e-4, atol=1e-4)


class Offsets(torch.nn.Module):
    """Scalar adds and subtractions after a matmul, a conv and an elementwise op; a conv minus a tensor
    that a later conv computes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 16)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.proj = torch.nn.Conv2d(3, 3, 1)

    def forward(self, h, x, z):
        a = torch.relu(self.fc(h) + 0.5) - 0.25
        b = self.conv(x) - self.proj(z)
        return a, b, (h * h) - 1.0, torch.sigmoid(self.conv(z) + 2.0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_scalar_add_sub_and_residual_subtract_fuse(precision: str) -> None:
    torch.manual_seed(0)
    m = Offsets().eval()
    h, x, z = torch.randn(4, 12), torch.randn(1, 3, 6, 6), torch.randn(1, 3, 6, 6)
    before = fold_batch_norm(from_module(m, (h, x, z)))
    graph = fuse(before)
    assert not graph.find(Op.ADD) and not graph.find(Op.SIGMOID) and set(graph.fusion_notes) == {"mul"}
    (mm,) = graph.find(Op.MATMUL)
    assert mm.attrs["epilogue"] == (("bias",), ("add", 0.5), ("act", "relu"), ("sub", 0.25))
    # (fold_batch_norm folds the conv's + 2.0 into its bias)
    convs = graph.find(Op.CONV2D)
    assert sorted(n.attrs["epilogue"] for n in convs) == [(), (("act", "sigmoid"),), (("sub_residual",),)]
    # x - proj(z) cannot go into proj (defined later; it would be y - x there): the fused node follows it
    sub = next(n for n in convs if n.attrs["epilogue"] == (("sub_residual",),))
    assert sub.inputs[-1] is convs[convs.index(sub) - 1].output
    assert [n.attrs["epilogue"] for n in graph.find(Op.MUL)] == [(("sub", 1.0),)]
    same_numbers(before, graph, h.numpy(), x.numpy(), z.numpy())
    prog = dojoc.compile(m, (h, x, z), machine="mesh4x4", precision=precision)
    got = prog(h, x, z)
    with torch.no_grad():
        want = m(h, x, z)
    for g, w in zip(got, want, strict=True):
        if precision == "fp32":
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-4)
        else:
            assert np.corrcoef(g.numpy().ravel(), w.numpy().ravel())[0, 1] >= 0.99


class ClampsLeft(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, z):
        y = self.conv(x)
        shared = torch.clamp(y, 0, 1) + torch.clamp(y, -1, 0)  # two readers: neither clamp fuses
        s = z - self.conv(x * 2.0)                              # y - x is not a step
        return shared, s, torch.nn.functional.hardtanh(torch.softmax(x, -1))


def test_the_clamps_and_subtractions_left_say_why() -> None:
    torch.manual_seed(0)
    m = ClampsLeft().eval()
    x, z = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    before = fold_batch_norm(from_module(m, (x, z)))
    graph = fuse(before)
    notes = graph.fusion_notes
    by_op = {n.name: n for n in graph.nodes}
    clamps = [n for n in notes if by_op[n].op is Op.CLAMP]
    assert len(clamps) == 3 and sum("has 2 readers" in notes[n] for n in clamps) == 2
    assert any("comes from softmax" in notes[n] for n in clamps)
    subs = sorted(notes[n] for n in notes if by_op[n].op is Op.SUB)
    assert len(subs) == 1 and all("only x - y with x the result is a step" in why for why in subs), notes
    same_numbers(before, graph, x.numpy(), z.numpy())


class InvertedResidual(torch.nn.Module):
    """MobileNetV2's inverted residual block: a pointwise expansion conv + batch norm + ReLU6, a depthwise
    3 x 3 conv + batch norm + ReLU6, a pointwise projection conv + batch norm, and the residual add."""

    def __init__(self, c: int = 8, expand: int = 4) -> None:
        super().__init__()
        nn, e = torch.nn, c * expand
        self.block = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
                                   nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e),
                                   nn.ReLU6(), nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.block(x)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_mobilenet_block_fuses_relu6_into_the_depthwise_kernel_and_matches_eager(precision: str) -> None:
    torch.manual_seed(0)
    m = _randomize_bn(InvertedResidual())
    x = torch.randn(1, 8, 10, 10)
    graph = run_passes(from_module(m, (x,)))
    assert not graph.find(Op.CLAMP) and not graph.find(Op.ADD) and not graph.find(Op.BATCH_NORM)
    expand, dw, project = graph.find(Op.CONV2D)
    assert expand.attrs["epilogue"] == dw.attrs["epilogue"] == (("clamp", 0.0, 6.0),)
    assert dw.attrs["groups"] == 32 and project.attrs["epilogue"] == (("residual",),)
    prog = dojoc.compile(m, (x,), machine="mesh4x4", precision=precision)
    got = prog(x)
    with torch.no_grad():
        want = m(x)
    if precision == "fp32":
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    else:
        assert np.corrcoef(got.numpy().ravel(), want.numpy().ravel())[0, 1] >= 0.99
    assert prog.mapping is not None
    by_op = {o.key: o for o in prog.mapping.ops}
    assert by_op[dw.name].kernel == "depthwise", "the depthwise conv keeps its kernel with the clamp fused"
    assert all(o.kernel != "eltwise" for o in prog.mapping.ops), "no clamp or add runs on its own"
    assert sum(o.fused_into == dw.name for o in prog.mapping.ops) == 1


def test_new_steps_are_verified_and_interpreted_bit_for_bit_in_bf16() -> None:
    bf16 = IRDType.BF16
    g = Graph("bf")
    x = g.input("x", TensorType((4, 8), bf16))
    r = g.input("r", TensorType((4, 6), bf16))
    w = g.param("w", np.linspace(-1, 1, 48, dtype=np.float32).reshape(8, 6).astype(bf16.numpy))
    y = g.call(Op.MATMUL, x, w)
    y = g.call(Op.ADD, y, g.const(0.3, bf16))
    y = g.call(Op.SUB, y, r)
    y = g.call(Op.CLAMP, y, min=-0.11, max=0.7)  # bounds bf16 does not hold: rounded once, after both
    y = g.call(Op.SUB, y, g.const(0.05, bf16))
    g.set_outputs([y])
    verify(g)
    fused = fuse(g)
    (mm,) = fused.find(Op.MATMUL)
    assert mm.attrs["epilogue"] == (("add", 0.30078125), ("sub_residual",), ("clamp", -0.11, 0.7),
                                    ("sub", 0.050048828125))
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32).astype(bf16.numpy) for s in ((4, 8), (4, 6))]
    same_numbers(g, fused, *xs)
    bad = [((("clamp", "0", 1.0),), ("c",), "is not tuple\\[step"),
           ((("residual",), ("sub_residual",)), ("a", "b"), "at most one residual or sub_residual")]
    for steps, names, msg in bad:
        node = Node(mm.name, mm.op, mm.inputs + (mm.inputs[-1],) * (len(steps) - 1),
                    mm.attrs.replace(epilogue=steps, fused=names), mm.outputs)
        g2 = fused.copy()
        g2.nodes = [node if m is mm else m for m in fused.nodes]
        with pytest.raises((IRError, ShapeError), match=msg):
            verify(g2)
