"""Golden cycle counts of the example kernels (examples/*.s), kept in tests/emu/golden/cycles.json.

A change to any count fails with a diff of old and new counts. When the change is intended, rewrite the
file with `DOJOC_UPDATE_GOLDEN=1 pytest tests/emu/test_golden.py` and review the diff in version control.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from golden_counts import check

from isa.asm import assemble
from runtime_emu import Emulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden" / "cycles.json"


def kernel_cycles(path: Path) -> int:
    """Cycles of one kernel on its own machine (timing-only: the kernels' control flow is data-free)."""
    image = assemble(path.read_text(), base_dir=path.parent, filename=str(path))
    emu = Emulator(image, timing_only=True)
    emu.set_inputs({t.name: np.zeros(t.shape, dtype=t.dtype.storage) for t in image.inputs})
    return int(emu.run().cycles)


def current() -> dict[str, int]:
    return {p.name: kernel_cycles(p) for p in sorted(EXAMPLES.glob("*.s"))}


def test_golden_cycle_counts() -> None:
    check(GOLDEN, current(), "the example kernels")
