"""Helpers for the IR and frontend tests: lower a model, verify the IR, interpret it, compare with eager.

(A uniquely named module rather than conftest, so that test folders never clash.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from dojoc.frontend import from_aot, from_module
from dojoc.ir import Graph, Interpreter, IRDType, verify


def to_np(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.detach().view(torch.int16).numpy().view(IRDType.BF16.numpy)
    return t.detach().numpy()


def compare(graph: Graph, inputs: Sequence[torch.Tensor], expected: Any, rtol: float, atol: float) -> None:
    outs = Interpreter(graph).run(*[to_np(x) for x in inputs])
    ref = [r for r in pytree.tree_leaves(expected) if isinstance(r, torch.Tensor)]
    assert len(outs) == len(ref), (len(outs), len(ref))
    for name, o, r in zip(graph.output_names, outs, ref, strict=True):
        assert o.shape == tuple(r.shape), (name, o.shape, r.shape)
        assert o.dtype == to_np(r).dtype, (name, o.dtype, r.dtype)
        np.testing.assert_allclose(o.astype(np.float32) if o.dtype == IRDType.BF16.numpy else o,
                                   r.float().numpy() if r.dtype == torch.bfloat16 else r.numpy(),
                                   rtol=rtol, atol=atol, err_msg=f"output {name}")


def check_export(model: Any, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None, *,
                 rtol: float = 1e-4, atol: float = 1e-4, fold: bool = True) -> Graph:
    """torch.export -> IR -> verify -> Interpreter, against eager."""
    graph = verify(from_module(model, tuple(args), kwargs, fold=fold))
    with torch.no_grad():
        expected = model(*args, **(kwargs or {}))
    inputs = [x for x in pytree.tree_leaves((tuple(args), dict(kwargs or {}))) if isinstance(x, torch.Tensor)]
    compare(graph, inputs, expected, rtol, atol)
    return graph


def check_aot(model: Callable[..., Any], args: Sequence[torch.Tensor], *, rtol: float = 1e-4,
              atol: float = 1e-4) -> Graph:
    """dynamo graph (captured by a recording backend) -> AOTAutograd -> IR, against eager."""
    captured: list[tuple[torch.fx.GraphModule, list[Any]]] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        captured.append((gm, example_inputs))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        expected = torch.compile(model, backend=backend, fullgraph=True)(*args)
    torch._dynamo.reset()
    (gm, example), = captured
    graph = verify(from_aot(gm, example))
    compare(graph, list(args), expected, rtol, atol)
    return graph


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Give every batch norm non-trivial running statistics (fresh ones are 0 and 1); return the model in eval."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()
