"""The IR itself: types, attributes, the builder, the verifier, the printer, the interpreter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dojoc.errors import CompileError, InputError, IRError, ShapeError
from dojoc.ir import OP_TABLE, Attrs, Graph, Interpreter, IRDType, Node, Op, OpKind, TensorType, Value, verify
from dojoc.ir.printer import maybe_dump

F32 = IRDType.F32


def small_graph() -> Graph:
    g = Graph("small")
    x = g.input("x", TensorType((2, 3), F32))
    w = g.param("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    y = g.call(Op.MATMUL, x, w)
    z = g.call(Op.RELU, g.call(Op.SUB, y, g.const(10.0, F32)))
    g.set_outputs([z], ["z"])
    return g


def test_types() -> None:
    t = TensorType((1, 3, 32, 32), F32)
    assert str(t) == "f32[1,3,32,32]" and t.numel == 3072 and t.nbytes == 12288 and t.rank == 4
    assert TensorType.of(np.zeros((2,), np.int64)) == TensorType((2,), IRDType.I64)
    assert IRDType.BF16.isa is not None and IRDType.I64.isa is None
    with pytest.raises(KeyError):
        TensorType.of(np.zeros(2, np.float64))
    with pytest.raises(ValueError):
        TensorType((-1, 2), F32)


def test_attrs_are_immutable_and_hashable() -> None:
    a = Attrs(shape=[1, 2], dim=0)
    assert a["shape"] == (1, 2) and hash(a) == hash(Attrs(shape=(1, 2), dim=0))
    with pytest.raises(TypeError):
        a["dim"] = 1  # type: ignore[index]
    assert a.replace(dim=1)["dim"] == 1 and a["dim"] == 0


def test_table_is_complete() -> None:
    assert set(OP_TABLE) == set(Op)
    for op, d in OP_TABLE.items():
        assert d.op == op and d.doc and (d.kind == OpKind.SOURCE or d.arity[0] >= 1)


def test_builder_infers_types_and_printer() -> None:
    g = small_graph()
    verify(g)
    text = str(g)
    assert "graph small(%x: f32[2,3])" in text
    assert "%matmul = matmul(%x, %w) : f32[2,4]" in text
    assert "return (z=%relu)" in text
    mp = g.add(Op.MAX_POOL2D, [g.call(Op.RESHAPE, g.outputs[0], shape=(1, 1, 2, 4))], {"kernel": (2, 2),
                                                                                     "stride": (1, 1)})
    assert [str(v.type) for v in mp.outputs] == ["f32[1,1,1,3]", "i64[1,1,1,3]"]
    assert mp.outputs[1].name == f"{mp.name}.1"


def test_builder_rejects_bad_shapes_with_context() -> None:
    g = Graph()
    x = g.input("x", TensorType((2, 3), F32))
    with pytest.raises(ShapeError, match=r"contracted sizes differ.*f32\[2,3\]"):
        g.add(Op.MATMUL, [x, x], source="model.py:7")
    with pytest.raises(ShapeError, match="model.py:7"):
        g.add(Op.MATMUL, [x, x], source="model.py:7")
    with pytest.raises(CompileError, match="unknown attribute"):
        g.add(Op.RELU, [x], {"bogus": 1})
    with pytest.raises(CompileError, match="takes 1..1 inputs"):
        g.add(Op.RELU, [x, x])


def test_interpreter_runs_and_checks_inputs() -> None:
    g = small_graph()
    x = np.ones((2, 3), np.float32)
    (z,) = Interpreter(g).run(x)
    np.testing.assert_array_equal(z, np.maximum(x @ g.parameters["w"] - 10, 0))
    with pytest.raises(InputError, match="takes 1 input"):
        Interpreter(g).run()
    with pytest.raises(InputError, match=r"must be f32\[2,3\]"):
        Interpreter(g).run(np.ones((2, 3), np.float64))


def test_interpreter_is_subclassable() -> None:
    seen: list[str] = []

    class Tracing(Interpreter):
        def unary(self, node: Node, args: list[np.ndarray]) -> np.ndarray:
            seen.append(node.name)
            return np.zeros_like(args[0])  # a "different arithmetic"

    (z,) = Tracing(small_graph()).run(np.ones((2, 3), np.float32))
    assert seen == ["relu"] and not z.any()
    interp = Interpreter(small_graph(), keep_env=True)
    interp.run(np.ones((2, 3), np.float32))
    assert {v.name for v in interp.env} >= {"x", "w", "matmul", "sub", "relu"}


def test_bf16_values_round() -> None:
    g = Graph()
    x = g.input("x", TensorType((3,), F32))
    y = g.call(Op.CAST, x, dtype=IRDType.BF16)
    g.set_outputs([g.call(Op.ADD, y, y)])
    verify(g)
    (out,) = Interpreter(g).run(np.array([1.0, 1.00390625, 3.14159], np.float32))
    assert out.dtype == IRDType.BF16.numpy
    np.testing.assert_array_equal(out.astype(np.float32), [2.0, 2.0, 6.28125])


# -- the verifier catches bad graphs ----------------------------------------------------------------

def _replace(g: Graph, i: int, **changes: object) -> Graph:
    g = g.copy()
    g.nodes[i] = dataclasses.replace(g.nodes[i], **changes)  # type: ignore[arg-type]
    return g


def test_verify_use_before_definition() -> None:
    g = small_graph()
    g.nodes = [g.nodes[0], g.nodes[2], g.nodes[1]] + g.nodes[3:]
    with pytest.raises(IRError, match=r"%w is not defined before use.*%matmul = matmul"):
        verify(g)


def test_verify_value_defined_twice_and_name_reuse() -> None:
    g = small_graph()
    g.nodes.append(g.nodes[-1])
    with pytest.raises(IRError, match="defined twice|used twice"):
        verify(g)


def test_verify_wrong_declared_type_names_node_and_source() -> None:
    g = small_graph()
    i = next(i for i, n in enumerate(g.nodes) if n.op == Op.MATMUL)
    bad = Value("matmul", TensorType((2, 5), F32))
    g = _replace(g, i, outputs=(bad,), source="net.py:12")
    with pytest.raises(IRError, match=r"declared output types f32\[2,5\].*gives f32\[2,4\].*at net.py:12"):
        verify(g)


def test_verify_shape_rule_failure() -> None:
    g = small_graph()
    i = next(i for i, n in enumerate(g.nodes) if n.op == Op.MATMUL)
    g = _replace(g, i, inputs=(g.nodes[i].inputs[0], g.nodes[i].inputs[0]))
    with pytest.raises(ShapeError, match=r"contracted sizes differ.*\(f32\[2,3\], f32\[2,3\]\)"):
        verify(g)


def test_verify_bad_attrs() -> None:
    g = small_graph()
    i = next(i for i, n in enumerate(g.nodes) if n.op == Op.MATMUL)
    with pytest.raises(IRError, match="attribute out_dtype=3 is not IRDType"):
        verify(_replace(g, i, attrs=Attrs(out_dtype=3)))
    with pytest.raises(IRError, match="missing attribute 'out_dtype'"):
        verify(_replace(g, i, attrs=Attrs()))
    with pytest.raises(IRError, match=r"unknown attribute\(s\) \['zap'\]"):
        verify(_replace(g, i, attrs=Attrs(out_dtype=None, zap=1)))


def test_verify_params_inputs_outputs_consts() -> None:
    g = small_graph()
    g2 = g.copy()
    g2.parameters["w"] = np.zeros((4, 3), np.float32)
    with pytest.raises(IRError, match=r"holds f32\[4,3\], declared f32\[3,4\]"):
        verify(g2)
    g2 = g.copy()
    del g2.parameters["w"]
    with pytest.raises(IRError, match="not in graph.parameters"):
        verify(g2)
    g2 = g.copy()
    g2.inputs = []
    with pytest.raises(IRError, match="INPUT nodes in order"):
        verify(g2)
    g2 = g.copy()
    g2.outputs = [Value("ghost", TensorType((1,), F32))]
    with pytest.raises(IRError, match="ghost is not defined"):
        verify(g2)
    i = next(i for i, n in enumerate(g.nodes) if n.op == Op.CONST)
    with pytest.raises(IRError, match="not a f32 scalar"):
        verify(_replace(g, i, attrs=Attrs(value=True, dtype=F32)))


def test_replace_uses_and_dce() -> None:
    g = small_graph()
    relu = g.find(Op.RELU)[0]
    g.replace_uses({relu.output: relu.inputs[0]})
    assert g.eliminate_dead_code() == 1 and not g.find(Op.RELU)
    verify(g)
    with pytest.raises(ShapeError, match="types differ"):
        g.replace_uses({g.inputs[0]: g.outputs[0]})


def test_maybe_dump(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    monkeypatch.delenv("DOJOC_DEBUG", raising=False)
    maybe_dump(small_graph(), "frontend")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("DOJOC_DEBUG", "1")
    maybe_dump(small_graph(), "frontend")
    assert "=== dojoc IR after frontend ===" in capsys.readouterr().err
    monkeypatch.setenv("DOJOC_DEBUG_DIR", str(tmp_path))
    maybe_dump(small_graph(), "fold")
    (f,) = tmp_path.glob("*_fold.txt")
    assert "graph small" in f.read_text()


def test_docs_op_table_is_current() -> None:
    from pathlib import Path

    from dojoc.ir.docgen import BEGIN, END, op_table_markdown

    text = (Path(__file__).parents[2] / "docs" / "ir.md").read_text()
    current = text[text.index(BEGIN):text.index(END) + len(END)]
    assert current == op_table_markdown(), "docs/ir.md is stale: run python -m dojoc.ir.docgen and paste its output"
