"""Three small models through all three entry points: `dojoc.compile`, `torch.compile(backend="dojo")` and
the command line (`dojoc compile FILE:factory --input SPEC -o DIR`, then `dojoc run DIR`).

Models: an MLP, a small CNN (strided and padded convolutions, batch norm, relu, max pooling, adaptive
average pooling, linear) and a pre-norm transformer block (layer norm, attention through
F.scaled_dot_product_attention, GELU, residuals); also a block built on nn.MultiheadAttention.

Each runs at fp32 (within rtol = atol = 1e-4 of eager) and bf16 (PCC >= 0.99 against eager FP32) on mesh4x4,
and every report is checked for being real: cycles come from an emulator run of the program (re-running
the image gives the same count), utilization is recomputed here from the machine's fields, and flops equal
torch.utils.flop_counter's count of the eager model.

This file is also the command-line TARGET: `dojoc compile tests/e2e/test_three_paths.py:mlp ...`; the
factories below (`mlp`, `cnn`, `block`, `mha_block`) return `(module, example_inputs)`, seeded, so every
path sees the same weights. test_golden_models.py and benchmarks/models.py reuse them.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import FlopCounterMode

import dojoc
from dojoc.report import Report, accuracy, load_phase_end
from isa.presets import load_machine

MACHINE = "mesh4x4"
HERE = Path(__file__).resolve()


# -- the models --------------------------------------------------------------------------------------

class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(torch.relu(self.fc1(x)))))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(self.gap(x), 1))


class Block(nn.Module):
    """A pre-norm transformer block: layer norm, multi-head attention through sdpa, a GELU MLP, residuals."""

    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class MHABlock(nn.Module):
    """The same block with nn.MultiheadAttention (its fused fast path must be off for torch.compile)."""

    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.down(F.gelu(self.up(self.ln2(x))))


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial running statistics and affine parameters for every batch norm (so folding matters)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert m.running_mean is not None and m.running_var is not None
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
    return model


# The factories (also command-line targets): (module in eval mode, example inputs), seeded.
# SPECS: each model's input as a `dojoc compile --input` SPEC.

def mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return MLP().eval(), (torch.randn(8, 64),)


def cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return randomize_bn(SmallCNN()).eval(), (torch.randn(2, 3, 32, 32),)


def block() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return Block().eval(), (torch.randn(2, 16, 64),)


def mha_block() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return MHABlock().eval(), (torch.randn(2, 16, 64),)


FACTORIES: dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "mlp": mlp, "cnn": cnn, "block": block, "mha_block": mha_block}
SPECS = {"mlp": "8x64", "cnn": "2x3x32x32", "block": "2x16x64", "mha_block": "2x16x64"}
PRECISIONS = ("fp32", "bf16")


# -- checks --------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_mha_fastpath() -> Iterator[None]:
    """nn.MultiheadAttention's fused fast path (aten._native_multi_head_attention) is not lowered; off, it
    decomposes into linears and sdpa. Restored afterwards."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    torch.backends.mha.set_fastpath_enabled(before)


def eager(model: nn.Module, args: tuple[Any, ...]) -> tuple[list[torch.Tensor], int]:
    """Eager FP32 outputs (flat) and torch's flop count of the same call."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(*args)
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)], int(counter.get_total_flops())


def check_accuracy(got: list[torch.Tensor], want: list[torch.Tensor], precision: str) -> float:
    """fp32: within rtol = atol = 1e-4 of eager; bf16: PCC >= 0.99 against eager FP32. Returns the PCC."""
    assert len(got) == len(want)
    for i, (a, e) in enumerate(zip(got, want, strict=True)):
        assert a.shape == e.shape and a.dtype == e.dtype == torch.float32, (i, a.shape, e.shape, a.dtype)
        if precision == "fp32":
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4, msg=lambda m, i=i: f"output {i}: {m}")
        else:
            p, err = accuracy([a], [e])
            assert p >= 0.99, f"output {i}: bf16 PCC {p:.5f} against eager FP32 (max |err| {err:.3g})"
    pcc, err = accuracy(got, want)
    if precision == "bf16":
        assert err > 0  # bf16 really rounded something
    return pcc


def check_report(r: Report | None, precision: str, flops: int, machine: str = MACHINE) -> Report:
    """Report fields are real: run figures from the emulator, utilization recomputed from the machine's
    fields, flops equal to torch's flop counter."""
    assert isinstance(r, Report)
    m = load_machine(machine)
    assert (r.machine, r.machine_hash, r.precision) == (machine, m.hash, precision)
    assert r.cycles > 0 and r.load_cycles > 0 and r.instructions > 0
    assert r.dram_bytes > 0 and r.noc_bytes >= 0  # one core beside the DRAM port crosses no link
    assert r.flops == flops > 0, f"report flops {r.flops:,}, torch.utils.flop_counter {flops:,}"
    macs = {"fp32": m.macs_fp32, "bf16": m.macs_bf16}[precision]
    cores = m.mesh[0] * m.mesh[1] - len(set(m.disabled))  # all enabled cores of the machine, used or not
    assert r.utilization == pytest.approx(flops / (r.cycles * cores * 2 * macs), rel=1e-12)
    assert 0 < r.utilization < 1
    assert r.seconds == pytest.approx(r.cycles / m.clock_hz, rel=1e-12)
    assert 1 <= r.cores_used <= m.num_cores
    assert 0 < r.sram_peak_bytes <= m.sram_bytes
    assert r.compile_seconds > 0
    return r


