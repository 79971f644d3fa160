"""`dojoc compile TARGET ... -o DIR` and `dojoc run DIR`, including bad input through every option."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from dojoc.cli import cli

TARGET = '''
import torch

def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()

def pair():
    return _mlp(), (torch.randn(4, 16),)

def module():
    return _mlp()

def training():
    return torch.nn.Linear(16, 8)

def kw():
    class Add(torch.nn.Module):
        def forward(self, x, *, y):
            return {"sum": torch.relu(x + y), "diff": x - y}
    return Add().eval()

def fails():
    raise RuntimeError("no model today")
'''


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "models.py"
    path.write_text(TARGET)
    return path


def assert_one_error(res: Result, match: str) -> None:
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.exception
    lines = res.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: ") and match in res.stderr, res.stderr
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in res.output


def test_compile_then_run(target: Path, tmp_path: Path) -> None:
    out = tmp_path / "prog"
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "--precision", "fp32", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "cycles" in res.stdout and "load cycles" in res.stdout and "vs eager" in res.stdout
    assert "warning" not in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["pcc"] > 0.9999 and report["max_abs_err"] < 1e-4 and report["cycles"] > 0
    assert report["machine"] == "mesh4x4" and report["options"]["entry"] == "cli"
    assert {"program.s", "program.dobj"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / "__pycache__").exists()

    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32))
    res = invoke("run", str(out), "--input", str(x), "--output", str(tmp_path / "y.npz"))
    assert res.exit_code == 0, res.output
    assert "load cycles" in res.stdout and f"{report['cycles']:,} per call" in res.stdout
    assert np.load(tmp_path / "y.npz")["out0"].shape == (4, 8)
    res = invoke("run", str(out))  # no --input: random inputs, with a note
    assert res.exit_code == 0 and "random inputs" in res.stderr


def test_inputs_from_specs_and_npy(target: Path, tmp_path: Path) -> None:
    y = tmp_path / "y.npy"
    np.save(y, np.ones((2, 8)))  # float64 becomes float32
    out = tmp_path / "kw"
    res = invoke("compile", f"{target}:kw", "--input", "2x8:float32[-1,1)", "--input", f"y={y}",
                 "--machine", "mesh2x2", "--precision", "fp32", "-o", str(out))
    assert res.exit_code == 0, res.output
    sig = json.loads((out / "report.json").read_text())["signature"]
    assert [i["name"] for i in sig["inputs"]] == ["x", "y"]


def test_pt2_target(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 16),)), tmp_path / "m.pt2")
    res = invoke("compile", str(tmp_path / "m.pt2"), "--machine", "mesh2x2", "-o", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["pcc"] > 0.99


@pytest.mark.parametrize(("args", "match"), [
    (["{t}:pair", "--machine", "nope"], "unknown machine"),
    (["{t}:pair", "--machine", "mesh2x2", "--set", "foo=1"], "unknown machine field foo"),
    (["{t}:pair", "--machine", "{d}/missing.toml"], "not found"),
    (["{t}:pair", "--machine", "mesh2x2", "--precision", "fp16"], "Invalid value for '--precision'"),
    (["{t}:module", "--machine", "mesh2x2", "--input", "4xx16"], "malformed input spec"),
    (["{t}:module", "--machine", "mesh2x2", "--input", "4x16:float64"], "unknown dtype"),
    (["{t}:module", "--machine", "mesh2x2", "--input", "4x16:int64[5,5)"], "holds no integer"),
    (["{t}:module", "--machine", "mesh2x2", "--input", "{d}/none.npy"], "not found"),
    (["{t}:module", "--machine", "mesh2x2", "--input", "4x15"], "torch.export failed"),
    (["{t}:module", "--machine", "mesh2x2"], "no example inputs"),
    (["{t}:training", "--machine", "mesh2x2", "--input", "4x16"], "call .eval()"),
    (["{t}:fails", "--machine", "mesh2x2"], "no model today"),
    (["{t}:absent", "--machine", "mesh2x2"], "no callable 'absent'"),
    (["{d}/missing.py:pair"], "not found"),
    (["{d}/broken.py:pair"], "SyntaxError"),
    (["{d}/broken.pt2"], "cannot load"),
    (["{d}/models"], "expected path/file.py:factory"),
])
def test_bad_input_leaves_nothing(target: Path, tmp_path: Path, args: list[str], match: str) -> None:
    (tmp_path / "broken.py").write_text("def pair(:\n")
    (tmp_path / "broken.pt2").write_bytes(b"not a zip")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    res = invoke("compile", *[a.format(t=target, d=tmp_path) for a in args], "-o", str(out))
    assert_one_error(res, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_refuses_to_replace_a_foreign_folder(target: Path, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("mine")
    res = invoke("compile", f"{target}:pair", "--machine", "mesh2x2", "-o", str(tmp_path / "docs"))
    assert_one_error(res, "not a dojoc program folder")
    assert (tmp_path / "docs" / "a.txt").read_text() == "mine"


def test_console_script_in_a_real_process(target: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dojoc.cli", "compile", f"{target}:module", "--input", "4x15",
           "--machine", "mesh2x2", "-o", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_dump_edit_and_explain_a_mapping(target: Path, tmp_path: Path) -> None:
    """--dump-mapping writes the decisions; --mapping takes an edited copy back; --explain prints per op
    its region, predicted and emulated cycles; an illegal edit is one error line and writes nothing."""
    dumped = tmp_path / "m.json"
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "-o", str(tmp_path / "a"),
                 "--dump-mapping", str(dumped), "--explain")
    assert res.exit_code == 0, res.output
    assert "predicted" in res.output and "emulated" in res.output and "median |predicted" in res.output
    data = json.loads(dumped.read_text())
    ops = [o for o in data["ops"] if o["kernel"] == "matmul"]
    assert len(ops) == 2 and all("cores" in o and "tile" in o for o in ops)
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert [r["op"] for r in report["ops"]] == [o["op"] for o in data["ops"]]
    assert all(r["emulated_cycles"] > 0 for r in report["ops"] if "fused_into" not in r)

    ops[0]["cores"] = "5"  # the first linear layer on core 5
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "-o", str(tmp_path / "b"),
                 "--mapping", str(edited), "--dump-mapping", str(tmp_path / "m2.json"))
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "m2.json").read_text())
    assert next(o for o in again["ops"] if o["op"] == ops[0]["op"])["cores"] == "5"
    assert (tmp_path / "a" / "program.s").read_text() != (tmp_path / "b" / "program.s").read_text()

    ops[0]["cores"] = "0-40"
    edited.write_text(json.dumps(data))
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "-o", str(tmp_path / "c"),
                 "--mapping", str(edited), "--dump-mapping", str(tmp_path / "m3.json"))
    assert_one_error(res, f"op {ops[0]['op']}: core 16 of its region is off the mesh")
    assert not (tmp_path / "c").exists() and not (tmp_path / "m3.json").exists()
    edited.write_text("{not json")
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "-o", str(tmp_path / "c"),
                 "--mapping", str(edited))
    assert_one_error(res, "not valid JSON")


@pytest.mark.parametrize("machine", ["mesh4x4", "mesh2x2 --set sram_bytes=1048576"])
def test_disasm_to_a_folder_round_trips_a_compiled_program(target: Path, tmp_path: Path, machine: str) -> None:
    out = tmp_path / "prog"
    name, *sets = machine.split()
    res = invoke("compile", f"{target}:pair", "--machine", name, *sets, "--precision", "fp32", "-o", str(out))
    assert res.exit_code == 0, res.output
    listing = invoke("disasm", str(out / "program.dobj"))
    assert listing.exit_code == 0 and listing.stdout.startswith("; weight data is inside"), listing.output
    res = invoke("disasm", str(out / "program.dobj"), "-o", str(tmp_path / "d"))  # elsewhere: data comes along
    assert res.exit_code == 0, res.output
    assert any(p.suffix == ".bin" for p in (tmp_path / "d").iterdir())
    res = invoke("asm", str(tmp_path / "d" / "program.s"), "-o", str(tmp_path / "again.dobj"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "again.dobj").read_bytes() == (out / "program.dobj").read_bytes()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert_one_error(invoke("disasm", str(out / "program.dobj"), "-o", str(tmp_path / "mine")), "refusing to write")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_small_search_budget_is_noted(target: Path, tmp_path: Path) -> None:
    """--search-budget bounds each op's search; the ops it cut short are noted on stderr and in the dumped
    mapping; a budget below 1 is refused before anything is written."""
    dumped = tmp_path / "m.json"
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "--precision", "fp32", "-o",
                 str(tmp_path / "a"), "--search-budget", "1", "--dump-mapping", str(dumped))
    assert res.exit_code == 0, res.output
    assert "note: op " in res.stderr and "the search stopped early: it priced 1 of" in res.stderr, res.stderr
    assert json.loads(dumped.read_text())["notes"]
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "-o", str(tmp_path / "b"),
                 "--search-budget", "0")
    assert_one_error(res, "Invalid value for '--search-budget': 0 is not in the range x>=1")
    assert not (tmp_path / "b").exists()


def test_a_pipeline_through_the_command_line(target: Path, tmp_path: Path) -> None:
    """A mapping's pipeline section runs the model as stages side by side: --explain names each op's stage
    and the pipeline, --dump-mapping writes the section back; an illegal one is one error line."""
    plan = {"ops": [], "pipeline": {"micro_batches": 2, "stages": [
        {"first": "linear_matmul", "rect": [0, 0, 2, 4]}, {"first": "linear_1_matmul", "rect": [2, 0, 2, 4]}]}}
    given = tmp_path / "p.json"
    given.write_text(json.dumps(plan))
    dumped = tmp_path / "m.json"
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "-o", str(tmp_path / "a"),
                 "--mapping", str(given), "--dump-mapping", str(dumped), "--explain")
    assert res.exit_code == 0, res.output
    assert "pipeline stage 1" in res.output and "pipeline: 2 micro-batches through 2 stages" in res.output
    assert json.loads(dumped.read_text())["pipeline"]["stages"] == plan["pipeline"]["stages"]
    plan["pipeline"]["stages"][1]["rect"] = [1, 0, 2, 4]
    given.write_text(json.dumps(plan))
    res = invoke("compile", f"{target}:pair", "--machine", "mesh4x4", "-o", str(tmp_path / "b"),
                 "--mapping", str(given))
    assert_one_error(res, "overlaps an earlier stage")
    assert not (tmp_path / "b").exists()
