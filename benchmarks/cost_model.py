"""The cost model held to the emulator: per op, the cycles the mapping predicted against the cycles the
emulator measured (report.json's "ops"), as the median relative error per model and per kernel family.

Models: those of benchmarks/models.py (ResNet-50, BERT-base, GPT-2 on d1; the small models on mesh4x4).
Usage: python benchmarks/cost_model.py [--only NAME]... [--worst N]
Not collected by pytest (tests/passes/test_cost_model.py keeps the error bounded on small shapes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import CASES  # noqa: E402

import dojoc  # noqa: E402
from dojoc.mapping.explain import prediction_error, timed  # noqa: E402


def errors(rows: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """(|predicted - emulated| / emulated, row) of every op the emulator timed."""
    return [(prediction_error(r), r) for r in timed(rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=[c.name for c in CASES])
    ap.add_argument("--worst", type=int, default=3, help="list the N ops with the largest error")
    args = ap.parse_args()
    print("| model | machine | ops | median error | per kernel family (median, ops) |")
    print("|---|---|---:|---:|---|")
    worst_all = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        torch.manual_seed(0)
        model, inputs, kwargs = case.build()
        prog = dojoc.compile(model, inputs, example_kwargs=kwargs, machine=case.machine)
        _, report = prog.run(*inputs, **kwargs)
        errs = errors([dict(r) for r in report.ops])
        fams: dict[str, list[float]] = {}
        for e, r in errs:
            fams.setdefault(r["kernel"], []).append(e)
        per = ", ".join(f"{k} {statistics.median(v):.0%} ({len(v)})" for k, v in sorted(fams.items()))
        med = statistics.median(e for e, _ in errs) if errs else 0.0
        print(f"| {case.name} | {case.machine} | {len(errs)} | {med:.1%} | {per} |", flush=True)
        worst_all += [(e, case.name, r) for e, r in errs]
    for e, name, r in sorted(worst_all, key=lambda t: -t[0])[:args.worst]:
        print(f"worst: {name} {r['op']} ({r['kernel']}, {r['cores']} cores): predicted {r['predicted_cycles']:,}, "
              f"emulated {r['emulated_cycles']:,} ({e:.0%})")


if __name__ == "__main__":
    main()
