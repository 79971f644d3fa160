"""Traps: faults the emulator stops on, each naming the core, the program counter and the instruction."""

from __future__ import annotations

from enum import Enum

from isa.errors import DojocError


class TrapKind(Enum):
    OOB_SRAM = "out-of-bounds SRAM access"
    OOB_DRAM = "out-of-bounds DRAM access"
    ILLEGAL = "illegal instruction"
    BAD_OPERAND = "bad operand"
    RACE = "race"
    DEADLOCK = "deadlock"
    WATCHDOG = "max_cycles watchdog"
    FORMAT = "number-format fault"


class Trap(DojocError):
    """The emulator stopped on a fault. `core`, `pc` and `instr` say where; `cycle` says when."""

    def __init__(self, kind: TrapKind, message: str, *, core: int | None = None, pc: int | None = None,
                 instr: str = "", cycle: int = 0) -> None:
        where = f"core {core}, pc {pc}" if core is not None else "machine"
        text = f"trap: {kind.value} at {where}, cycle {cycle}"
        if instr:
            text += f" [{instr}]"
        super().__init__(f"{text}: {message}")
        self.kind = kind
        self.core = core
        self.pc = pc
        self.instr = instr
        self.cycle = cycle
        self.detail = message
