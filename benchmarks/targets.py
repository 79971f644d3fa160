"""The acceptance table of issue 6: utilization of whole workloads in bf16 on d1, against the issue's
targets and baselines. Writes docs/targets.md with --write.

Every figure but the host times comes from the emulator running the compiled program (`Program.report`).
Utilization = flops / (cycles x 354 cores x 512 bf16 flops per core-cycle), flops as
`torch.utils.flop_counter` counts them; the script checks both: the compiled program's flop count against
a FlopCounterMode run of the eager model (before emulating), and Report.utilization against the quotient
recomputed from the report's cycles and the machine's fields.

Rows (random weights, nothing downloaded; inputs drawn with torch.manual_seed(0)):
- gemm4096: torch.mm of two 4096 x 4096 bf16-representable fp32 inputs, both program inputs; target >= 80 %;
- bert-base-b8: BertModel(BertConfig()), 12 layers, batch 8 x 128 tokens, attention mask; target >= 50 %;
- resnet50-b8: ResNetForImageClassification(ResNetConfig(num_labels=1000)), 8 x 3 x 224 x 224; target >= 40 %;
- resnet50-b1, bert-2l-b1 (BertConfig(num_hidden_layers=2)), gpt2-2l-b1 (GPT2LMHeadModel(GPT2Config(n_layer=2)),
  use_cache=False), 128 tokens: target >= 3x the issue's baseline (cycles per call);
- bert-base-b1, gpt2-b1: the 12-layer models at batch 1, for information (the issue's b1 baselines were
  2-layer models);
- gpt2model-2l-b1: GPT2Model(GPT2Config(n_layer=2)), no LM head, for information: the flops that the issue's
  GPT-2 (2 layers) baseline implies (3.8 % x 521,896 cycles x 354 x 512 = 3.6 G) are those of the 2 layers
  without the LM head (3.6 G; with the head 13.5 G), so this row is the like-for-like comparison;
- mobilenetv2-b1: the mobilenetv2 case of benchmarks/models.py; reported against its baseline.

Per row: cycles per call, the compute roofline (flops / (354 x 512)), utilization, target and whether it is
met, the factor vs the baseline (baseline cycles / cycles), compile s, emulate s (host wall time of the
first call: the load phase and one call), cores used, DRAM bytes, PCC vs eager fp32, and what bounds the
rest: the DRAM floor (DRAM bytes / the ports' bytes per cycle, as a share of the cycles) and the share of
emulated cycles spent in ops whose cost model bound is compute / dram / link / sync / sram (report.ops).

Usage: python benchmarks/targets.py [--only NAME]... [--quick] [--write] [--strict]
  --quick: skip the batch-8 and GEMM rows;  --write: write docs/targets.md;
  --strict: exit 1 when a target is not met (a failed row always exits 1).
Not collected by pytest. The big rows take minutes each to emulate; run one at a time on a shared host.
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, host, markdown_table, nbytes, secs, text_table, warm_up  # noqa: E402
from models import Built, _bert_base, _gpt2, _mobilenetv2, _resnet50  # noqa: E402

import dojoc  # noqa: E402
from dojoc.mapping.explain import timed  # noqa: E402
from dojoc.report import Report, accuracy  # noqa: E402
from isa.presets import PRESETS  # noqa: E402

DOC = ROOT / "docs" / "targets.md"
MACHINE = "d1"
PRECISION = "bf16"
M = PRESETS[MACHINE]()
D1_CORES, D1_PEAK = 354, 512  # the denominator: all cores of d1 x bf16 flops per core-cycle


class _MM(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.mm(a, b)


def _gemm(n: int = 4096) -> Built:
    a = torch.randn(n, n).to(torch.bfloat16).to(torch.float32)
    b = torch.randn(n, n).to(torch.bfloat16).to(torch.float32)
    return _MM().eval(), (a, b), {}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    build: Callable[[], Built]
    baseline: tuple[int, float] | None  # the (cycles per call, utilization)
    min_util: float | None = None  # target utilization
    min_factor: float | None = None  # target speedup over the baseline's cycles
    big: bool = False  # skipped by --quick


TARGETS = [
    Target("gemm4096", "GEMM 4096 x 4096 x 4096, torch.mm of two inputs", _gemm, (2_787_874, 0.272),
           min_util=0.80, big=True),
    Target("bert-base-b8", "BERT-base, 12 layers, 8 x 128 tokens, attention mask",
           functools.partial(_bert_base, batch=8), (9_332_840, 0.103), min_util=0.50, big=True),
    Target("resnet50-b8", "ResNet-50, 8 x 3 x 224 x 224", functools.partial(_resnet50, batch=8),
           (4_474_091, 0.081), min_util=0.40, big=True),
    Target("resnet50-b1", "ResNet-50, 1 x 3 x 224 x 224", _resnet50, (925_576, 0.049), min_factor=3.0),
    Target("bert-2l-b1", "BERT-base, 2 layers, 1 x 128 tokens, attention mask",
           functools.partial(_bert_base, num_hidden_layers=2), (339_273, 0.059), min_factor=3.0),
    Target("gpt2-2l-b1", "GPT-2 small + LM head, 2 layers, 1 x 128 tokens", functools.partial(_gpt2, n_layer=2),
           (521_896, 0.038), min_factor=3.0),
    Target("gpt2model-2l-b1", "GPT2Model (no LM head), 2 layers, 1 x 128 tokens",
           functools.partial(_gpt2, n_layer=2, head=False), (521_896, 0.038)),
    Target("bert-base-b1", "BERT-base, 12 layers, 1 x 128 tokens, attention mask", _bert_base, None),
    Target("gpt2-b1", "GPT-2 small + LM head, 12 layers, 1 x 128 tokens", _gpt2, None),
    Target("mobilenetv2-b1", "MobileNetV2, 1 x 3 x 224 x 224", _mobilenetv2, (723_930, 0.005)),
]


@dataclass(frozen=True)
class Row:
    target: Target
    report: Report | None
    compile_s: float
    emulate_s: float
    pcc: float
    dram_floor: int  # DRAM bytes / the ports' bytes per cycle
    shares: dict[str, float]  # bound -> share of the emulated cycles of ops
    top: list[tuple[str, float]]  # (kernel, share of the emulated cycles of ops), largest first
    wall_s: float
    rss_gib: float
    error: str = ""

    @property
    def roofline(self) -> float:
        return self.report.flops / (D1_CORES * D1_PEAK) if self.report else 0.0

    @property
    def factor(self) -> float | None:
        if self.report is None or self.target.baseline is None or not self.report.cycles:
            return None
        return self.target.baseline[0] / self.report.cycles

    @property
    def baseline_flops(self) -> tuple[float, float] | None:
        """The flops the baseline's cycles and utilization imply, low and high (the utilization rounded to
        a tenth of a percent)."""
        if self.target.baseline is None:
            return None
        cycles, util = self.target.baseline
        return ((util - 0.0005) * cycles * D1_CORES * D1_PEAK, (util + 0.0005) * cycles * D1_CORES * D1_PEAK)

    @property
    def baseline_consistent(self) -> bool:
        """Whether this row's flops lie in the range the baseline implies (else the baseline measured
        another model, or counted its flops otherwise, and the factor compares unlike things)."""
        implied = self.baseline_flops
        return implied is None or self.report is None or implied[0] <= self.report.flops <= implied[1]

    @property
    def met(self) -> bool | None:
        t, r = self.target, self.report
        if t.min_util is None and t.min_factor is None:
            return None
        if r is None:
            return False
        ok = t.min_util is None or r.utilization >= t.min_util
        return ok and (t.min_factor is None or (self.factor or 0.0) >= t.min_factor)


CONSOLE = Console(stderr=True)


@contextmanager
def heartbeat(what: str) -> Iterator[None]:
    """A spinner with the elapsed time of a long step, on a terminal (rich; nothing when redirected)."""
    columns = (SpinnerColumn(), TextColumn("  {task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=CONSOLE, transient=True) as progress:
        progress.add_task(what, total=None)
        yield


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_gib() -> float:
    """Peak resident set of the process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def check_utilization(report: Report) -> None:
    """Report.utilization is flops / (cycles x all cores of d1 x bf16 peak per core-cycle) = the issue's
    flops / (cycles x 354 x 512)."""
    m = M
    assert report.machine == m.name and report.machine_hash == m.hash, (report.machine, m.name)
    assert report.precision == PRECISION, report.precision
    assert (m.num_cores, m.peak_flops_per_core_cycle(PRECISION)) == (D1_CORES, D1_PEAK), \
        (m.num_cores, m.peak_flops_per_core_cycle(PRECISION))
    want = report.flops / (report.cycles * m.num_cores * m.peak_flops_per_core_cycle(PRECISION))
    assert math.isclose(report.utilization, want, rel_tol=1e-12), (report.utilization, want)


