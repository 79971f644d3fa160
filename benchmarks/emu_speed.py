"""How fast the emulator runs: emulated instructions per second and MACs per second on d1-sized work.

Workloads, all on the d1 machine (354 cores):
- matmul_d1: examples/matmul_d1.s, 354 cores x one 128 x 128 x 512 BF16 mma (11.9 GMAC), with the
  arithmetic, and again timing-only;
- scalar loop: every core runs a loop of scalar ALU ops and branches (the per-instruction overhead);
- vector loop: every core runs a loop of 64 x 64 f32 vector adds and small mmas (tile-sized work).

Usage: python benchmarks/emu_speed.py [--quick]. Prints a table; not collected by pytest.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from isa.asm import assemble
from isa.program import Image
from runtime_emu import Emulator

ROOT = Path(__file__).resolve().parents[1]


def scalar_loop(iterations: int) -> str:
    return f"""
.machine d1
.section spin cores=all
        rdsr    r1, sr=coreid
        li      r2, {iterations}
top:
        addi    r3, r3, 1
        xor     r4, r4, r3
        add     r5, r4, r1
        slt     r6, r5, r3
        loop    r2, top
        halt
"""


def vector_loop(iterations: int) -> str:
    return f"""
.machine d1
.section tiles cores=all
        li      r1, 0x0
        li      r2, 0x4000
        li      r3, 0x8000
        li      r4, 0x10000
        li      r9, {iterations}
        vfill   r1, 1.5, rows=64, cols=64, sd=256, dt=f32
        vfill   r2, 0.25, rows=64, cols=64, sd=256, dt=f32
        vfill   r4, 0.5, rows=64, cols=64, sd=128, dt=bf16
top:
        vadd    r3, r1, r2, rows=64, cols=64, sd=256, sa=256, sb=256, dt=f32
        vmul    r3, r3, r1, rows=64, cols=64, sd=256, sa=256, sb=256, dt=f32
        mma     r3, r4, r4, m=64, n=64, k=64, sd=256, sa=128, sb=128, dt=bf16, acc=1
        loop    r9, top
        halt
"""


def kernel(name: str) -> tuple[Image, dict[str, np.ndarray]]:
    path = ROOT / "examples" / name
    image = assemble(path.read_text(), base_dir=path.parent, filename=str(path))
    rng = np.random.default_rng(0)
    inputs = {t.name: rng.standard_normal(t.shape).astype(np.float32).astype(t.dtype.storage)
              for t in image.inputs}
    return image, inputs


def measure(label: str, image: Image, inputs: dict[str, np.ndarray], macs: int,
            timing_only: bool = False) -> dict[str, object]:
    emu = Emulator(image, timing_only=timing_only)
    emu.set_inputs(inputs)
    t0 = time.perf_counter()
    res = emu.run()
    wall = time.perf_counter() - t0
    n = res.stats.instructions
    return {"workload": label, "instructions": n, "macs": macs, "cycles": res.cycles, "wall": wall,
            "ips": n / wall, "macps": macs / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller loops")
    args = ap.parse_args()
    loops = 200 if args.quick else 1000
    vloops = 5 if args.quick else 20

    rows = []
    image, inputs = kernel("matmul_d1.s")
    mm_macs = 768 * 7552 * 512
    rows.append(measure("matmul_d1 (354 cores, full)", image, inputs, mm_macs))
    rows.append(measure("matmul_d1 (timing-only)", image, inputs, 0, timing_only=True))
    img = assemble(scalar_loop(loops))
    rows.append(measure(f"scalar loop x{loops} (354 cores)", img, {}, 0))
    img = assemble(vector_loop(vloops))
    rows.append(measure(f"vector+mma loop x{vloops} (354 cores)", img, {}, 354 * vloops * 64 ** 3))
    rows.append(measure(f"vector+mma loop x{vloops} (timing-only)", img, {}, 0, timing_only=True))

    head = f"{'workload':<36} {'instructions':>12} {'cycles':>12} {'wall s':>8} {'instr/s':>11} {'MAC/s':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        macps = f"{r['macps']:.3g}" if r["macs"] else "-"
        print(f"{r['workload']:<36} {r['instructions']:>12,} {r['cycles']:>12,} {r['wall']:>8.2f} "
              f"{r['ips']:>11,.0f} {macps:>10}")


if __name__ == "__main__":
    main()
