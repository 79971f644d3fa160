"""dojoc.testing.assert_matches_eager and the pytest plugin (--dojo-machine, dojo_machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dojoc
from dojoc.testing import assert_matches_eager


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "cfp8"])
def test_mlp_matches_eager(precision: str, dojo_machine: str) -> None:
    report = assert_matches_eager(mlp(), torch.randn(4, 16), machine=dojo_machine, precision=precision)
    assert report.precision == precision and report.cycles > 0
    assert report.pcc is not None and report.max_abs_err is not None
    if precision != "cfp8":
        assert report.pcc >= 0.99
    assert dojoc.last_report() == report


def test_functions_and_kwargs() -> None:
    def f(x: torch.Tensor, *, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(x) * y, x > y

    x, y = torch.randn(3, 8), torch.randn(3, 8)
    report = assert_matches_eager(f, x, example_kwargs={"y": y}, machine="mesh2x2", precision="fp32")
    assert report.max_abs_err == 0.0


def test_a_mismatch_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    original = dojoc.Program.decode_outputs

    def off_by_one(self: dojoc.Program, outputs: dict) -> list[torch.Tensor]:
        return [t + 1 for t in original(self, outputs)]

    monkeypatch.setattr(dojoc.Program, "decode_outputs", off_by_one)
    with pytest.raises(AssertionError, match=r"output 0 \(out0\) differs from eager"):
        assert_matches_eager(mlp(), torch.randn(4, 16), machine="mesh2x2", precision="fp32")


def test_compile_errors_propagate() -> None:
    with pytest.raises(dojoc.CompileError, match=r"\.eval\(\)"):
        assert_matches_eager(torch.nn.Linear(4, 4), torch.randn(2, 4), machine="mesh2x2")
    with pytest.raises(dojoc.MachineError):
        assert_matches_eager(mlp(), torch.randn(2, 16), machine="nope")


def test_fixture_follows_the_option(dojo_machine: str, request: pytest.FixtureRequest) -> None:
    assert dojo_machine == request.config.getoption("--dojo-machine")


def test_plugin_is_registered_by_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "def test_machine(dojo_machine):\n"
        "    print('machine=' + dojo_machine)\n")
    base = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
            str(tmp_path / "test_user.py")]
    default = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path)
    assert default.returncode == 0 and "machine=mesh4x4" in default.stdout, default.stdout + default.stderr
    chosen = subprocess.run([*base, "--dojo-machine", "mesh2x2"], capture_output=True, text=True, cwd=tmp_path)
    assert chosen.returncode == 0 and "machine=mesh2x2" in chosen.stdout, chosen.stdout + chosen.stderr
