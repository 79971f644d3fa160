"""Helpers shared by the whole-model benchmark scripts (benchmarks/models.py, benchmarks/targets.py): the
host description written into the generated docs, the warm-up compile, number formatting and tables."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

import dojoc

ROOT = Path(__file__).resolve().parents[1]


def warm_up() -> None:
    """Compile and run a tiny model once, so the first case's times do not include one-time imports and
    torch.export's first-call setup."""
    lin = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    x = torch.randn(2, 8)
    dojoc.compile(lin, (x,), machine="mesh1x1")(x)


def secs(s: float) -> str:
    return f"{s:.1f}" if s >= 10 else f"{s:.2f}"


def nbytes(n: int | float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[str]) -> str:
    """A markdown table; the columns named in `right` are right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> str:
    """A plain-text table; the first `left` columns are left-aligned, the others right-aligned."""
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    fmt = [(str.ljust if i < left else str.rjust) for i in range(len(header))]
    out = ["  ".join(f(c, w) for f, c, w in zip(fmt, t, widths, strict=True)) for t in table]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def host() -> dict[str, str]:
    """Date, host CPU and cores, software versions with the commit, and the load average (now)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        import transformers
        tf = transformers.__version__
    except ImportError:
        tf = "not installed"
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{cpu}, {avail} cores available to the process ({os.cpu_count()} in the machine), "
                f"{platform.system()} {platform.release()}",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, transformers {tf}, "
                    f"dojoc {dojoc.__version__}, commit {commit}",
        "load": "load average {:.2f} {:.2f} {:.2f} at the end".format(*os.getloadavg()),
    }
