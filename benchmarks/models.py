"""Whole models on the emulator: what each costs to compile and to emulate on the host, and what one call
costs on the emulated machine. Writes docs/benchmarks.md.

Models (random weights built from transformers' configs, nothing downloaded; bf16 unless --precision):
- resnet50: ResNet-50 (`ResNetConfig()`: depths 3-4-6-3, bottleneck, 1000 classes), batch 1 at 224 x 224, d1;
- mobilenetv2: MobileNetV2 (`MobileNetV2Config(tf_padding=False)`: width 1.0, ReLU6, 1000 classes), batch 1
  at 224 x 224, d1;
- bert-base: `BertModel(BertConfig())`, 12 layers, 768 wide, 12 heads, batch 1 x 128 tokens with an
  attention_mask, d1;
- gpt2: `GPT2LMHeadModel(GPT2Config(use_cache=False))`, GPT-2 small (12 layers, 768 wide, LM head over the
  50257-token vocabulary), batch 1 x 128 tokens, d1;
- mlp, cnn, block, mha-block: the small models of tests/e2e/test_three_paths.py, on mesh4x4.

Per model: compile seconds (`dojoc.compile`, host wall time), emulate seconds (the first call on the
emulator: the load phase and one call, host wall time), cycles of one call and of the one-time load of
resident weights, utilization, cores used, planned SRAM peak per core, DRAM and NoC bytes (the emulator's
counts for one call, the load phase subtracted), instructions executed, and the PCC against eager FP32.
Every figure but the two host times comes from the emulator's run of the compiled program (`Program.report`).

Acceptance targets (issue 3): ResNet-50 batch 1 at 224 x 224 on d1 compiles in under 60 s and emulates in
under 30 s on 2 host cores; the script prints whether they hold.

Usage: python benchmarks/models.py [--only NAME]... [--precision bf16|fp32|cfp8] [--quick] [--no-write]
  --quick: the small models only (and docs/benchmarks.md is not written unless --write is given).
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, host, markdown_table, nbytes, secs, text_table, warm_up  # noqa: E402

import dojoc  # noqa: E402
from dojoc.report import Report, accuracy  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
TARGETS = {"resnet50": (60.0, 30.0)}  # model -> (compile s, emulate s) limits on 2 host cores


Built = tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]  # model, args, kwargs


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    machine: str
    build: Callable[[], Built]
    big: bool = True


def _resnet50(batch: int = 1) -> Built:
    from transformers import ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()
    return model, (torch.randn(batch, 3, 224, 224),), {}


def _mobilenetv2() -> Built:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    # PyTorch-style symmetric padding (tf_padding=False), as torchvision's MobileNetV2: TF padding would add
    # a pad op before every strided convolution
    cfg = MobileNetV2Config(num_labels=1000, tf_padding=False)
    return MobileNetV2ForImageClassification(cfg).eval(), (torch.randn(1, 3, 224, 224),), {}


def _bert_base(batch: int = 1, seq: int = 128, **config: Any) -> Built:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(**config)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    return BertModel(cfg).eval(), (ids,), {"attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def _gpt2(batch: int = 1, seq: int = 128, head: bool = True, **config: Any) -> Built:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    cfg = GPT2Config(use_cache=False, **config)
    model = (GPT2LMHeadModel if head else GPT2Model)(cfg).eval()
    return model, (torch.randint(0, cfg.vocab_size, (batch, seq)),), {}


def _small(name: str) -> Callable[[], Built]:
    def build() -> Built:
        path = ROOT / "tests" / "e2e" / "test_three_paths.py"
        spec = importlib.util.spec_from_file_location("_bench_small_models", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model, args = module.FACTORIES[name]()
        return model, args, {}
    return build


CASES = [
    Case("resnet50", "ResNet-50, 1 x 3 x 224 x 224", "d1", _resnet50),
    Case("mobilenetv2", "MobileNetV2 (depthwise 3 x 3), 1 x 3 x 224 x 224", "d1", _mobilenetv2),
    Case("bert-base", "BERT-base, 12 layers, 1 x 128 tokens, attention mask", "d1", _bert_base),
    Case("gpt2", "GPT-2 small + LM head, 12 layers, 1 x 128 tokens", "d1", _gpt2),
    Case("mlp", "MLP 64-128-128-10, batch 8", "mesh4x4", _small("mlp"), big=False),
    Case("cnn", "small CNN, 2 x 3 x 32 x 32", "mesh4x4", _small("cnn"), big=False),
    Case("block", "transformer block (sdpa), 2 x 16 x 64", "mesh4x4", _small("block"), big=False),
    Case("mha-block", "transformer block (nn.MultiheadAttention)", "mesh4x4", _small("mha_block"), big=False),
]


@dataclass(frozen=True)
class Row:
    case: Case
    precision: str
    compile_s: float
    emulate_s: float
    report: Report
    pcc: float


def measure(case: Case, precision: str) -> Row:
    torch.manual_seed(0)
    model, args, kwargs = case.build()
    t0 = time.perf_counter()
    prog = dojoc.compile(model, args, example_kwargs=kwargs, machine=case.machine, precision=precision)
    t1 = time.perf_counter()
    out = prog(*args, **kwargs)
    t2 = time.perf_counter()
    with torch.no_grad():
        want = [x for x in pytree.tree_leaves(model(*args, **kwargs)) if isinstance(x, torch.Tensor)]
    pcc, _ = accuracy(pytree.tree_leaves(out), want)
    assert prog.report is not None
    return Row(case, precision, t1 - t0, t2 - t1, prog.report, pcc)


HEADER = ["model", "machine", "prec", "compile s", "emulate s", "cycles", "time", "load cycles", "util",
          "cores", "SRAM peak", "DRAM bytes", "NoC bytes", "instructions", "PCC"]


def cells(row: Row) -> list[str]:
    r = row.report
    us = r.seconds * 1e6
    return [row.case.name, r.machine, r.precision, secs(row.compile_s), secs(row.emulate_s),
            f"{r.cycles:,}", f"{us / 1e3:.3f} ms" if us >= 1e3 else f"{us:.1f} us", f"{r.load_cycles:,}",
            f"{r.utilization:.2%}", f"{r.cores_used}", nbytes(r.sram_peak_bytes), nbytes(r.dram_bytes),
            nbytes(r.noc_bytes), f"{r.instructions:,}", f"{row.pcc:.5f}"]


def markdown(rows: list[Row]) -> str:
    return markdown_table(HEADER, [cells(r) for r in rows], set(HEADER[3:]))




def target_lines(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.case.name in TARGETS and row.report.machine == "d1":
            c_max, e_max = TARGETS[row.case.name]
            ok = row.compile_s < c_max and row.emulate_s < e_max
            lines.append(f"{row.case.name} on d1: compile {row.compile_s:.1f} s (target < {c_max:g} s), emulate "
                         f"{row.emulate_s:.1f} s (target < {e_max:g} s): {'met' if ok else 'NOT MET'}; "
                         f"{row.report.cores_used} cores used (target >= 300: "
                         f"{'met' if row.report.cores_used >= 300 else 'NOT MET'})")
    return lines


def write_doc(rows: list[Row], info: dict[str, str], total_s: float) -> None:
    doc = f"""# Benchmarks: whole models on the emulator