def bounds(report: Report) -> tuple[int, dict[str, float], list[tuple[str, float]]]:
    """(DRAM floor in cycles, share of op cycles per cost-model bound, share of op cycles per kernel)."""
    floor = math.ceil(report.dram_bytes / sum(p.bytes_per_cycle for p in M.dram_ports))
    per_bound: dict[str, int] = {}
    per_kernel: dict[str, int] = {}
    for r in timed(report.ops):
        emu = r["emulated_cycles"]
        per_bound[str(r["bound"])] = per_bound.get(str(r["bound"]), 0) + int(emu)
        per_kernel[str(r["kernel"])] = per_kernel.get(str(r["kernel"]), 0) + int(emu)
    total = sum(per_bound.values()) or 1
    shares = {b: c / total for b, c in sorted(per_bound.items(), key=lambda t: -t[1])}
    top = sorted(((k, c / total) for k, c in per_kernel.items()), key=lambda t: -t[1])
    return floor, shares, top


def measure(t: Target) -> Row:
    start = time.perf_counter()
    torch.manual_seed(0)
    model, args, kwargs = t.build()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        want = [x for x in pytree.tree_leaves(model(*args, **kwargs)) if isinstance(x, torch.Tensor)]
    torch_flops = counter.get_total_flops()
    log(f"  eager fp32 done, {torch_flops:,} flops (torch's flop counter); compiling ...")
    t0 = time.perf_counter()
    with heartbeat("compiling"):
        prog = dojoc.compile(model, args, example_kwargs=kwargs, machine=MACHINE, precision=PRECISION)
    t1 = time.perf_counter()
    assert prog.lowered.flops == torch_flops, f"program flops {prog.lowered.flops:,} != torch's {torch_flops:,}"
    del model
    gc.collect()
    log(f"  compiled in {t1 - t0:.1f} s, {prog.lowered.cores_used} cores; emulating ...")
    with heartbeat("emulating"):
        out, report = prog.run(*args, **kwargs)
    t2 = time.perf_counter()
    pcc, _ = accuracy(pytree.tree_leaves(out), want)
    assert report.flops == torch_flops, (report.flops, torch_flops)
    check_utilization(report)
    floor, shares, top = bounds(report)
    del prog, out, want, args, kwargs
    gc.collect()
    row = Row(t, report, t1 - t0, t2 - t1, pcc, floor, shares, top, time.perf_counter() - start, rss_gib())
    log(f"  emulated in {t2 - t1:.1f} s: {report.cycles:,} cycles, {report.utilization:.2%} utilization, "
        f"PCC {pcc:.5f}; row {row.wall_s:.0f} s, peak RSS {row.rss_gib:.1f} GiB")
    return row


