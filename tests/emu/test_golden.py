"""Golden cycle counts of the example kernels (examples/*.s), kept in tests/emu/golden/cycles.json.

A change to any count fails with a diff of old and new counts. When the change is intended, rewrite the
file with `DOJOC_UPDATE_GOLDEN=1 pytest tests/emu/test_golden.py` and review the diff in version control.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

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


def diff(old: dict[str, int], new: dict[str, int]) -> list[str]:
    lines = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None:
            lines.append(f"  {name}: new kernel, {b:,} cycles (not in the golden file)")
        elif b is None:
            lines.append(f"  {name}: in the golden file ({a:,} cycles) but no longer in examples/")
        else:
            lines.append(f"  {name}: golden {a:,} cycles, now {b:,} ({b - a:+,}, {(b - a) / a:+.2%})")
    return lines


def test_golden_cycle_counts() -> None:
    new = current()
    if os.environ.get("DOJOC_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
        return
    assert GOLDEN.is_file(), f"{GOLDEN} is missing: create it with DOJOC_UPDATE_GOLDEN=1"
    old = json.loads(GOLDEN.read_text())
    changes = diff(old, new)
    where = GOLDEN.relative_to(ROOT)
    assert not changes, (f"cycle counts differ from {where}:\n" + "\n".join(changes)
                         + "\nif intended, rerun with DOJOC_UPDATE_GOLDEN=1 and review the diff")