def emulator_cycles(prog: dojoc.Program, args: tuple[Any, ...]) -> tuple[int, int]:
    """(call cycles, load cycles) of a fresh emulator run of the program's image, timing only."""
    from runtime_emu import run

    result = run(prog.image, prog.encode_inputs(args, {}), timing_only=True)
    load = load_phase_end(result.stats)
    return result.cycles - load, load


def params(models: tuple[str, ...] = tuple(FACTORIES)) -> list[Any]:
    return [pytest.param(name, prec, id=f"{name}-{prec}") for name in models for prec in PRECISIONS]


# -- path 1: dojoc.compile -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "precision"), params())
def test_dojoc_compile(name: str, precision: str) -> None:
    model, args = FACTORIES[name]()
    want, flops = eager(model, args)
    prog = dojoc.compile(model, args, machine=MACHINE, precision=precision)
    assert prog.report is None
    out = prog(*args)
    assert isinstance(out, torch.Tensor)
    check_accuracy([out], want, precision)
    r = check_report(prog.report, precision, flops)
    assert dojoc.last_report() is r and r.options == {"frontend": "export"}
    # the cycles are the emulator's: a fresh run of the image (timing only) counts the same
    assert emulator_cycles(prog, args) == (r.cycles, r.load_cycles)
    # and a second call is identical (deterministic), on other inputs too
    out2 = prog(*[torch.randn_like(a) for a in args])
    assert prog.report is not None and prog.report.cycles == r.cycles and out2.shape == out.shape


# -- path 2: torch.compile(backend="dojo") -------------------------------------------------------------

@pytest.mark.parametrize(("name", "precision"), params())
def test_torch_compile(name: str, precision: str) -> None:
    from dojoc.backend import FallbackWarning

    model, args = FACTORIES[name]()
    want, flops = eager(model, args)
    compiled = torch.compile(model, backend="dojo",
                             options={"machine": MACHINE, "precision": precision, "fallback": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # everything runs on the emulator
        with torch.no_grad():
            out = compiled(*args)
    check_accuracy([out], want, precision)
    r = check_report(dojoc.last_report(), precision, flops)
    assert r.options == {"frontend": "aot", "fallback": False}
    # a second call reuses the program: same cycles, a new report
    with torch.no_grad():
        compiled(*args)
    again = dojoc.last_report()
    assert again is not None and again is not r and again.cycles == r.cycles


# -- path 3: the command line ---------------------------------------------------------------------------

def cli(*args: str) -> Any:
    from click.testing import CliRunner

    from dojoc.cli import cli as dojoc_cli

    return CliRunner().invoke(dojoc_cli, list(args))


@pytest.mark.parametrize(("name", "precision"), params(("mlp", "cnn", "block")))
def test_command_line(name: str, precision: str, tmp_path: Path) -> None:
    from dojoc.targets import parse_inputs

    out_dir = tmp_path / name
    res = cli("compile", f"{HERE}:{name}", "--input", SPECS[name], "--machine", MACHINE,
              "--precision", precision, "-o", str(out_dir))
    assert res.exit_code == 0, res.output + res.stderr
    assert "warning" not in res.stderr, res.stderr
    model, _ = FACTORIES[name]()
    args, _ = parse_inputs([SPECS[name]])  # the compile's inputs (seeded)
    _, flops = eager(model, args)
    data = json.loads((out_dir / "report.json").read_text())
    r = check_report(Report.from_dict(data), precision, flops)
    assert r.options["entry"] == "cli" and r.options["inputs"] == [SPECS[name]]
    assert r.pcc is not None and r.max_abs_err is not None
    assert r.pcc >= (0.999999 if precision == "fp32" else 0.99)
    if precision == "fp32":
        assert r.max_abs_err <= 1e-4
    assert f"{r.cycles:,} per call" in res.stdout
    assert {"program.s", "program.dobj", "report.json"} <= {p.name for p in out_dir.iterdir()}

    # run the saved program on new inputs; its outputs match eager on them, with the same cycles
    x = torch.randn(*args[0].shape, generator=torch.Generator().manual_seed(7))
    np.save(tmp_path / "x.npy", x.numpy())
    res = cli("run", str(out_dir), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npz"))
    assert res.exit_code == 0, res.output + res.stderr
    got = np.load(tmp_path / "y.npz")
    assert list(got) == ["out0"]
    want, _ = eager(model, (x,))
    check_accuracy([torch.from_numpy(got["out0"])], want, precision)
    cycles = re.search(r"^cycles\s+([\d,]+) per call", res.stdout, re.M)
    load = re.search(r"^load cycles\s+([\d,]+) once", res.stdout, re.M)
    assert cycles and load, res.stdout
    assert int(cycles[1].replace(",", "")) == r.cycles and int(load[1].replace(",", "")) == r.load_cycles


# -- the paths agree ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "cnn", "block"])
def test_paths_build_the_same_program(name: str) -> None:
    """dojoc.compile (torch.export) and torch.compile (AOTAutograd) lower these models to the same graph:
    the same flops, cycles and load cycles, and the same outputs. (nn.MultiheadAttention is not held to
    this: export and AOTAutograd decompose it differently.)"""
    model, args = FACTORIES[name]()
    prog = dojoc.compile(model, args, machine=MACHINE, precision="fp32")
    a = prog(*args)
    compiled = torch.compile(model, backend="dojo", options={"machine": MACHINE, "precision": "fp32"})
    with torch.no_grad():
        b = compiled(*args)
    r1, r2 = prog.report, dojoc.last_report()
    assert r1 is not None and r2 is not None
    assert (r2.flops, r2.cycles, r2.load_cycles, r2.cores_used) == (r1.flops, r1.cycles, r1.load_cycles,
                                                                    r1.cores_used)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
