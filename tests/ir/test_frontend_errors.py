"""Frontend errors (unsupported ops, training mode, mutation), the tables, and constant folding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from ir_helpers import check_export

from dojoc.errors import CompileError, UnsupportedOpsError
from dojoc.frontend import (
    KEPT_OPS,
    decomposition_table,
    export_module,
    fold_constants,
    from_exported,
    from_module,
    supported_ops,
)
from dojoc.ir import Graph, Interpreter, IRDType, Op, TensorType, verify

aten = torch.ops.aten


class ManyUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = torch.sin(x)                       # no lowering
        b = torch.argmax(x, dim=1)             # no lowering
        c = self.up(x)                         # transposed convolution: the lowering refuses it
        d = torch.sort(x, dim=-1).values       # no lowering
        e = torch.relu(a) + 1                  # depends on an unsupported op: not reported again
        return a, b, c, d, e


def test_unsupported_ops_are_all_listed_at_once() -> None:
    with pytest.raises(UnsupportedOpsError) as info:
        from_module(ManyUnsupported().eval(), (torch.randn(1, 4, 5, 5),))
    ops = info.value.ops
    names = [op for op, _, _ in ops]
    assert len(ops) == 4, names
    assert names[0] == "aten.sin.default" and names[1] == "aten.argmax.default"
    assert names[2].startswith("aten.convolution.default (transposed convolution)")
    assert names[3] == "aten.sort.default"
    for _, shapes, source in ops:
        assert "f32[1,4,5,5]" in shapes and "test_frontend_errors.py:" in source
    msg = str(info.value)
    assert "4 unsupported op(s)" in msg and "aten.sin.default (f32[1,4,5,5]) -> f32[1,4,5,5] at " in msg


def test_training_mode_is_an_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    with pytest.raises(CompileError, match=r"training mode.*call \.eval\(\) before dojoc.compile"):
        export_module(model, (torch.randn(2, 4),))
    model.eval()
    model[1].train()
    with pytest.raises(CompileError, match=r"\(1\).*call \.eval\(\)"):
        export_module(model, (torch.randn(2, 4),))


def test_bad_models() -> None:
    with pytest.raises(CompileError, match="cannot compile a int"):
        export_module(42, (torch.randn(2),))
    with pytest.raises(CompileError, match="torch.export failed"):
        export_module(nn.Linear(3, 4).eval(), (torch.randn(2, 5),))


class Counter(nn.Module):
    calls: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return x * 2


def test_buffer_mutation_is_an_error() -> None:
    with pytest.raises(CompileError, match="mutates calls"):
        from_module(Counter().eval(), (torch.randn(3),))


def test_exported_program_passthrough_and_baked_inputs() -> None:
    def fn(x: torch.Tensor, *, scale: int, bias: torch.Tensor) -> torch.Tensor:
        return x * scale + bias

    ep = export_module(fn, (torch.randn(3),), {"scale": 3, "bias": torch.randn(3)})
    assert export_module(ep, ()) is ep
    g = from_exported(ep)
    assert [n.attrs["flat_index"] for n in g.find(Op.INPUT)] == [0, 2] and g.baked_inputs == {1: 3}
    sig = json.loads(json.dumps(g.signature()))
    assert [i["name"] for i in sig["inputs"]] == ["x", "bias"] and sig["in_spec"] is not None
    x, b = np.ones(3, np.float32), np.arange(3, dtype=np.float32)
    np.testing.assert_allclose(Interpreter(g).run(x, b)[0], x * 3 + b)


def test_tables() -> None:
    table = decomposition_table()
    assert not set(KEPT_OPS) & set(table)
    assert aten.hardswish.default in table and aten.std.correction in table
    ops = supported_ops()
    for op in KEPT_OPS:
        assert op in ops, op
    assert aten.addmm.default in ops and aten.convolution.default in ops and aten.sin.default not in ops


# -- constant folding -------------------------------------------------------------------------------

def test_fold_transposes_weights_and_keeps_broadcasts() -> None:
    g = Graph()
    x = g.input("x", TensorType((2, 3), IRDType.F32))
    w = g.param("w", np.arange(12, dtype=np.float32).reshape(4, 3))
    wt = g.call(Op.PERMUTE, w, perm=(1, 0))
    y = g.call(Op.MATMUL, x, wt)
    zeros = g.call(Op.EXPAND, g.const(0.0, IRDType.F32), shape=(2, 4))
    two = g.call(Op.ADD, g.const(1.0, IRDType.F32), g.const(1.0, IRDType.F32))
    g.set_outputs([g.call(Op.MUL, g.call(Op.MAXIMUM, y, zeros), two)])
    folded = fold_constants(verify(g))
    assert folded.op_counts() == {"matmul": 1, "expand": 1, "maximum": 1, "mul": 1}
    assert set(folded.parameters) == {"w.permute"} and folded.parameters["w.permute"].shape == (3, 4)
    assert [n.attrs["value"] for n in folded.find(Op.CONST)] == [0.0, 2.0]
    xs = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(Interpreter(folded).run(xs)[0], Interpreter(g).run(xs)[0])
    assert len(g.find(Op.PERMUTE)) == 1  # the input graph is left alone


def test_fold_respects_size_limit() -> None:
    g = Graph()
    a = g.param("a", np.ones((64,), np.float32))
    b = g.param("b", np.ones((64, 1), np.float32))
    g.set_outputs([g.call(Op.ADD, a, b)])  # 64 x 64 from 2 x 64 elements
    assert fold_constants(g, max_bytes=1024).op_counts() == {"add": 1}
    assert fold_constants(g).op_counts() == {}


def test_shape_arithmetic_folds() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        pos = torch.arange(n) * 2 + x.shape[0]
        return x.reshape(x.shape[0] * x.shape[1], -1) + pos.float() / n

    g = check_export(fn, (torch.randn(3, 4, 5),))
    assert g.op_counts() == {"reshape": 1, "add": 1}


def test_unfolded_graph_is_also_valid() -> None:
    g = check_export(lambda x: x + torch.arange(4) * 2, (torch.randn(2, 4),), fold=False)
    assert "mul" in g.op_counts()


def test_sdpa_dropout_and_conv_transpose_are_reported_with_reason() -> None:
    def fn(q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)

    with pytest.raises(UnsupportedOpsError, match="attention dropout"):
        from_module(fn, (torch.randn(1, 2, 4, 8),))


def test_unsupported_dtypes_are_reported() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return (x.double() * 2).float() + torch.sin(x)

    with pytest.raises(UnsupportedOpsError) as info:
        from_module(fn, (torch.randn(3),))
    assert [op.split(" (")[0] for op, _, _ in info.value.ops] == ["aten._to_copy.default", "aten.sin.default"]
    assert "float64" in info.value.ops[0][0]
    with pytest.raises(CompileError, match="user input x: dtype torch.float64"):
        from_module(lambda x: x * 2, (torch.randn(3, dtype=torch.float64),))