def failed(t: Target, start: float, exc: BaseException) -> Row:
    log("".join(traceback.format_exception(exc)))
    return Row(t, None, 0.0, 0.0, math.nan, 0, {}, [], time.perf_counter() - start, rss_gib(),
               error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])


# -- tables ----------------------------------------------------------------------------------------

HEADER = ["workload", "cycles", "roofline", "util", "target", "met", "baseline", "vs baseline", "compile s",
          "emulate s", "cores", "DRAM bytes", "PCC", "what bounds the rest"]


def target_text(t: Target) -> str:
    parts = []
    if t.min_util is not None:
        parts.append(f">= {t.min_util:.0%}")
    if t.min_factor is not None:
        parts.append(f">= {t.min_factor:g}x baseline")
    return ", ".join(parts) or "reported"


def bound_text(row: Row) -> str:
    r = row.report
    if r is None:
        return "-"
    floor = row.dram_floor / r.cycles if r.cycles else 0.0
    ops = " ".join(f"{b} {s:.0%}" for b, s in row.shares.items() if s >= 0.005)
    lead = "DRAM" if floor >= 0.5 else f"{next(iter(row.shares), '-')} ops"
    return f"{lead}: DRAM floor {floor:.0%} of cycles; ops {ops or '-'}"


def cells(row: Row) -> list[str]:
    t, r = row.target, row.report
    base = f"{t.baseline[0]:,} / {t.baseline[1]:.1%}" if t.baseline else "-"
    met = {None: "-", True: "yes", False: "NO"}[row.met]
    if r is None:
        return [t.name, "failed", "-", "-", target_text(t), met, base, "-", "-", "-", "-", "-", "-", row.error]
    factor = "-" if row.factor is None else f"{row.factor:.2f}x" + ("" if row.baseline_consistent else " (!)")
    return [t.name, f"{r.cycles:,}", f"{row.roofline:,.0f}", f"{r.utilization:.2%}", target_text(t), met, base,
            factor, secs(row.compile_s), secs(row.emulate_s),
            f"{r.cores_used}", nbytes(r.dram_bytes), f"{row.pcc:.5f}", bound_text(row)]


