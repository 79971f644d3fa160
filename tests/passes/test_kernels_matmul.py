"""Matmul and convolution kernels against eager PyTorch on small meshes: precisions, broadcasting, conv
geometry (stride, padding, dilation, groups, depthwise, bias, conv1d), resident weights and their load
phase, streaming when SRAM is short, and how many cores an op spreads over."""

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from dojoc.codegen.kernels import conv as conv_kernel
from dojoc.codegen.lower import lower_graph
from dojoc.codegen.result import LOAD_BARRIER, Lowered
from dojoc.codegen.sram import SramPlan
from dojoc.errors import SramOverflowError
from dojoc.frontend import from_module
from isa.machine import Machine
from isa.presets import load_machine
from runtime_emu import run
from runtime_emu.emulator import RunResult


def compile_and_run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], precision: str,
                    machine: str | Machine = "mesh2x2") -> tuple[np.ndarray, np.ndarray, Lowered, RunResult]:
    m = load_machine(machine) if isinstance(machine, str) else machine
    low = lower_graph(from_module(module.eval(), inputs), m, precision)
    res = run(low.image, [x.numpy() for x in inputs])
    with torch.no_grad():
        want = module(*inputs).numpy()
    return res.outputs[low.output_names[0]].astype(np.float32), want, low, res


def pcc(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.corrcoef(got.astype(np.float64).ravel(), want.astype(np.float64).ravel())[0, 1])


def check(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], precision: str,
          machine: str | Machine = "mesh2x2") -> tuple[Lowered, RunResult]:
    got, want, low, res = compile_and_run(module, inputs, precision, machine)
    assert got.shape == want.shape
    if precision == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    elif precision == "bf16":
        assert pcc(got, want) >= 0.99
    else:  # cfp8: accuracy is reported, not held to a bar; this only catches gross errors
        assert pcc(got, want) >= 0.95
    return low, res


class MatMul(torch.nn.Module):
    def forward(self, a, b):
        return a @ b


class MatMulT(torch.nn.Module):
    def forward(self, a, b):
        return a @ b.T


class XWt(torch.nn.Module):
    """x @ w.T with w a parameter."""

    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n, k) / k**0.5)

    def forward(self, x):
        return x @ self.w.T


