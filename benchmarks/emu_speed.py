"""How fast the emulator runs: kernels (instructions and MACs per second) and whole models against eager.

Kernels, all on the d1 machine (354 cores):
- matmul_d1: examples/matmul_d1.s, 354 cores x one 128 x 128 x 512 BF16 mma (11.9 GMAC), with the
  arithmetic, and again timing-only;
- scalar loop: every core runs a loop of scalar ALU ops and branches (the per-instruction overhead);
- vector loop: every core runs a loop of 64 x 64 f32 vector adds and small mmas (tile-sized work).

Models (`--models`, issue #12's measures), compiled in bf16 on d1: ResNet-50 b1 and BERT-base b1, each run
once with the arithmetic and once timing-only (`runtime_emu.run` of the compiled image; compile time is not
counted), against eager PyTorch on the same inputs and host (the best of three calls). `--gemm` adds GEMM
4096 x 4096 x 4096 (full emulation only; several minutes).

Usage: python benchmarks/emu_speed.py [--quick] [--models] [--gemm]. Prints tables; not collected by pytest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import text_table  # noqa: E402

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


def model_rows(gemm: bool) -> list[list[str]]:
    """Per model: eager seconds, full and timing-only emulation seconds, their ratios, cycles (equal)."""
    import torch
    from models import _bert_base, _resnet50
    from targets import _gemm

    import dojoc
    from runtime_emu import run

    cases: list[tuple[str, Any]] = [("ResNet-50 b1", _resnet50), ("BERT-base b1", _bert_base)]
    if gemm:
        cases.append(("GEMM 4096^3", _gemm))
    rows = []
    for label, build in cases:
        torch.manual_seed(0)
        model, args, kwargs = build()
        prog = dojoc.compile(model, args, example_kwargs=kwargs, machine="d1", precision="bf16")
        with torch.no_grad():
            eager = []
            for _ in range(3):
                t0 = time.perf_counter()
                model(*args, **kwargs)
                eager.append(time.perf_counter() - t0)
        arrays = prog.encode_inputs(args, kwargs)
        t0 = time.perf_counter()
        full = run(prog.image, arrays)
        t_full = time.perf_counter() - t0
        t_timing, speedup = "-", "-"
        if label.startswith("GEMM"):
            cycles = f"{full.cycles:,}"
        else:
            t0 = time.perf_counter()
            timing = run(prog.image, arrays, timing_only=True)
            tt = time.perf_counter() - t0
            assert timing.cycles == full.cycles, (timing.cycles, full.cycles)
            t_timing, speedup, cycles = f"{tt:.2f}", f"{t_full / tt:.1f}x", f"{full.cycles:,}"
        best = min(eager)
        rows.append([label, f"{best * 1e3:.1f}", f"{t_full:.2f}", f"{t_full / best:,.0f}x", t_timing, speedup,
                     cycles])
        print(f"  {label}: full {t_full:.2f} s, eager {best * 1e3:.1f} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller loops")
    ap.add_argument("--models", action="store_true", help="also ResNet-50 b1 and BERT-base b1 against eager")
    ap.add_argument("--gemm", action="store_true", help="with --models, also GEMM 4096^3 (full emulation)")
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
    if args.models:
        print("\nwhole models on d1 (bf16); compile time not counted")
        mrows = model_rows(args.gemm)
        print(text_table(["model", "eager ms", "full s", "full / eager", "timing-only s", "full / timing",
                          "cycles"], mrows, 1))


if __name__ == "__main__":
    main()
