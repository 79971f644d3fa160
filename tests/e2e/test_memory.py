"""Under load: compiling and running the same model many times in one process keeps memory flat."""

from __future__ import annotations

import gc
import os

import torch

import dojoc


def _rss_mib() -> float:
    """The process's resident set now (not its peak), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_fifty_compiles_and_runs_keep_memory_flat() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    x = torch.randn(4, 16)
    marks = []
    for _ in range(50):
        prog = dojoc.compile(model, (x,), machine="mesh4x4", precision="bf16")
        prog(x)
        del prog
        gc.collect()
        marks.append(_rss_mib())
    # after the first few (imports, caches warming up), RSS grows by no more than 10 %
    assert marks[-1] <= 1.10 * marks[4], f"RSS {marks[4]:.0f} MiB after 5 compiles, {marks[-1]:.0f} MiB after 50"
