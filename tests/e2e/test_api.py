"""dojoc.compile, Program, Report and last_report on small models and machines."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dojoc
from dojoc.report import Report
from isa.objfile import load_object
from isa.presets import dump_toml, load_machine


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()


@pytest.fixture(scope="module")
def compiled() -> tuple[torch.nn.Module, torch.Tensor, dojoc.Program]:
    model, x = mlp(), torch.randn(4, 16)
    return model, x, dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32")


def test_mlp_fp32_matches_eager_and_reports(compiled: tuple[torch.nn.Module, torch.Tensor, dojoc.Program]) -> None:
    model, x, prog = compiled
    assert prog.report is None
    y = prog(x)
    with torch.no_grad():
        expected = model(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
    r = prog.report
    assert isinstance(r, Report) and dojoc.last_report() is r
    m = load_machine("mesh4x4")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert r.flops == counter.get_total_flops() == 2 * 4 * 16 * 32 + 2 * 4 * 32 * 8
    assert r.cycles > 0 and r.load_cycles > 0 and r.instructions > 0 and r.dram_bytes > 0
    assert r.seconds == pytest.approx(r.cycles / m.clock_hz)
    assert r.utilization == pytest.approx(r.flops / (r.cycles * m.num_cores * 2 * m.macs_fp32))
    assert 1 <= r.cores_used <= m.num_cores and r.sram_peak_bytes > 0
    assert (r.machine, r.machine_hash, r.precision) == ("mesh4x4", m.hash, "fp32")
    assert r.dojoc_version == dojoc.__version__ and r.torch_version == str(torch.__version__)
    assert r.pcc is None and r.max_abs_err is None and r.compile_seconds > 0
    assert "cycles" in r.format() and "utilization" in r.format()


def test_bf16_reaches_pcc() -> None:
    model, x = mlp(), torch.randn(8, 16)
    prog = dojoc.compile(model, (x,), machine="mesh2x2")
    assert prog.precision == "bf16"
    from dojoc.report import accuracy

    pcc, _ = accuracy([prog(x)], [model(x).detach()])
    assert pcc >= 0.99


def test_structures_kwargs_and_baked_inputs() -> None:
    def f(x: torch.Tensor, y: torch.Tensor, *, scale: float = 2.0, bias: torch.Tensor) -> dict:
        return {"s": torch.relu(x + y) * scale, "pair": (x - y, bias * 2)}

    x, y, b = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 8)
    prog = dojoc.compile(f, (x, y), example_kwargs={"scale": 3.0, "bias": b}, machine="mesh2x2", precision="fp32")
    out = prog(x, y, scale=3.0, bias=b)
    expected = f(x, y, scale=3.0, bias=b)
    assert set(out) == {"s", "pair"} and isinstance(out["pair"], tuple)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(dojoc.InputError, match="compiled with 3.0"):
        prog(x, y, scale=2.0, bias=b)
    with pytest.raises(dojoc.InputError, match="missing keyword"):
        prog(x, y, scale=3.0)
    with pytest.raises(dojoc.InputError, match="positional"):
        prog(x, scale=3.0, bias=b)
    with pytest.raises(dojoc.InputError, match=r"shape \[1, 8\]"):
        prog(x, y[:1], scale=3.0, bias=b)
    with pytest.raises(dojoc.InputError, match="dtype torch.float64"):
        prog(x, y.double(), scale=3.0, bias=b)


def test_exported_program_and_int_inputs() -> None:
    class Emb(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.emb(ids) * 2

    model, ids = Emb().eval(), torch.tensor([[1, 2, 9], [0, 3, 3]])
    ep = torch.export.export(model, (ids,))
    try:
        prog = dojoc.compile(ep, (ids,), machine="mesh2x2", precision="fp32")
    except dojoc.UnsupportedOpsError as e:  # embedding kernel still to come in the code generator
        pytest.skip(f"code generator: {e}")
    torch.testing.assert_close(prog(ids), model(ids).detach(), rtol=1e-4, atol=1e-4)
    with pytest.raises(dojoc.InputError, match="dtype torch.int32"):
        prog(ids.int())


def test_bad_inputs_to_compile(tmp_path: Path) -> None:
    x = torch.randn(2, 16)
    with pytest.raises(dojoc.CompileError, match=r"call \.eval\(\)"):
        dojoc.compile(torch.nn.Linear(16, 4), (x,), machine="mesh2x2")
    with pytest.raises(dojoc.MachineError, match="unknown machine"):
        dojoc.compile(mlp(), (x,), machine="nope")
    with pytest.raises(dojoc.MachineError, match="not found"):
        dojoc.compile(mlp(), (x,), machine=str(tmp_path / "missing.toml"))
    with pytest.raises(dojoc.CompileError, match="unknown precision"):
        dojoc.compile(mlp(), (x,), machine="mesh2x2", precision="fp16")
    with pytest.raises(dojoc.CompileError, match="torch.export failed"):
        dojoc.compile(mlp(), (torch.randn(2, 15),), machine="mesh2x2")
    with pytest.raises(dojoc.CompileError, match="cannot compile a int"):
        dojoc.compile(3, (x,), machine="mesh2x2")
    with pytest.raises(dojoc.UnsupportedOpsError, match="aten.sin") as info:
        dojoc.compile(lambda a: torch.cos(a) + torch.sin(a), (x,), machine="mesh2x2")
    assert len(info.value.ops) == 2


def test_machine_from_toml_and_object(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(dump_toml(load_machine("mesh2x2", ["sram_bytes=1048576"])))
    x = torch.randn(2, 16)
    prog = dojoc.compile(mlp(), (x,), machine=str(path), precision="fp32")
    assert prog.machine.sram_bytes == 1048576
    prog2 = dojoc.compile(mlp(), (x,), machine=load_machine("mesh2x2"), precision="fp32")
    assert prog2.machine == load_machine("mesh2x2")


def test_save_before_and_after_run(compiled: tuple[torch.nn.Module, torch.Tensor, dojoc.Program],
                                   tmp_path: Path) -> None:
    _, x, prog = compiled
    fresh = dojoc.compile(mlp(), (x,), machine="mesh4x4", precision="fp32")
    fresh.save(tmp_path / "before")
    before = json.loads((tmp_path / "before" / "report.json").read_text())
    assert before["cycles"] is None and before["flops"] == fresh.lowered.flops
    prog(x)
    out = prog.save(tmp_path / "sub" / "prog")
    files = sorted(p.name for p in out.iterdir())
    assert {"program.s", "program.dobj", "report.json"} <= set(files)
    bins = [f for f in files if f.endswith(".bin")]
    assert bins, files
    text = (out / "program.s").read_text()
    assert all(b in text for b in bins) and "sha256=" in text
    assert load_object(out / "program.dobj") == prog.image
    data = json.loads((out / "report.json").read_text())
    fields = {f.name for f in dataclasses.fields(Report)}
    assert fields <= set(data) and data["machine_description"]["name"] == "mesh4x4"
    assert Report.from_dict(data) == prog.report
    prog.save(out)  # replacing a program folder is fine
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name != "prog"]  # no temporary folders left


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_saved_files_take_the_users_umask(compiled: tuple[torch.nn.Module, torch.Tensor, dojoc.Program],
                                          tmp_path: Path, mask: int) -> None:
    _, _, prog = compiled
    old = os.umask(mask)
    try:
        out = prog.save(tmp_path / "prog")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask  # as mkdir and open would make them
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~mask}, modes


def test_save_is_atomic(compiled: tuple[torch.nn.Module, torch.Tensor, dojoc.Program], tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, prog = compiled
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(dojoc.DojocError, match="not a dojoc program folder"):
        prog.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("dojoc.program.save_object", boom)
    with pytest.raises(OSError, match="disk full"):
        prog.save(tmp_path / "new" / "deeper" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_report_sum_and_json(compiled: tuple[torch.nn.Module, torch.Tensor, dojoc.Program]) -> None:
    _, x, prog = compiled
    _, r = prog.run(x)
    s = r + dataclasses.replace(r, sram_peak_bytes=1, pcc=0.5, max_abs_err=0.1)
    assert s.cycles == 2 * r.cycles and s.flops == 2 * r.flops and s.instructions == 2 * r.instructions
    assert s.utilization == pytest.approx(r.utilization) and s.sram_peak_bytes == r.sram_peak_bytes
    assert (s.pcc, s.max_abs_err) == (0.5, 0.1)
    assert sum([r, r]) == Report.sum([r, r]) and Report.sum([]) is None
    assert Report.from_dict(json.loads(r.to_json())) == r
    with pytest.raises(ValueError, match="different machines"):
        r + dataclasses.replace(r, machine_hash="x")
    assert math.isfinite(r.seconds)
