"""Golden cycle counts of small compiled models, kept in tests/e2e/golden/cycles.json.

The MLP, the small CNN and the transformer block of test_three_paths.py, compiled with `dojoc.compile` at
bf16 for mesh4x4 and run once on the emulator: the report's `cycles` (one call) and `load_cycles` (the
one-time loading of resident weights). Any change to a count fails with a diff of old and new counts, so a
change to the compiler's mapping or to the emulator's cost rules shows up as a reviewed diff. When the change
is intended, rewrite the file with `DOJOC_UPDATE_GOLDEN=1 pytest tests/e2e/test_golden_models.py` and
review the diff in version control (the convention of tests/emu/test_golden.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from golden_counts import check, diff
from test_three_paths import FACTORIES

import dojoc

GOLDEN = Path(__file__).resolve().parent / "golden" / "cycles.json"
MACHINE, PRECISION = "mesh4x4", "bf16"
MODELS = ("mlp", "cnn", "block")


def model_cycles(name: str) -> dict[str, int]:
    """`{name}.cycles` and `{name}.load_cycles` of one model, from an emulator run."""
    model, args = FACTORIES[name]()
    prog = dojoc.compile(model, args, machine=MACHINE, precision=PRECISION)
    _, report = prog.run(*args)
    return {f"{name}.cycles": report.cycles, f"{name}.load_cycles": report.load_cycles}


def current() -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in MODELS:
        counts.update(model_cycles(name))
    return counts


def test_golden_model_cycle_counts() -> None:
    torch.manual_seed(0)
    new = current()
    assert all(v > 0 for v in new.values()), new
    check(GOLDEN, new, f"the small models ({PRECISION} on {MACHINE})")


def test_diff_is_readable() -> None:
    lines = diff({"mlp.cycles": 1000, "cnn.cycles": 5}, {"mlp.cycles": 1100, "block.cycles": 7})
    assert lines == ["  block.cycles: new, 7 cycles (not in the golden file)",
                     "  cnn.cycles: in the golden file (5 cycles) but no longer measured",
                     "  mlp.cycles: golden 1,000 cycles, now 1,100 (+100, +10.00%)"]
