"""End-of-run tallies over every instruction of a program: busy cycles per IR op and the flop count.

Both visit per-pc execution counts (`Emulator._counts`, shared by a section's cores) once a run is over;
programs carry one debug entry per instruction (about two million for ResNet-50 b1), so the per-op sum is
vectorised and reads the entries through C-level `map`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, itemgetter

import numpy as np

from isa.program import DebugEntry
from runtime_emu.core import Step

__all__ = ["op_cycles", "flops"]

_COST = itemgetter(2)


def op_cycles(debug: Sequence[DebugEntry], counts: list[list[int]], programs: list[list[Step]]) -> dict[str, int]:
    """Busy cycles per IR op: executions x cost of every instruction its debug entries name (entries outside
    the program are ignored). `programs` are the predecoded steps, one past each section's end."""
    if not debug:
        return {}
    offsets = np.cumsum([0] + [len(c) for c in counts])
    costs = [np.fromiter(map(_COST, prog), np.int64, len(prog))[:len(n)]
             for prog, n in zip(programs, counts, strict=True)]
    cycles = np.concatenate([np.zeros(0, np.int64)] + [np.array(n, dtype=np.int64) * c
                                                       for n, c in zip(counts, costs, strict=True)])
    size = len(debug)
    sec = np.fromiter(map(attrgetter("section"), debug), np.int64, size)
    pc = np.fromiter(map(attrgetter("pc"), debug), np.int64, size)
    ops = list(map(attrgetter("op"), debug))
    names = {name: i for i, name in enumerate(dict.fromkeys(ops))}  # in order of first appearance
    op = np.fromiter(map(names.__getitem__, ops), np.int64, size)
    ok = (sec >= 0) & (sec < len(counts))
    ok[ok] &= (pc[ok] >= 0) & (pc[ok] < np.diff(offsets)[sec[ok]])
    per_op = np.bincount(op[ok], weights=cycles[offsets[sec[ok]] + pc[ok]], minlength=len(names))
    return {name: int(per_op[i]) for name, i in names.items() if per_op[i]}


def flops(counts: list[list[int]], mmas: list[list[tuple[int, int]]]) -> int:
    """2 x the multiply-accumulates of the mma instructions executed (at their unpadded shapes): `mmas` holds,
    per section, (pc, flops per execution) of its mma instructions."""
    total = 0
    for n, section in zip(counts, mmas, strict=True):
        for pc, f in section:
            total += n[pc] * f
    return total
