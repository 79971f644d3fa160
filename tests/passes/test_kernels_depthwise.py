"""The depthwise convolution kernel (dojoc/codegen/kernels/depthwise.py) against eager PyTorch through
`dojoc.compile` on mesh4x4: geometry (stride, padding, dilation, kernel size, odd sizes, channel multiplier,
bias, batch), precisions, the fused activation, weights streamed when resident SRAM is full, its decision
in the mapping (kernel "depthwise", editable), and the matrix kernel when a mapping asks for it."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

import dojoc
from dojoc.codegen.kernels import depthwise
from dojoc.codegen.sram import SramPlan
from dojoc.errors import MappingError
from dojoc.mapping.model import Mapping
from isa.presets import load_machine

CONVS: dict[str, dict[str, Any]] = {
    "3x3": dict(c=8, k=3, padding=1),
    "3x3_stride2": dict(c=8, k=3, stride=2, padding=1),
    "no_padding_nobias": dict(c=6, k=3, bias=False),
    "dilation2": dict(c=4, k=3, padding=2, dilation=2),
    "multiplier2": dict(c=4, o=8, k=3, padding=1),
    "5x5_stride2_mult3": dict(c=3, o=9, k=5, stride=2, padding=2),
    "asym": dict(c=5, k=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    "pad_beyond_kernel": dict(c=4, k=1, padding=2),  # border outputs read only padding: bias only
    "stride3_dilation2": dict(c=7, k=3, stride=3, padding=2, dilation=2),
}


ESTIMATE = depthwise.estimate


@pytest.fixture(autouse=True)
def always_depthwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the depthwise kernel whatever the cost model prefers (on a 16-core mesh the matrix kernel is
    sometimes faster), unless a mapping says otherwise."""
    monkeypatch.setattr(depthwise, "estimate", lambda ctx, node: 0)


def conv(name: str) -> torch.nn.Conv2d:
    kw = dict(CONVS[name])
    c = kw.pop("c")
    return torch.nn.Conv2d(c, kw.pop("o", c), kw.pop("k"), groups=c, **kw).eval()


def run(model: torch.nn.Module, x: torch.Tensor, precision: str, machine: Any = "mesh4x4",
        **kw: Any) -> tuple[dojoc.Program, np.ndarray, np.ndarray]:
    prog = dojoc.compile(model, (x,), machine=machine, precision=precision, **kw)
    got = prog(x).numpy().astype(np.float32)
    with torch.no_grad():
        want = model(x).numpy()
    return prog, got, want


def check(model: torch.nn.Module, x: torch.Tensor, precision: str, machine: Any = "mesh4x4",
          **kw: Any) -> dojoc.Program:
    prog, got, want = run(model, x, precision, machine, **kw)
    assert got.shape == want.shape
    if precision == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    else:  # bf16 inputs and weights, FP32 arithmetic, one rounding of the result
        np.testing.assert_allclose(got, want, rtol=3e-2, atol=3e-2)
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999
    return prog


def kernels(prog: dojoc.Program) -> dict[str, str]:
    return {om.op: om.kernel for om in prog.mapping.ops}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", list(CONVS))
def test_depthwise_matches_eager(name: str, precision: str) -> None:
    torch.manual_seed(0)
    prog = check(conv(name), torch.randn(2, CONVS[name]["c"], 11, 13), precision)
    assert list(kernels(prog).values()) == ["depthwise"]


def test_depthwise_cfp8_runs_with_bf16_weights() -> None:
    torch.manual_seed(1)
    _, got, want = run(conv("3x3"), torch.randn(1, 8, 9, 9), "cfp8")
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999  # no CFP8 rounding on the vector unit


def test_fused_activation_and_batch_norm() -> None:
    """A MobileNet block's depthwise part: conv, batch norm (folded into it), ReLU (fused)."""
    torch.manual_seed(2)
    block = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                                torch.nn.BatchNorm2d(16), torch.nn.ReLU()).eval()
    block[1].running_mean.uniform_(-1, 1)
    block[1].running_var.uniform_(0.5, 2)
    prog = check(block, torch.randn(2, 16, 12, 12), "fp32")
    assert set(kernels(prog).values()) == {"depthwise", "epilogue"}


def test_large_layer_spreads_over_cores_in_blocks() -> None:
    """Several channel, row and column blocks, over several cores."""
    torch.manual_seed(3)
    prog = check(torch.nn.Conv2d(48, 48, 3, padding=1, groups=48).eval(), torch.randn(1, 48, 40, 40), "bf16")
    (om,) = prog.mapping.ops
    assert om.kernel == "depthwise" and len(om.cores) > 1 and om.predicted_cycles > 0
    assert prog.report is not None and prog.report.cores_used == len(om.cores)