def detail_lines(rows: list[Row]) -> list[str]:
    """Per row: the description, the kernels taking most of the cycles, host times and memory."""
    out = []
    for row in rows:
        t, r = row.target, row.report
        if r is None:
            out.append(f"- **{t.name}** ({t.description}): failed after {row.wall_s:.0f} s: {row.error}")
            continue
        top = ", ".join(f"{k} {s:.0%}" for k, s in row.top[:4] if s >= 0.005)
        implied = row.baseline_flops
        if implied is not None and not row.baseline_consistent:
            top += (f"; (!) the baseline's cycles and utilization imply {implied[0] / 1e9:.2f}-"
                    f"{implied[1] / 1e9:.2f} G flops, not this row's {r.flops / 1e9:.2f} G: it measured another "
                    "model or counted otherwise")
        out.append(f"- **{t.name}** ({t.description}): {r.flops:,} flops, {r.cycles:,} cycles "
                   f"({r.seconds * 1e3:.3f} ms), load {r.load_cycles:,} cycles, NoC {nbytes(r.noc_bytes)}, "
                   f"DRAM floor {row.dram_floor:,} cycles; op cycles by kernel: {top or '-'}; "
                   f"row {row.wall_s:.0f} s on the host, peak RSS {row.rss_gib:.1f} GiB")
    return out


def write_doc(rows: list[Row], info: dict[str, str], total_s: float) -> None:
    doc = f"""# Targets: utilization on d1 (issue 6)

Generated by `benchmarks/targets.py --write` (`make bench`); do not edit by hand.

- date: {info['date']}
- host: {info['host']}; {info['load']}
- software: {info['software']}
- measured in {total_s:.0f} s

Every workload is compiled for d1 in bf16 and run once on the emulator; every figure but the host times
comes from that run (`Program.report`). Models have random weights built from transformers' configs.
Columns:

- **cycles**: one call, inputs in DRAM to outputs in DRAM, resident weights already in SRAM;
- **roofline**: flops / (354 cores x 512 bf16 flops per core-cycle), the cycles at full use of every core;
- **util**: flops / (cycles x 354 x 512) = roofline / cycles; flops as `torch.utils.flop_counter` counts
  them (the script checks the program's count against a FlopCounterMode run of the eager model; on CPU
  the counter does not count scaled dot-product attention, so attention's matmuls are not in it);
- **target**, **met**: issue 6's target (a utilization, or a speedup over the baseline's cycles);
- **baseline**: the issue's cycles per call / utilization; **vs baseline**: baseline cycles / cycles (the
  b1 BERT and GPT-2 baselines were 2-layer models: the 12-layer rows have none); "(!)" marks a row whose
  flops are not those the baseline's cycles and utilization imply (the baseline measured another model);
- **compile s**: host wall time of `dojoc.compile`; **emulate s**: host wall time of the first call on the
  emulator (the load phase and one call);
- **cores**: cores that run code; **DRAM bytes**: the emulator's count for one call;
- **PCC**: Pearson correlation of all outputs against eager FP32;
- **what bounds the rest**: the leading bound ("DRAM" when the DRAM floor, DRAM bytes / 400 B per cycle of
  the one port, is at least half the cycles; else "<bound> ops", the cost-model bound of the ops with the
  most emulated cycles);
  the DRAM floor as a share of the cycles; and the share of the emulated cycles of ops (report.ops)
  spent in ops whose cost-model bound is compute, dram, link, sync or sram.

{markdown_table(HEADER, [cells(r) for r in rows], set(HEADER[1:4]) | set(HEADER[6:13]))}

Per row:

""" + "\n".join(detail_lines(rows)) + "\n"
    DOC.write_text(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=[t.name for t in TARGETS], help="run only this row "
                    "(repeatable)")
    ap.add_argument("--quick", action="store_true", help="skip the batch-8 and GEMM rows")
    ap.add_argument("--write", action="store_true", help="write docs/targets.md")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = ap.parse_args()

    chosen = [t for t in TARGETS if (not args.only or t.name in args.only) and not (args.quick and t.big)]
    log("warming up ...")
    warm_up()
    start = time.perf_counter()
    rows = []
    for i, t in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {t.name}: {t.description}, {MACHINE}, {PRECISION} "
            f"({time.perf_counter() - start:.0f} s so far)")
        t0 = time.perf_counter()
        try:
            rows.append(measure(t))
        except Exception as exc:  # a failed row is reported, the others still run
            rows.append(failed(t, t0, exc))
        gc.collect()
    total = time.perf_counter() - start
    info = host()
    print(text_table(HEADER, [cells(r) for r in rows], left=1))
    print()
    print("\n".join(detail_lines(rows)))
    print(f"{info['date']}; {info['host']}; {info['load']}; {total:.0f} s")
    if args.write:
        write_doc(rows, info, total)
        print(f"wrote {DOC.relative_to(ROOT)}")
    if any(r.report is None for r in rows):
        return 1
    return 1 if args.strict and any(r.met is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
