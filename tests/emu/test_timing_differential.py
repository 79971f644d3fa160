"""Timing-only emulation against full emulation, on random programs that run to their end.

Timing-only mode moves no data and skips the checks on it (bounds, races, number formats: it trusts a
program that a full run has checked), so the property is about programs that a full run completes: their
cycles do not depend on the data, and timing-only gives the same count. The programs are drawn from the
instruction table (every scalar and SIMD instruction, and mma), with small tiles over a few SRAM
addresses, so that most of them complete; those that trap in a full run are left out."""

from __future__ import annotations

import random
from typing import Any

import pytest

from isa.dtypes import DType
from isa.encoding import make
from isa.errors import EncodingError
from isa.presets import load_machine
from isa.program import CodeSection, Image
from isa.table import INSTRUCTIONS, Field, Kind, Unit
from runtime_emu.emulator import Emulator
from runtime_emu.traps import Trap

MACHINE = load_machine("mesh2x2")
ADDRS = (0, 4096, 16384, 65536, 131072)  # r1-r5: tiles far enough apart for small tiles not to meet
# local work only: no DMA, network or synchronisation (deadlocks), no gathers (addresses from data), no
# branches (a random target loops until the watchdog)
UNITS = (Unit.SCALAR, Unit.SIMD, Unit.MXU)
SKIP = {"vgather", "beq", "bne", "blt", "bge", "jmp", "loop", "halt", "div", "rem"}
SPECS = [s for s in INSTRUCTIONS if s.unit in UNITS and s.mnemonic not in SKIP]


BITWISE = {"vand", "vands", "vor", "vors", "vxor", "vxors", "vnot"}


def _value(rng: random.Random, f: Field, scalar: bool, mnemonic: str) -> Any:
    if f.kind is Kind.REG:  # tiles at r1-r5 (r6-r8 small scalars); a scalar result goes to r9-r15
        if scalar:
            return rng.randrange(9, 16) if f.name == "rd" else rng.randrange(1, 16)
        return rng.randrange(1, 6)
    if f.kind is Kind.ENUM:
        assert f.enum is not None
        return rng.choice(list(f.enum))
    if f.kind is Kind.DTYPE:  # (bitwise ops take integers; arithmetic, the matrix unit, floats)
        return DType.I32 if mnemonic in BITWISE else rng.choice((DType.F32, DType.BF16))
    if f.kind is Kind.F32:
        return rng.choice((0.0, 1.0, -2.0, 3.0))
    if f.name in ("rows", "cols", "m", "n", "k", "count"):
        return rng.randint(1, 8)
    if f.name.startswith("s") and f.kind is Kind.UIMM:  # a row stride: at least a row of 8 f32
        return rng.choice((32, 64, 128))
    top = (1 << f.bits) - 1 if f.kind is Kind.UIMM else (1 << (f.bits - 1)) - 1
    return min(rng.choice((0, 1, 2, 3, 7, 8)), top)


def _program(rng: random.Random) -> Image:
    sections = []
    for i, cores in enumerate(((0, 1), (2,), (3,))):
        code = [make("li", rd=r, imm=a) for r, a in zip(range(1, 6), ADDRS, strict=True)]
        code += [make("li", rd=r, imm=rng.randint(0, 9)) for r in range(6, 9)]
        while len(code) < 8 + rng.randint(4, 24):
            spec = rng.choice(SPECS)
            try:
                code.append(make(spec.mnemonic, **{f.name: _value(rng, f, spec.unit is Unit.SCALAR, spec.mnemonic)
                                                   for f in spec.fields}))
            except EncodingError:
                continue
        code.append(make("halt"))
        sections.append(CodeSection(f"s{i}", cores, tuple(code)))
    return Image(MACHINE, tuple(sections))


@pytest.mark.parametrize("seed", range(3))
def test_timing_only_gives_the_cycles_of_a_full_run(seed: int) -> None:
    rng = random.Random(seed)
    completed = 0
    for _ in range(200):
        image = _program(rng)
        try:
            full = Emulator(image, max_cycles=100_000).run().cycles
        except Trap:
            continue  # (a trap on data, or a scalar overwriting a tile address: not this property's)
        completed += 1
        assert Emulator(image, timing_only=True, max_cycles=100_000).run().cycles == full
    assert completed >= 100, completed  # the property held on enough programs to mean something
