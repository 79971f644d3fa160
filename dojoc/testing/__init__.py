"""Emulator-backed unit tests for users: `assert_matches_eager`, and a pytest plugin
(`dojoc.testing.plugin`, registered by entry point) with `--dojo-machine` and a `dojo_machine` fixture.

    from dojoc.testing import assert_matches_eager

    def test_block(dojo_machine):
        report = assert_matches_eager(MyBlock().eval(), torch.randn(2, 8), machine=dojo_machine, precision="fp32")
        assert report.cycles < 100_000

Tolerances by precision (DESIGN.md, "Correctness"):
- fp32: every output within rtol = atol = 1e-4 (integer and bool outputs exactly);
- bf16: float outputs with a Pearson correlation (PCC) of at least 0.99 against eager, and within a loose
  allclose (rtol = 0.05, atol = 0.05 x the largest magnitude of the output); integer and bool outputs
  are not compared (a rounding can flip an index);
- cfp8: nothing is asserted; the accuracy is in the returned report (`pcc`, `max_abs_err`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dojoc.report import Report

__all__ = ["assert_matches_eager", "mismatch", "TOLERANCES"]

# precision -> (rtol, atol, minimum PCC); bf16's atol is relative to the output's largest magnitude
TOLERANCES: dict[str, tuple[float, float, float | None]] = {
    "fp32": (1e-4, 1e-4, None),
    "bf16": (5e-2, 5e-2, 0.99),
    "cfp8": (float("inf"), float("inf"), None),
}


def assert_matches_eager(fn_or_module: Any, *inputs: Any, machine: Any = "mesh4x4", precision: str = "bf16",
                         example_kwargs: Mapping[str, Any] | None = None) -> Report:
    """Compile `fn_or_module` (an nn.Module in eval mode, a callable or an ExportedProgram) for `machine`,
    run it on the emulator with `inputs` (and `example_kwargs`), compare with eager under the precision's
    tolerance (module docstring) and return the report, with `pcc` and `max_abs_err` filled in.

    Raises AssertionError naming the output that does not match; compile errors propagate.
    """
    import torch
    from torch.utils import _pytree as pytree

    import dojoc
    from dojoc.program import set_last_report
    from dojoc.report import accuracy

    kwargs = dict(example_kwargs or {})
    program = dojoc.compile(fn_or_module, tuple(inputs), example_kwargs=kwargs, machine=machine,
                            precision=precision)
    actual = program(*inputs, **kwargs)
    with torch.no_grad():
        eager = fn_or_module.module() if isinstance(fn_or_module, torch.export.ExportedProgram) else fn_or_module
        expected = eager(*inputs, **kwargs)
    got, want = pytree.tree_leaves(actual), [x for x in pytree.tree_leaves(expected) if isinstance(x, torch.Tensor)]
    if len(got) != len(want):
        raise AssertionError(f"the program returned {len(got)} tensors, eager {len(want)}")
    pcc, err = accuracy(got, want)
    assert program.report is not None
    report = dataclasses.replace(program.report, pcc=pcc, max_abs_err=err)
    program.report = report
    set_last_report(report)
    problem = mismatch(got, want, precision, program.output_names)
    if problem:
        raise AssertionError(problem)
    return report


def mismatch(got: Sequence[Any], want: Sequence[Any], precision: str,
             names: Sequence[str] | None = None) -> str | None:
    """Why flat outputs `got` do not match eager's `want` under the precision's tolerance, or None."""
    import torch

    from dojoc.report import accuracy

    rtol, atol, min_pcc = TOLERANCES[precision]
    if len(got) != len(want):
        return f"the program returned {len(got)} tensors, eager {len(want)}"
    for i, (a, e) in enumerate(zip(got, want, strict=True)):
        where = f"output {i}" + (f" ({names[i]})" if names is not None and i < len(names) else "")
        if tuple(a.shape) != tuple(e.shape):
            return f"{where}: shape {list(a.shape)}, eager {list(e.shape)}"
        if a.dtype != e.dtype:
            return f"{where}: dtype {a.dtype}, eager {e.dtype}"
        if precision == "cfp8":
            continue
        if not e.is_floating_point():
            if precision == "fp32" and not torch.equal(a, e):
                return f"{where}: {int((a != e).sum())} of {e.numel()} elements differ from eager"
            continue
        a64, e64 = a.double(), e.double()
        p, _ = accuracy([a64], [e64])
        if precision == "bf16":
            scale = float(e64.abs().max()) if e64.numel() else 0.0
            tol_a = atol * max(scale, 1e-6)
            if min_pcc is not None and not p >= min_pcc:
                return f"{where}: PCC {p:.5f} against eager, below {min_pcc}"
        else:
            tol_a = atol
        if not torch.allclose(a64, e64, rtol=rtol, atol=tol_a, equal_nan=True):
            err = float((a64 - e64).abs().max())
            return (f"{where} differs from eager beyond rtol={rtol}, atol={tol_a:.3g} at {precision}: "
                    f"max |err| {err:.4g}, PCC {p:.6f}")
    return None
