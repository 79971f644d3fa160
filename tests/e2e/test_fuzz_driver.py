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


@pytest.mark.parametrize("target, inputs", [("objfile", 300), ("asm", 100), ("spec", 300), ("machine", 300),
                                            ("emu", 150)])
def test_fuzz_targets_give_values_or_typed_errors(fuzz: ModuleType, target: str, inputs: int,
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
    assert outcomes["typed"] > 0  # the mutations do reach the readers' checks
