"""The same model and options compile to byte-identical object files in different processes (whatever
PYTHONHASHSEED and thread counts are), and the same program gives the same outputs and cycles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import dojoc

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import hashlib, torch, dojoc
from isa.objfile import write_object
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                        torch.nn.Linear(8 * 8 * 8, 10)).eval()
x = torch.randn(2, 3, 8, 8)
for precision in ("bf16", "cfp8"):
    image = dojoc.compile(m, (x,), machine="mesh4x4", precision=precision).image
    print(precision, len(write_object(image)), hashlib.sha256(write_object(image)).hexdigest())
"""


def _compile_elsewhere(seed: str, threads: str) -> str:
    """Per precision, the size and sha256 of the object file compiled in a fresh process."""
    env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, check=True, cwd=ROOT,
                          timeout=300, text=True)
    return done.stdout


def test_two_processes_compile_the_same_bytes() -> None:
    a = _compile_elsewhere("1", "1")
    b = _compile_elsewhere("987", "2")
    assert a.count("\n") == 2 and a == b, f"the object files differ between processes:\n{a}\n{b}"


def test_the_same_program_gives_the_same_outputs_and_cycles() -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()
    x = torch.randn(4, 16)
    prog = dojoc.compile(m, (x,), machine="mesh4x4", precision="bf16")
    runs = [prog.run(x) for _ in range(2)]
    (y0, r0), (y1, r1) = runs
    assert r0.cycles == r1.cycles and r0.noc_bytes == r1.noc_bytes
    np.testing.assert_array_equal(y0.float().numpy(), y1.float().numpy())
