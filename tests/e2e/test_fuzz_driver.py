"""benchmarks/fuzz.py's targets, a few hundred inputs each, so the fuzzer itself cannot rot: every draw is
a value or a DojocError, and the unmutated program it starts from reads and assembles."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from dojoc.errors import DojocError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dojoc_fuzz", ROOT / "benchmarks" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dojoc_fuzz"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target, inputs, reached", [
    ("objfile", 300, "typed"), ("asm", 100, "typed"), ("spec", 300, "typed"), ("machine", 300, "typed"),
    ("emu", 150, "typed"), ("emu-diff", 60, "valid")])
def test_fuzz_targets_give_values_or_typed_errors(fuzz: ModuleType, target: str, inputs: int, reached: str,
                                                  tmp_path: Path) -> None:
    fuzz.DATA = tmp_path  # the disassembly's weight files
    draw, check, seed = fuzz.targets()[target]
    rng = random.Random(f"test-{target}")
    outcomes = {"valid": 0, "typed": 0}
    for _ in range(inputs):
        case = draw(rng, seed)
        try:
            check(case)
            outcomes["valid"] += 1
        except DojocError:
            outcomes["typed"] += 1
    # the mutations reach the readers' checks; emu-diff's programs run to their end (and both modes agree)
    assert outcomes[reached] > inputs // 2, outcomes


def test_fuzz_coverage_counts_lines_that_only_calls_run(fuzz: ModuleType) -> None:
    import coverage

    cov = coverage.Coverage(data_file=None, include=[str(ROOT / p) for p in fuzz.COVERS["spec"]])
    cov.start()
    fuzz.check_spec(b"2x3:float32")
    cov.stop()
    ran, total = fuzz.coverage_of(cov, "spec")
    assert 0 < ran < total
