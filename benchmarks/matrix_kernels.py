"""Matrix kernels on d1: ResNet-50 convolution layers and BERT-base linear layers, one op per program.

For each op: cycles of one call (after the load phase that makes weights resident), the load phase's
cycles, cores used, utilization = flops / (cycles x cores x peak flops per core-cycle) both over all
cores of the machine (DESIGN.md's definition) and over the cores the op used, PCC against eager, and
the host's compile and emulation seconds.

Usage: python benchmarks/matrix_kernels.py [--precision bf16|fp32|cfp8] [--machine d1] [--only conv|linear].
Prints a table; not collected by pytest.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dojoc.codegen.lower import lower_graph
from dojoc.codegen.result import LOAD_BARRIER
from dojoc.frontend import from_module
from isa.presets import load_machine
from runtime_emu import run

# (name, in channels, out channels, kernel, stride, input size) of ResNet-50 layers at 224 x 224
CONVS = [
    ("stem 7x7/2 3->64 @224", 3, 64, 7, 2, 224),
    ("3x3 64->64 @56", 64, 64, 3, 1, 56),
    ("1x1 256->64 @56", 256, 64, 1, 1, 56),
    ("3x3/2 128->128 @56", 128, 128, 3, 2, 56),
    ("3x3 256->256 @14", 256, 256, 3, 1, 14),
    ("3x3 512->512 @7", 512, 512, 3, 1, 7),
]
# (name, tokens, in features, out features) of BERT-base at sequence length 128
LINEARS = [
    ("qkv 128x768 @ 768x2304", 128, 768, 2304),
    ("ffn1 128x768 @ 768x3072", 128, 768, 3072),
    ("ffn2 128x3072 @ 3072x768", 128, 3072, 768),
    ("ffn1 x4 512x768 @ 768x3072", 512, 768, 3072),
]


class Linear(torch.nn.Module):
    """x @ w with w [in, out] a parameter: the matmul alone (nn.Linear adds a separate bias op)."""

    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(k, n) / k**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def measure(name: str, module: torch.nn.Module, x: torch.Tensor, precision: str, machine: str) -> str:
    m = load_machine(machine)
    graph = from_module(module.eval(), (x,))
    t0 = time.perf_counter()
    low = lower_graph(graph, m, precision)
    t1 = time.perf_counter()
    res = run(low.image, [x.numpy()])
    t2 = time.perf_counter()
    load = next((c for b, c in res.stats.barrier_releases if b == LOAD_BARRIER), 0)
    cycles = res.cycles - load
    with torch.no_grad():
        want = module(x).numpy().astype(np.float64).ravel()
    got = res.outputs[low.output_names[0]].astype(np.float64).ravel()
    pcc = np.corrcoef(got, want)[0, 1]
    peak = m.peak_flops_per_core_cycle(precision)
    util_all = low.flops / (cycles * m.num_cores * peak)
    util_used = low.flops / (cycles * low.cores_used * peak)
    return (f"| {name} | {cycles:,} | {load:,} | {low.cores_used} | {util_all:.1%} | {util_used:.1%} | {pcc:.5f} "
            f"| {t1 - t0:.2f} | {t2 - t1:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32", "cfp8"))
    ap.add_argument("--machine", default="d1")
    ap.add_argument("--only", choices=("conv", "linear"))
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"machine {args.machine}, precision {args.precision}")
    print("| op | cycles | load cycles | cores | util (all cores) | util (used cores) | PCC | compile s | emulate s |")
    print("|---|---|---|---|---|---|---|---|---|")
    if args.only != "linear":
        for name, c, o, k, s, hw in CONVS:
            conv = torch.nn.Conv2d(c, o, k, stride=s, padding=k // 2, bias=False)
            print(measure(name, conv, torch.randn(1, c, hw, hw), args.precision, args.machine), flush=True)
    if args.only != "conv":
        for name, t, k, n in LINEARS:
            x = torch.randn(t // 128, 128, k)
            print(measure(name, Linear(k, n), x, args.precision, args.machine), flush=True)


if __name__ == "__main__":
    main()
