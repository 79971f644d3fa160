"""torch.compile(backend="dojo"): registration, fallback, guards, grad mode, reports."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import dojoc
from dojoc.backend import FallbackWarning

Options = dict[str, str | int | bool | Callable[..., Any]]
FP32: Options = {"machine": "mesh4x4", "precision": "fp32"}


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()


class MLP(torch.nn.Module):
    def __init__(self, middle: str = "relu") -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(16, 32)
        self.l2 = torch.nn.Linear(32, 8)
        self.middle = middle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.l1(x))
        if self.middle == "sin":
            y = torch.sin(y)
        elif self.middle == "sin+cos":
            y = torch.cos(y) + torch.sin(y)  # independent: both are reported
        return self.l2(y)


MLP_FLOPS = 2 * 4 * 16 * 32 + 2 * 4 * 32 * 8


def test_backend_is_registered_by_entry_point() -> None:
    from torch._dynamo.backends.registry import list_backends, lookup_backend

    assert "dojo" in list_backends(exclude_tags=())
    assert lookup_backend("dojo").__name__ == "dojo_backend"


def test_mlp_runs_on_the_emulator() -> None:
    model, x = MLP().eval(), torch.randn(4, 16)
    compiled = torch.compile(model, backend="dojo", options=FP32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        with torch.no_grad():
            y = compiled(x)
            expected = model(x)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
    r = dojoc.last_report()
    assert r is not None and r.flops == MLP_FLOPS and r.cycles > 0 and r.load_cycles > 0
    assert (r.machine, r.precision, r.options["fallback"]) == ("mesh4x4", "fp32", True)


def test_fallback_runs_unsupported_ops_eagerly() -> None:
    model, x = MLP("sin").eval(), torch.randn(4, 16)
    compiled = torch.compile(model, backend="dojo", options=FP32)
    with pytest.warns(FallbackWarning, match=r"not supported, running them eagerly: aten\.sin\.default"):
        with torch.no_grad():
            y = compiled(x)
    with torch.no_grad():
        torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-4)
    r = dojoc.last_report()
    assert r is not None and r.flops == MLP_FLOPS  # both linears ran on the emulator, summed


def test_no_fallback_lists_every_unsupported_op() -> None:
    compiled = torch.compile(MLP("sin+cos").eval(), backend="dojo", options={**FP32, "fallback": False})
    with pytest.raises(dojoc.UnsupportedOpsError) as info, torch.no_grad():
        compiled(torch.randn(4, 16))
    names = [op for op, _, _ in info.value.ops]
    assert any("aten.sin" in n for n in names) and any("aten.cos" in n for n in names)
    assert "test_backend.py" in str(info.value)


def test_grad_mode_falls_back_with_a_warning() -> None:
    model, x = MLP().eval(), torch.randn(4, 16)
    compiled = torch.compile(model, backend="dojo", options=FP32)
    with torch.no_grad():
        compiled(x)
    assert dojoc.last_report() is not None
    with pytest.warns(FallbackWarning, match="training is not supported yet"):
        y = compiled(x)
    assert y.requires_grad and dojoc.last_report() is None
    torch.testing.assert_close(y, model(x))


def test_parameter_updates_and_new_shapes_recompile() -> None:
    model = MLP().eval()
    compiled = torch.compile(model, backend="dojo", options=FP32)
    with torch.no_grad():
        for batch in (4, 3, 5):
            x = torch.randn(batch, 16)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
        model.l2.weight.mul_(2)  # bumps the version: the frozen copy is stale
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
        model.l1.weight = torch.nn.Parameter(torch.randn(32, 16))  # a new tensor object
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_many_new_shapes_keep_a_bounded_number_of_programs() -> None:
    """Dynamo makes the batch dimension symbolic after the second shape; each new batch size is then a
    new signature, compiled once, and a graph keeps only its CACHED most recent programs."""
    import gc

    from dojoc.backend import CACHED
    from dojoc.program import Program

    model = MLP().eval()
    compiled = torch.compile(model, backend="dojo", options={"machine": "mesh2x2", "precision": "fp32"})
    live = []
    with torch.no_grad():
        for batch in range(1, 3 * CACHED + 1):
            x = torch.randn(batch, 16)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
            gc.collect()
            live.append(sum(type(o) is Program for o in gc.get_objects()))
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)  # the last one, cached
    assert max(live) <= CACHED + 2, live  # (the first, static graph's program, and this graph's CACHED)
    assert live[-1] == live[CACHED + 2], live  # flat once the cache is full


def test_graph_break_reports_are_summed() -> None:
    class Broken(MLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.l1(x))
            torch._dynamo.graph_break()
            return self.l2(y)

    model, x = Broken().eval(), torch.randn(4, 16)
    compiled = torch.compile(model, backend="dojo", options=FP32)
    with torch.no_grad():
        compiled(x)
        first = dojoc.last_report()
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    r = dojoc.last_report()
    assert r is not None and first is not None and r.flops == first.flops == MLP_FLOPS


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"machine": "nope"}, dojoc.MachineError, "unknown machine"),
    ({"machine": "mesh2x2", "precision": "fp16"}, dojoc.CompileError, "unknown precision"),
    ({"machine": "mesh2x2", "fallbak": True}, dojoc.CompileError, "unknown option"),
    ({"machine": "mesh2x2", "fallback": "yes"}, dojoc.CompileError, "fallback must be"),
])
def test_bad_options(options: Options, error: type[Exception], match: str) -> None:
    compiled = torch.compile(MLP().eval(), backend="dojo", options=options)
    with pytest.raises(error, match=match), torch.no_grad():
        compiled(torch.randn(4, 16))