@pytest.mark.parametrize("precision", ["fp32", "bf16", "cfp8"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear(precision: str, bias: bool) -> None:
    torch.manual_seed(0)
    check(torch.nn.Linear(64, 48, bias=bias), (torch.randn(2, 5, 64),), precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "cfp8"])
def test_batched_matmul_with_broadcast(precision: str) -> None:
    torch.manual_seed(1)
    check(MatMul(), (torch.randn(3, 1, 20, 33), torch.randn(4, 33, 17)), precision, "mesh4x4")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_transposed_operands(precision: str) -> None:
    torch.manual_seed(2)
    check(MatMulT(), (torch.randn(40, 70), torch.randn(30, 70)), precision, "mesh4x4")  # strided B
    check(MatMul(), (torch.randn(70, 40).T, torch.randn(70, 30)), precision, "mesh4x4")  # strided A
    check(XWt(70, 30), (torch.randn(3, 40, 70),), precision, "mesh4x4")


def test_long_k_is_chunked() -> None:
    torch.manual_seed(3)
    check(MatMul(), (torch.randn(16, 5000), torch.randn(5000, 24)), "fp32")


CONVS: dict[str, dict[str, Any]] = {
    "plain": dict(c=8, o=16, k=3),
    "stride_pad": dict(c=8, o=16, k=3, stride=2, padding=1),
    "dilation": dict(c=8, o=16, k=3, padding=2, dilation=2),
    "asym": dict(c=8, o=16, k=(3, 5), stride=(2, 1), padding=(0, 3)),
    "groups": dict(c=8, o=16, k=3, padding=1, groups=2),
    "depthwise": dict(c=8, o=8, k=3, padding=1, groups=8, bias=False),
    "depthwise_mult": dict(c=4, o=8, k=5, stride=2, padding=2, groups=4),
    "pad_beyond_kernel": dict(c=4, o=6, k=1, padding=2),  # border outputs read only padding: bias only
    "7x7_stem": dict(c=3, o=16, k=7, stride=2, padding=3),
}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", list(CONVS))
def test_conv2d(name: str, precision: str) -> None:
    torch.manual_seed(4)
    kw = dict(CONVS[name])
    conv = torch.nn.Conv2d(kw.pop("c"), kw.pop("o"), kw.pop("k"), **kw)
    check(conv, (torch.randn(2, conv.in_channels, 11, 13),), precision, "mesh4x4")


class FunctionalConv(torch.nn.Module):
    """A bias that is an activation (streamed each call, converted to FP32 in SRAM), with a weight that is
    a parameter (resident) or an activation (streamed)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 2, 3, 3))

    def forward(self, x, b, w=None):
        return torch.nn.functional.conv2d(x, self.w if w is None else w, b * 2.0, padding=1, groups=2)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "cfp8"])
def test_conv2d_with_activation_operands(precision: str) -> None:
    torch.manual_seed(11)
    x, b = torch.randn(2, 4, 9, 9), torch.randn(6)
    check(FunctionalConv(), (x, b), precision, "mesh4x4")
    check(FunctionalConv(), (x, b, torch.randn(6, 2, 3, 3)), precision, "mesh4x4")


def test_conv2d_cfp8() -> None:
    torch.manual_seed(5)
    check(torch.nn.Conv2d(8, 16, 3, padding=1), (torch.randn(1, 8, 12, 12),), "cfp8", "mesh4x4")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_conv1d(precision: str) -> None:
    torch.manual_seed(6)
    check(torch.nn.Conv1d(4, 6, 5, padding=2, stride=2), (torch.randn(2, 4, 30),), precision)


def test_resident_weights_load_once_before_the_call() -> None:
    torch.manual_seed(7)
    low, res = check(torch.nn.Linear(64, 32), (torch.randn(8, 64),), "fp32")
    releases = res.stats.barrier_releases
    load = [c for b, c in releases if b == LOAD_BARRIER]
    assert len(load) == 1 and load[0] > 0  # the load phase moved the weights
    assert any(b != LOAD_BARRIER and c > load[0] for b, c in releases)  # the call ran after it
    # the weight DMAs come before the load barrier; the call streams only the activations
    code = next(s.code for s in low.image.sections if 0 in s.cores)
    barrier = next(i for i, ins in enumerate(code) if ins.spec.mnemonic == "barrier")
    assert any(ins.spec.mnemonic == "dmald" for ins in code[:barrier])


def small_sram(name: str, nbytes: int) -> Machine:
    return dataclasses.replace(load_machine(name), sram_bytes=nbytes)


def load_and_call_dmas(low: Lowered) -> tuple[int, int]:
    """DMA loads before and after the load barrier, summed over code sections."""
    before = after = 0
    for s in low.image.sections:
        code = list(s.code)
        b = next(i for i, ins in enumerate(code) if ins.spec.mnemonic == "barrier")
        before += sum(ins.spec.mnemonic == "dmald" for ins in code[:b])
        after += sum(ins.spec.mnemonic == "dmald" for ins in code[b:])
    return before, after


def test_weights_stream_when_resident_sram_is_full() -> None:
    torch.manual_seed(8)
    # at most 128 KiB less the code gap (a fifth) and the op's scratch per core: 4 x 102 KiB < the 512 KiB weight
    m = small_sram("mesh2x2", 128 * 1024)
    low, _ = check(torch.nn.Linear(512, 512, bias=False), (torch.randn(16, 512),), "bf16", m)
    assert load_and_call_dmas(low)[0] == 0
    # 4 x (102 KiB less the op's scratch) < the 288 KiB weight: summa keeps the chunks that find room (each
    # byte once) and streams the others in every call. The small scratch also forces short K chunks.
    low, _ = check(torch.nn.Conv2d(128, 64, 3, padding=1, bias=False), (torch.randn(1, 128, 16, 16),), "fp32",
                   small_sram("mesh2x2", 128 * 1024))
    kept = sum(s.nbytes for v in low.mapping.values if v.where == "sram" for s in v.shards)
    assert 0 < kept < 64 * 128 * 9 * 4


def test_some_weight_blocks_resident_others_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A core whose resident SRAM fills up part way through its weight blocks streams the rest."""
    first = SramPlan.alloc_resident

    def only_one(self: SramPlan, nbytes: int) -> int | None:
        return None if self.resident else first(self, nbytes)

    monkeypatch.setattr(SramPlan, "alloc_resident", only_one)

    class BatchedWeight(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 24, 16))

        def forward(self, x):
            return x @ self.w

    torch.manual_seed(9)
    for module, x in ((torch.nn.Conv2d(8, 16, 3, padding=1, groups=4), torch.randn(1, 8, 10, 10)),
                      (BatchedWeight(), torch.randn(3, 10, 24))):
        low, _ = check(module, (x,), "fp32", "mesh1x1")
        before, after = load_and_call_dmas(low)
        assert before > 0 and after > 0


@pytest.mark.parametrize("steps", [None, 1, 4], ids=["stacked", "one_tap", "four_taps"])
def test_conv_taps_wholly_in_padding(steps: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-row input: the taps of the kernel's other rows read only padding. Stacked with others they
    are zero-filled; alone in a step they are skipped."""
    if steps is not None:
        monkeypatch.setattr(conv_kernel, "_steps", lambda cv, kmax: [(steps, cv.cg)])
    torch.manual_seed(10)
    check(torch.nn.Conv2d(4, 6, 3, padding=1), (torch.randn(2, 4, 1, 12),), "fp32")


def test_too_big_for_sram_names_the_op() -> None:
    with pytest.raises(SramOverflowError, match="matmul"):
        compile_and_run(MatMul(), (torch.randn(8, 64), torch.randn(64, 8)), "fp32", small_sram("mesh1x1", 1024))


def test_big_matmul_spreads_over_cores_and_a_tiny_one_does_not() -> None:
    m = load_machine("mesh4x4")
    big = lower_graph(from_module(MatMul().eval(), (torch.randn(512, 512), torch.randn(512, 512))), m, "fp32")
    tiny = lower_graph(from_module(MatMul().eval(), (torch.randn(4, 8), torch.randn(8, 4))), m, "fp32")
    conv = lower_graph(from_module(torch.nn.Conv2d(32, 32, 3).eval(), (torch.randn(1, 32, 64, 64),)), m, "bf16")
    assert big.cores_used == 16 and conv.cores_used >= 8 and tiny.cores_used == 1