def test_weights_streamed_when_resident_sram_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SramPlan, "alloc_resident", lambda self, nbytes: None)
    torch.manual_seed(4)
    check(conv("multiplier2"), torch.randn(2, 4, 10, 10), "fp32", "mesh1x1")


def test_mapping_lists_the_decision_and_a_user_may_edit_it() -> None:
    torch.manual_seed(5)
    model, x = conv("3x3_stride2"), torch.randn(2, 8, 11, 13)
    prog = check(model, x, "fp32")
    (om,) = prog.mapping.ops
    assert om.kernel == "depthwise" and dict(om.tile).keys() == {"channels", "rows", "cols"}
    assert dict(om.split).keys() == {"channels", "batch", "rows", "cols"}
    # other tiles and cores
    d = prog.mapping.to_dict()
    d["ops"][0].update(cores="3,7,9", tile={"channels": 4, "rows": 2, "cols": 5},
                       split={"channels": 2, "batch": 2, "rows": 3, "cols": 2})
    prog2 = check(model, x, "fp32", mapping=d)
    (om2,) = prog2.mapping.ops
    assert om2.cores == (3, 7, 9) and dict(om2.tile) == {"channels": 4, "rows": 2, "cols": 5}
    # a split that does not match the tile is an error that says so
    d["ops"][0]["split"] = {"channels": 1, "batch": 2, "rows": 3, "cols": 2}
    with pytest.raises(MappingError, match="split"):
        dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", mapping=d)


def test_multiplier_tile_must_keep_an_input_channels_outputs_together() -> None:
    model, x = conv("multiplier2"), torch.randn(1, 4, 8, 8)
    d = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32").mapping.to_dict()
    d["ops"][0].update(cores="0", tile={"channels": 3, "rows": 8, "cols": 8},
                       split={"channels": 3, "batch": 1, "rows": 1, "cols": 1})
    with pytest.raises(MappingError, match="multiple of the channel multiplier"):
        dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", mapping=d)


def test_a_mapping_may_ask_for_the_matrix_kernel() -> None:
    torch.manual_seed(6)
    model, x = conv("3x3"), torch.randn(1, 8, 9, 9)
    m = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32").mapping
    d = m.to_dict()
    d["ops"][0] = {"op": d["ops"][0]["op"], "kernel": "conv2d", "cores": "0", "split": {
        "groups": 8, "out_channels": 1, "batch": 1, "rows": 1, "cols": 1},
        "tile": {"out_channels": 1, "rows": 9, "cols": 9, "taps": 9, "channels": 1}, "resident": False}
    prog = check(model, x, "fp32", mapping=Mapping.from_dict(d))
    assert list(kernels(prog).values()) == ["conv2d"]


def cycles(model: torch.nn.Module, x: torch.Tensor, depthwise_kernel: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    with monkeypatch.context() as mp:
        mp.setattr(depthwise, "chosen", lambda ctx, node, matrix: depthwise_kernel)
        prog = check(model, x, "bf16")
    assert prog.report is not None
    return prog.report.cycles


@pytest.mark.parametrize("c, h, k, stride", [(64, 16, 3, 2), (16, 32, 5, 1)], ids=["depthwise", "matrix"])
def test_the_cost_model_takes_the_faster_kernel(c: int, h: int, k: int, stride: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On 16 cores a strided 3 x 3 layer is faster on the vector unit (it reads its input once), while a
    5 x 5 one over fewer channels is compute-bound and faster as m = 1 matrix ops; the dispatch predicts
    which, and the emulator agrees."""
    torch.manual_seed(7)
    model, x = torch.nn.Conv2d(c, c, k, stride=stride, padding=k // 2, groups=c).eval(), torch.randn(1, c, h, h)
    fast = {True: cycles(model, x, True, monkeypatch), False: cycles(model, x, False, monkeypatch)}
    monkeypatch.setattr(depthwise, "estimate", ESTIMATE)
    taken = kernels(check(model, x, "bf16"))
    assert list(taken.values()) == ["depthwise" if fast[True] < fast[False] else "conv2d"], (fast, taken)


def test_small_sram_machine() -> None:
    m = dataclasses.replace(load_machine("mesh2x2"), sram_bytes=96 * 1024)
    torch.manual_seed(8)
    check(torch.nn.Conv2d(32, 32, 3, padding=1, groups=32).eval(), torch.randn(1, 32, 24, 24), "bf16", m)
