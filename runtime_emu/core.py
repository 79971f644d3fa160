"""The state of one core: registers, semaphores, DMA shape registers, SRAM, clock and statistics.

Instruction handlers (`runtime_emu.semantics`) read and write this state directly; the engine
(`runtime_emu.emulator`) owns the clock, scheduling and blocking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isa.table import Unit
from runtime_emu.memory import Fault, Sram

if TYPE_CHECKING:
    from runtime_emu.emulator import Emulator

__all__ = ["Core", "Fault", "Handler", "Step", "UNIT_INDEX", "NUM_UNITS", "MASK64", "wrap64",
           "READY", "WAIT", "BARRIER", "HALTED", "IDLE"]

Handler = Callable[["Core", Any, int, int], int]
"""handler(core, operands, pc, t) -> next pc, or -1 when the core stops (halted or blocked): a handler
that returns -1 has done the instruction's accounting itself or left it to the wake-up."""

Step = tuple[Handler, Any, int, int]
"""One pre-decoded instruction: (handler, operands, cost in cycles, unit index)."""

UNIT_INDEX: dict[Unit, int] = {u: i for i, u in enumerate(Unit)}
NUM_UNITS = len(UNIT_INDEX)
SYNC_UNIT = UNIT_INDEX[Unit.SYNC]
SCALAR_UNIT = UNIT_INDEX[Unit.SCALAR]

MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63

# core states
READY = 0  # runnable (in the ready queue or running)
WAIT = 1  # blocked in `wait` on a semaphore
BARRIER = 2  # blocked at a barrier
HALTED = 3
IDLE = 4  # runs no code section


def wrap64(x: int) -> int:
    """x as a 64-bit two's-complement integer."""
    return ((x + _SIGN64) & MASK64) - _SIGN64


class Core:
    """One core of the mesh."""

    __slots__ = ("id", "rc", "emu", "regs", "sems", "dims", "sram", "code", "section", "counts", "pc",
                 "time", "state", "instructions", "busy", "stall", "halted_at", "special", "wait_sem",
                 "wait_count", "wait_start", "wait_mark", "wait_cause", "wait_cost", "dma_pending",
                 "net_pending")

    def __init__(self, cid: int, rc: tuple[int, int], emu: Emulator, special: tuple[int, ...]) -> None:
        m = emu.machine
        self.id = cid
        self.rc = rc
        self.emu = emu
        self.regs: list[int] = [0] * 32
        self.sems: list[int] = [0] * m.semaphores
        # DMA shape registers: dim -> (count, sstride, dstride, padlo, padhi); dim 0 innermost
        self.dims: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)] * 4
        self.sram = Sram(m.sram_bytes)
        self.code: list[Step] = []
        self.section = -1
        self.counts: list[int] = []  # executions per pc, shared by the section's cores
        self.pc = 0
        self.time = 0
        self.state = IDLE
        self.instructions = 0
        self.busy = [0] * NUM_UNITS
        self.stall: dict[str, int] = {"dma": 0, "network": 0, "semaphore": 0, "barrier": 0}
        self.halted_at = 0
        self.special = special  # rdsr values, indexed by SpecialReg value
        self.wait_sem = 0
        self.wait_count = 0
        self.wait_start = 0  # cycle the blocked instruction started
        self.wait_mark = 0  # cycle from which the current stall cause applies
        self.wait_cause = "semaphore"
        self.wait_cost = 0
        self.dma_pending = [0] * m.semaphores  # in-flight DMAs that will signal each semaphore
        self.net_pending = [0] * m.semaphores  # in-flight puts and signals that will signal each one
