"""Random valid programs drawn from the instruction table, for fuzzing and property tests of the emulator.

Two generators, both seeded by the caller's `random.Random` so a draw repeats:

- `any_program`: every instruction of the table, every field anywhere in its range (small values most of
  the time, so instructions do work). Most such programs trap early (a tile off the end of SRAM, a race, a
  bad operand): they hold the emulator to its contract, an outcome or a Trap, on anything the encoder
  accepts.
- `local_program`: the scalar, SIMD and matrix instructions but branches, divisions and gathers, on small
  tiles at a few SRAM addresses far enough apart, with a dtype each instruction takes; no DMA, network or
  synchronisation. Most of these run to their end, so they reach the arithmetic and the cost rules
  (timing-only against full emulation: tests/emu/test_timing_differential.py, benchmarks/fuzz.py's
  emu-diff target).

Every instruction is built with `isa.encoding.make`, so it obeys the table's field checks; a value those
checks refuse is drawn again.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

from isa.dtypes import DType
from isa.encoding import make
from isa.errors import EncodingError
from isa.machine import Machine
from isa.program import CodeSection, Image
from isa.table import INSTRUCTIONS, Field, Instr, InstrSpec, Kind, Unit

SMALL = (0, 1, 2, 3, 4, 7, 8, 16, 31, 64, 100, 256, 1024, 4096)  # any_program's usual field values
ANY_ADDRS = (0, 64, 256, 1024, 4096, 65536)  # r1-r8 of an any_program section start at one of these

LOCAL_ADDRS = (0, 4096, 16384, 65536, 131072)  # r1-r5 of a local_program: tiles of 8 x 8 f32 never meet
LOCAL_UNITS = (Unit.SCALAR, Unit.SIMD, Unit.MXU)
# branches loop until the watchdog on a random target; a gather's addresses come from data; a division by
# a random register traps
LOCAL_SKIP = {"vgather", "beq", "bne", "blt", "bge", "jmp", "loop", "halt", "div", "rem"}
LOCAL_SPECS = tuple(s for s in INSTRUCTIONS if s.unit in LOCAL_UNITS and s.mnemonic not in LOCAL_SKIP)
BITWISE = {"vand", "vands", "vor", "vors", "vxor", "vxors", "vnot"}


def _draw(rng: random.Random, specs: Sequence[InstrSpec], count: int,
          value: Callable[[InstrSpec, Field], Any]) -> list[Instr]:
    """`count` instructions of `specs`, each field from `value(spec, field)`; refused values are redrawn."""
    code: list[Instr] = []
    while len(code) < count:
        spec = rng.choice(specs)
        try:
            code.append(make(spec.mnemonic, **{f.name: value(spec, f) for f in spec.fields}))
        except EncodingError:  # a value the field's checks refuse (a NaN where a type forbids it, say)
            continue
    return code


def any_field(rng: random.Random, f: Field, length: int) -> Any:
    """A random in-range value of field `f` in a stream of `length` instructions."""
    if f.kind is Kind.REG:
        return rng.randrange(32)
    if f.kind is Kind.TARGET:
        return rng.randrange(length + 1)
    if f.kind is Kind.ENUM:
        assert f.enum is not None
        return rng.choice(list(f.enum))
    if f.kind is Kind.DTYPE:
        return rng.choice(list(DType))
    if f.kind is Kind.F32:
        return rng.choice((0.0, 1.0, -2.5, 3.0e38, float("inf"), float("nan"), rng.uniform(-9, 9)))
    top = (1 << f.bits) - 1 if f.kind is Kind.UIMM else (1 << (f.bits - 1)) - 1
    v = rng.choice(SMALL) if rng.random() < 0.85 else rng.randrange(top + 1)
    v = min(v, top)
    return -v if f.kind is Kind.SIMM and rng.random() < 0.2 else v


def _any_value(rng: random.Random, length: int, _spec: InstrSpec, f: Field) -> Any:
    return any_field(rng, f, length)


def any_program(rng: random.Random, machine: Machine, max_len: int = 24) -> Image:
    """1 to all-cores sections over the machine's cores, each setting r1-r8 to small SRAM addresses, then 1
    to `max_len` random instructions of the whole table, then `halt`."""
    cores = list(range(machine.num_cores))
    rng.shuffle(cores)
    cuts = sorted(rng.sample(range(1, len(cores)), rng.randrange(len(cores))))
    groups = [cores[a:b] for a, b in zip([0, *cuts], [*cuts, len(cores)], strict=True)]
    sections = []
    for i, group in enumerate(groups):
        code = [make("li", rd=r, imm=rng.choice(ANY_ADDRS)) for r in range(1, 9)]
        length = rng.randint(1, max_len)
        code += _draw(rng, INSTRUCTIONS, length, functools.partial(_any_value, rng, 8 + length))
        code.append(make("halt"))
        sections.append(CodeSection(f"s{i}", tuple(sorted(group)), tuple(code)))
    return Image(machine, tuple(sections))


def local_field(rng: random.Random, f: Field, scalar: bool, mnemonic: str) -> Any:
    """A field of a local_program's instruction: tiles at r1-r5 (r6-r8 small scalars; a scalar result goes to
    r9-r15, so no tile address is overwritten), up to 8 x 8 elements, row strides of at least 8 f32."""
    if f.kind is Kind.REG:
        if scalar:
            return rng.randrange(9, 16) if f.name == "rd" else rng.randrange(1, 16)
        return rng.randrange(1, 6)
    if f.kind is Kind.ENUM:
        assert f.enum is not None
        return rng.choice(list(f.enum))
    if f.kind is Kind.DTYPE:  # (bitwise ops take integers; arithmetic and the matrix unit, floats)
        return DType.I32 if mnemonic in BITWISE else rng.choice((DType.F32, DType.BF16))
    if f.kind is Kind.F32:
        return rng.choice((0.0, 1.0, -2.0, 3.0))
    if f.name in ("rows", "cols", "m", "n", "k", "count"):
        return rng.randint(1, 8)
    if f.name.startswith("s") and f.kind is Kind.UIMM:  # a row stride
        return rng.choice((32, 64, 128))
    top = (1 << f.bits) - 1 if f.kind is Kind.UIMM else (1 << (f.bits - 1)) - 1
    return min(rng.choice((0, 1, 2, 3, 7, 8)), top)


def local_program(rng: random.Random, machine: Machine, groups: tuple[tuple[int, ...], ...] = ((0, 1), (2,), (3,)),
                  lengths: tuple[int, int] = (4, 24)) -> Image:
    """One section per group of cores: r1-r5 set to LOCAL_ADDRS, r6-r8 to small scalars, then a random number
    (in `lengths`) of local instructions, then `halt`."""
    sections = []
    for i, cores in enumerate(groups):
        code = [make("li", rd=r, imm=a) for r, a in zip(range(1, 6), LOCAL_ADDRS, strict=True)]
        code += [make("li", rd=r, imm=rng.randint(0, 9)) for r in range(6, 9)]
        code += _draw(rng, LOCAL_SPECS, rng.randint(*lengths),
                      lambda s, f: local_field(rng, f, s.unit is Unit.SCALAR, s.mnemonic))
        code.append(make("halt"))
        sections.append(CodeSection(f"s{i}", cores, tuple(code)))
    return Image(machine, tuple(sections))
