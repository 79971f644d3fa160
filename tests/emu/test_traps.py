"""Every trap kind, from small programs: the kind, the core, the pc, the instruction text and the cycle."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa.asm import assemble
from isa.encoding import make
from isa.machine import DramPort, Edge, Machine
from isa.presets import load_machine
from isa.program import CodeSection, Image
from isa.random_programs import any_program
from isa.text import format_instr
from runtime_emu import Emulator, Trap, TrapKind


def trap_of(text: str, machine: Machine | str | None = None, **kw: Any) -> Trap:
    image = assemble(text, machine=machine)
    return trap_of_image(image, **kw)


def trap_of_image(image: Image, inputs: dict[str, np.ndarray] | None = None, **kw: Any) -> Trap:
    emu = Emulator(image, **kw)
    if inputs:
        emu.set_inputs(inputs)
    with pytest.raises(Trap) as info:
        emu.run()
    trap = info.value
    if trap.core is not None and trap.pc is not None:
        sec = next(s for s in image.sections if trap.core in s.cores)
        if trap.pc < len(sec.code):
            labels = {i: n for n, i in sec.labels}
            assert trap.instr == format_instr(sec.code[trap.pc], labels)
            assert trap.instr in str(trap)
        assert f"core {trap.core}, pc {trap.pc}" in str(trap)
    return trap


def one(body: str, machine: str = "mesh1x1") -> str:
    return f".machine {machine}\n.section main cores=0\n{body}\n"


def check(trap: Trap, kind: TrapKind, core: int | None, pc: int | None, *words: str) -> None:
    assert trap.kind is kind, str(trap)
    assert trap.core == core and trap.pc == pc, str(trap)
    for w in words:
        assert w in str(trap), (w, str(trap))


# -- out of bounds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body,pc", [
    ("li r1, 0x13FFF0\nvfill r1, 1.0, rows=1, cols=8, sd=32, dt=f32\nhalt", 1),
    ("li r1, -4\nvfill r1, 1.0, rows=1, cols=1, sd=4, dt=f32\nhalt", 1),
    ("li r1, 0x13FF00\nli r2, 0\ndmadim 0, 128, sstride=4, dstride=4\n"
     "dmald r1, r2, esize=4, ndim=1, sem=0, dt=f32\nhalt", 3),
    ("li r1, 0\nli r2, 0x13FFFF\nput r1, r2, r1, rows=1, bytes=8, seml=0, semr=0\nhalt", 2),
])
def test_oob_sram(body: str, pc: int) -> None:
    check(trap_of(one(body)), TrapKind.OOB_SRAM, 0, pc, "outside SRAM")


def test_oob_dram_past_the_end_and_across_ports() -> None:
    t = trap_of(one("li r1, 0\nli r2, 0x3FFFFFF0\ndmadim 0, 8, sstride=4, dstride=4\n"
                    "dmast r2, r1, esize=4, ndim=1, sem=0\nhalt"))
    check(t, TrapKind.OOB_DRAM, 0, 3, "DRAM")
    two = Machine(mesh=(2, 2), dram_ports=(DramPort(name="p0", edge=Edge.WEST, last=1, capacity=1 << 20),
                                           DramPort(name="p1", edge=Edge.EAST, last=1, capacity=1 << 20)))
    t = trap_of(one("li r1, 0\nli r2, 0xFFFF0\ndmadim 0, 8, sstride=4, dstride=4\n"
                    "dmald r1, r2, esize=4, ndim=1, sem=0, dt=f32\nhalt", "mesh2x2"), machine=two)
    check(t, TrapKind.OOB_DRAM, 0, 3, "p0")


def test_oob_dram_gather_index() -> None:
    image = assemble(one("li r1, 0x100\nli r2, 0x3FFFFF00\nli r3, 0x0\nli r4, 0\n"
                         "dmadim 0, 8, sstride=1, dstride=1\ndmald r3, r4, esize=1, ndim=1, sem=0, dt=u8\n"
                         "wait 0, 1\ndmagat r1, r2, r3, n=2, rowbytes=64, tstride=64, sem=1\nhalt")
                     .replace(".section", ".tensor i input 0x0 i32 [2]\n.section"))
    t = trap_of_image(image, {"i": np.array([1, 4], dtype=np.int32)})
    check(t, TrapKind.OOB_DRAM, 0, 7, "gather index 4")


# -- illegal ----------------------------------------------------------------------------------------

def test_illegal_branch_target_and_running_off_the_end() -> None:
    m = load_machine("mesh1x1")
    code = (make("li", rd=1, imm=1), make("beq", ra=1, rb=0, target=0), make("jmp", target=99))
    t = trap_of_image(Image(m, (CodeSection("s", (0,), code),)))
    check(t, TrapKind.ILLEGAL, 0, 2, "branch target 99")
    t = trap_of(one("li r1, 1\nnop"))
    check(t, TrapKind.ILLEGAL, 0, 2, "ran off the end")
    assert t.instr == ""


# -- bad operands -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body,pc,words", [
    ("li r1, 0\nli r2, 0\ndiv r3, r1, r2\nhalt", 2, "division by zero"),
    ("li r1, 99\nsignal r1, 0\nhalt", 1, "core id 99"),
    ("li r1, 0\nput r1, r1, r1, rows=1, bytes=4, cast=row, seml=0, semr=0\nhalt", 1, "no core"),
    ("li r1, 0\nput r1, r1, r1, rows=1, bytes=4, cast=row, seml=0, semr=0, span=2\nhalt", 1, "past the mesh edge"),
    ("li r1, 0\nsignal r1, 0, span=1\nhalt", 1, "row and col multicasts only"),
    ("li r1, 0\nsignal r1, 0, cast=row, first=1\nhalt", 1, "without a span"),
    # found by benchmarks/fuzz.py's emu target: an immediate beyond an integer tile's type was a bare OverflowError
    ("li r1, 0\nvadds r1, r1, 3e38, rows=1, cols=4, sd=16, sa=16, dt=i32\nhalt", 1, "does not fit a i32 tile"),
    ("li r1, 0\ndmadim 0, 4, sstride=4, dstride=4\ndmald r1, r1, esize=3, ndim=1, sem=0, dt=f32\nhalt", 2,
     "element size 3"),
    ("li r1, 0\ndmadim 0, 4, sstride=4, dstride=4\ndmald r1, r1, esize=4, ndim=2, sem=0, dt=f32\nhalt", 2,
     "dimension 1 has count 0"),
    ("li r1, 0\nvexp r1, r1, rows=1, cols=4, sd=16, sa=16, dt=i32\nhalt", 1, "i32"),
    ("li r1, 0\nmma r1, r1, r1, m=8, n=8, k=8, sd=32, sa=8, sb=8, dt=i8\nhalt", 1, "i8"),
    ("li r1, 0\nvfill r1, 0.0, rows=1, cols=4, sd=16, dt=i32\n"
     "vdiv r1, r1, r1, rows=1, cols=4, sd=16, sa=16, sb=16, dt=i32\nhalt", 2, "division by zero"),
    ("li r1, 0\nli r2, 0x40\nvfill r1, 7.0, rows=1, cols=2, sd=8, dt=i32\n"
     "vgather r2, r2, r1, n=2, cols=4, sd=16, st=16, dt=f32, nt=4\nhalt", 3, "index 7"),
])
def test_bad_operand(body: str, pc: int, words: str) -> None:
    check(trap_of(one(body)), TrapKind.BAD_OPERAND, 0, pc, words)


def test_bad_semaphore_index_on_a_machine_with_few() -> None:
    m = load_machine("mesh1x1", ["semaphores=4"])
    check(trap_of(one("nop\nwait 5, 1\nhalt"), machine=m), TrapKind.BAD_OPERAND, 0, 1, "semaphore 5")
    check(trap_of(one("li r1, 0\ndmadim 0, 4, sstride=4, dstride=4\n"
                      "dmald r1, r1, esize=4, ndim=1, sem=4, dt=f32\nhalt"), machine=m),
          TrapKind.BAD_OPERAND, 0, 2, "semaphore 4")


def test_barrier_count_mismatch() -> None:
    text = (".machine mesh2x2\n.section a cores=0\nbarrier 1, 2\nhalt\n"
            ".section b cores=1\nnop\nbarrier 1, 3\nhalt\n")
    check(trap_of(text), TrapKind.BAD_OPERAND, 1, 1, "barrier 1")


# -- races ------------------------------------------------------------------------------------------

def test_race_on_incoming_dma_and_outgoing_put() -> None:
    t = trap_of(one("li r1, 0x100\nli r2, 0\ndmadim 0, 64, sstride=4, dstride=4\n"
                    "dmald r1, r2, esize=4, ndim=1, sem=0, dt=f32\n"
                    "vadds r2, r1, 1.0, rows=1, cols=4, sd=16, sa=16, dt=f32\nwait 0, 1\nhalt"))
    check(t, TrapKind.RACE, 0, 4, "a DMA load", "pending until cycle")
    t = trap_of(".machine mesh2x2\n.section s cores=0\nli r1, 1\nli r2, 0\n"
                "put r1, r2, r2, rows=4, bytes=256, ss=256, ds=256, seml=0, semr=0\n"
                "vfill r2, 0.0, rows=1, cols=4, sd=16, dt=f32\nwait 0, 1\nhalt\n"
                ".section r cores=1\nwait 0, 1\nhalt\n")
    check(t, TrapKind.RACE, 0, 3, "overwrites the source", "put to core 1")


def test_race_two_puts_into_the_same_bytes() -> None:
    text = (".machine mesh2x2\n"
            ".section a cores=0\nli r1, 2\nli r2, 0\nput r1, r2, r2, rows=1, bytes=4096, seml=0, semr=0\n"
            "wait 0, 1\nhalt\n"
            ".section b cores=1\nli r1, 2\nli r2, 0\nnop\nput r1, r2, r2, rows=1, bytes=64, seml=0, semr=0\n"
            "wait 0, 1\nhalt\n"
            ".section c cores=2\nwait 0, 2\nhalt\n")
    check(trap_of(text), TrapKind.RACE, 1, 3, "core 2", "a put from core 0")


def test_interleaved_columns_are_not_a_race() -> None:
    """A put fills the left half of each row of a matrix while the core works on the right half."""
    text = (".machine mesh2x2\n"
            ".section a cores=0\nli r1, 1\nli r2, 0\n"
            "put r1, r2, r2, rows=16, bytes=32, ss=64, ds=64, seml=0, semr=0\nwait 0, 1\nhalt\n"
            ".section b cores=1\nli r2, 32\nnop\nnop\n"
            "vfill r2, 1.0, rows=16, cols=8, sd=64, dt=f32\nvadds r2, r2, 1.0, rows=16, cols=8, sd=64, sa=64, "
            "dt=f32\nwait 0, 1\nhalt\n")
    assert Emulator(assemble(text)).run().cycles > 0


# -- deadlock, watchdog, format ---------------------------------------------------------------------

def test_deadlock_names_every_waiting_core() -> None:
    text = (".machine mesh2x2\n.section a cores=0\nli r1, 1\nwait 3, 1\nsignal r1, 5\nhalt\n"
            ".section b cores=1\nli r1, 0\nwait 5, 2\nsignal r1, 3\nhalt\n"
            ".section c cores=2\nbarrier 4, 2\nhalt\n.section d cores=3\nhalt\n")
    t = trap_of(text)
    check(t, TrapKind.DEADLOCK, 0, 1, "core 0 waits on sem 3 (has 0, needs 1)",
          "core 1 waits on sem 5 (has 0, needs 2)", "core 2 waits at barrier 4 (1 of 2 arrived)")
    assert "core 3" not in t.detail


def test_watchdog_on_a_spinning_core_and_on_a_late_transfer() -> None:
    t = trap_of(one("spin:\naddi r1, r1, 1\njmp spin"), max_cycles=5000)
    assert t.kind is TrapKind.WATCHDOG and t.core == 0 and t.pc in (0, 1) and "5000" in str(t)
    assert t.cycle > 5000
    t = trap_of(one("li r1, 0\ndmadim 0, 64, sstride=4, dstride=4\n"
                    "dmald r1, r1, esize=4, ndim=1, sem=0, dt=f32\nhalt"), max_cycles=50)
    assert t.kind is TrapKind.WATCHDOG and t.core is None and "in flight" in str(t)


def test_format_nan_to_cfp8() -> None:
    t = trap_of(one("li r1, 0\nli r2, 0x100\nvfill r1, 0.0, rows=1, cols=4, sd=16, dt=f32\n"
                    "vdiv r1, r1, r1, rows=1, cols=4, sd=16, sa=16, sb=16, dt=f32\n"
                    "vcvt r2, r1, rows=1, cols=4, sd=4, sa=16, dtd=cf8e4, dts=f32\nhalt"))
    check(t, TrapKind.FORMAT, 0, 4, "NaN")


def test_trap_cycle_is_the_instruction_start() -> None:
    m = load_machine("mesh1x1")
    t = trap_of(one("nop\nnop\nnop\nli r1, -1\nvfill r1, 1.0, rows=1, cols=1, sd=4, dt=f32\nhalt"))
    assert t.cycle == 4 * m.scalar_cycles


def test_every_kind_is_covered() -> None:
    src = open(__file__).read()
    for kind in TrapKind:
        assert f"TrapKind.{kind.name}" in src


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_random_valid_programs_end_in_outputs_or_a_trap(rng: random.Random) -> None:
    """Programs of every instruction with every field in range (`isa.random_programs.any_program`, the
    fuzzer's emu target) run to their end or trap naming the core, the pc and the instruction; a watchdog
    bounds a program that spins."""
    image = any_program(rng, load_machine("mesh2x2"))
    try:
        Emulator(image, max_cycles=20_000).run()
    except Trap as t:
        assert t.kind in TrapKind and str(t)
