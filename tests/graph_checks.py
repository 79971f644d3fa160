"""Checks that several test files share: a model through the fuse pass, a rewrite that must not change the
numbers, and a program's output against eager's."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dojoc.frontend import from_module
from dojoc.ir import Graph, Interpreter, Op
from dojoc.passes.fold_bn import fold_batch_norm
from dojoc.passes.fuse import fuse


def same_numbers(before: Graph, after: Graph, *inputs: np.ndarray) -> None:
    """The interpreter computes the rewritten graph exactly as the original one."""
    for a, b in zip(Interpreter(before).run(*inputs), Interpreter(after).run(*inputs), strict=True):
        np.testing.assert_array_equal(a, b)


def close_to_eager(got: torch.Tensor, want: torch.Tensor, precision: str) -> None:
    """fp32 within rtol = atol = 1e-4 of eager; bf16 a PCC of at least 0.99."""
    if precision == "fp32":
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    else:
        assert np.corrcoef(got.float().numpy().ravel(), want.float().numpy().ravel())[0, 1] >= 0.99


def fused_matmuls(model: torch.nn.Module, *inputs: torch.Tensor) -> tuple[Graph, Graph, list[tuple[Any, ...]]]:
    """(the model's graph with batch norms folded, that graph after fuse, its matmuls' epilogues sorted)."""
    before = fold_batch_norm(from_module(model, inputs))
    graph = fuse(before)
    return before, graph, sorted(n.attrs["epilogue"] for n in graph.find(Op.MATMUL))
