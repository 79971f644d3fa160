"""Timing-only emulation against full emulation, on random programs that run to their end.

Timing-only mode moves no data and skips the checks on it (bounds, races, number formats: it trusts a
program that a full run has checked), so the property is about programs that a full run completes: their
cycles do not depend on the data, and timing-only gives the same count. The programs are
`isa.random_programs.local_program`s (every scalar and SIMD instruction, and mma, on small tiles over a
few SRAM addresses), so that most of them complete; those that trap in a full run are left out.
benchmarks/fuzz.py's emu-diff target holds the same property on many more."""

from __future__ import annotations

import random

import pytest

from isa.presets import load_machine
from isa.random_programs import local_program
from runtime_emu.emulator import Emulator
from runtime_emu.traps import Trap

MACHINE = load_machine("mesh2x2")


@pytest.mark.parametrize("seed", range(3))
def test_timing_only_gives_the_cycles_of_a_full_run(seed: int) -> None:
    rng = random.Random(seed)
    completed = 0
    for _ in range(200):
        image = local_program(rng, MACHINE)
        try:
            full = Emulator(image, max_cycles=100_000).run().cycles
        except Trap:
            continue  # (a trap on data, or a scalar overwriting a tile address: not this property's)
        completed += 1
        assert Emulator(image, timing_only=True, max_cycles=100_000).run().cycles == full
    assert completed >= 100, completed  # the property held on enough programs to mean something
