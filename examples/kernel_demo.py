"""`make kernel-demo`: a hand-written kernel on the d1 machine, checked against numpy, with its report.

examples/matmul_d1.s multiplies A (768 x 512, bf16) by B (512 x 7552, bf16) on all 354 cores of a D1:
one shared code section, each core computing one 128 x 128 block of C (f32) and DMAing it out. This
script assembles it, runs it on the emulator with random inputs, checks C against numpy and prints
cycles, seconds at the clock, utilization and the busy and stall shares of each unit.
(`make demo` compiles a real model: examples/demo.py.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from isa.asm import assemble
from runtime_emu import Emulator
from runtime_emu.stats import utilization

KERNEL = Path(__file__).resolve().parent / "matmul_d1.s"


def main() -> int:
    t0 = time.perf_counter()
    image = assemble(KERNEL.read_text(), base_dir=KERNEL.parent, filename=str(KERNEL))
    m = image.machine
    a_t, b_t = image.tensor("a"), image.tensor("b")
    (mdim, kdim), (_, ndim) = a_t.shape, b_t.shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_t.shape).astype(np.float32).astype(a_t.dtype.storage)
    b = rng.standard_normal(b_t.shape).astype(np.float32).astype(b_t.dtype.storage)
    print(f"dojoc demo: {KERNEL.name}: C[{mdim} x {ndim}] f32 = "
          f"A[{mdim} x {kdim}] bf16 @ B[{kdim} x {ndim}] bf16")
    print(f"            on {m.name}: {m.num_cores} cores, one shared code section of "
          f"{len(image.sections[0].code)} instructions\n")

    emu = Emulator(image)
    emu.set_inputs({"a": a, "b": b})
    t1 = time.perf_counter()
    result = emu.run()
    t2 = time.perf_counter()

    c = np.asarray(result.outputs["c"])
    want = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
    try:
        np.testing.assert_array_max_ulp(c, want, maxulp=1)
        check = "matches numpy (bf16 products exact, FP32 result, within 1 ulp)"
        ok = True
    except AssertionError:
        bad = int(np.sum(c != want))
        check = f"MISMATCH: {bad:,} of {c.size:,} elements differ from numpy"
        ok = False

    flops = 2 * mdim * ndim * kdim
    util = utilization(flops, result.cycles, m, "bf16")
    stats = result.stats
    print(f"result       {check}")
    seconds = result.cycles / m.clock_hz
    print(f"cycles       {result.cycles:,}  = {seconds * 1e6:.1f} us at {m.clock_hz / 1e9:g} GHz")
    print(f"flops        {flops:,}  ({flops / seconds / 1e12:.1f} TFLOP/s)")
    print(f"utilization  {util:.2%} of the BF16 peak ({m.num_cores} cores x "
          f"{m.peak_flops_per_core_cycle('bf16')} flop/cycle)")
    print(f"DRAM         {stats.dram_bytes:,} B through {len(m.dram_ports)} port(s) of "
          f"{m.dram_ports[0].bytes_per_cycle} B/cycle: the kernel is DRAM-bound\n")
    print(stats.format_table(m))
    print(f"\nemulated {stats.instructions:,} instructions in {t2 - t1:.2f} s "
          f"(assembly and inputs {t1 - t0:.2f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