Generated by `benchmarks/models.py` (`make bench`); do not edit by hand.

- date: {info['date']}
- host: {info['host']}; {info['load']}
- software: {info['software']}
- measured in {total_s:.0f} s

Models have random weights built from transformers' configs (nothing is downloaded); the small models
are those of `tests/e2e/test_three_paths.py`. Columns:

- **compile s**: host wall time of `dojoc.compile` (export, lowering, passes, code generation, encoding);
- **emulate s**: host wall time of the first call on the emulator (the load phase and one call, with
  the arithmetic);
- **cycles**, **time**: one call on the emulated machine, inputs in DRAM to outputs in DRAM, resident
  weights already in SRAM; time at the machine's clock;
- **load cycles**: the one-time loading of resident weights into SRAM;
- **util**: flops / (cycles x all cores of the machine x peak flops per core-cycle at the precision),
  flops counted as `torch.utils.flop_counter` does (which, on CPU, does not count the scaled
  dot-product attention, so the transformers' attention matmuls are not in it);
- **cores**: cores that run code; **SRAM peak**: the planned maximum per core, code included;
- **DRAM bytes**, **NoC bytes** (bytes x links crossed), **instructions**: the emulator's counts for one
  call (the load phase's traffic is subtracted at the load barrier);
- **PCC**: Pearson correlation of all outputs against eager FP32.

{markdown(rows)}

"""
    lines = target_lines(rows)
    if lines:
        doc += "Acceptance targets (issue 3):\n\n" + "\n".join(f"- {t}" for t in lines) + "\n"
    DOC.write_text(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=[c.name for c in CASES], help="run only this model "
                    "(repeatable)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "cfp8"])
    ap.add_argument("--quick", action="store_true", help="the small models only")
    ap.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--write", action="store_true", help="write docs/benchmarks.md even with --quick/--only")
    args = ap.parse_args()

    cases = [c for c in CASES if (not args.only or c.name in args.only) and (not args.quick or not c.big)]
    warm_up()
    start = time.perf_counter()
    rows = []
    for case in cases:
        print(f"{case.name}: {case.description}, {case.machine}, {args.precision} ...", file=sys.stderr, flush=True)
        rows.append(measure(case, args.precision))
        gc.collect()
    total = time.perf_counter() - start
    info = host()
    print(text_table(HEADER, [cells(r) for r in rows], left=3))
    print()
    for line in target_lines(rows):
        print(line)
    print(f"{info['date']}; {info['host']}; {info['load']}")
    partial = bool(args.only) or args.quick
    if args.write or not (args.no_write or partial):
        write_doc(rows, info, total)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if all("NOT MET" not in t for t in target_lines(rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
