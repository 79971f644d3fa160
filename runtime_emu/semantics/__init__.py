"""Instruction handlers, one module per family of `InstrSpec.semantics`.

`prepare(instr, emu, ncode)` returns (handler, operands) for one instruction; the engine calls it once per
instruction of each code section (pre-decode) and then runs `handler(core, operands, pc, t)` each time the
instruction executes. Faults that depend only on an instruction's fields (a bad dtype, a semaphore that
does not exist, an empty tile) are found here and become handlers that trap when executed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isa.table import INSTRUCTIONS, Instr
from runtime_emu.core import Handler
from runtime_emu.semantics import matmul, move, scalar, sync, tile

if TYPE_CHECKING:
    from runtime_emu.emulator import Emulator

__all__ = ["prepare", "FAMILIES"]

Prepare = Callable[[Instr, "Emulator", int], tuple[Handler, Any]]

FAMILIES: dict[str, Prepare] = {}
for _mod, _names in (
    (scalar, ("nop", "halt", "li", "rdsr", "alu", "alui", "branch", "jmp", "loop")),
    (sync, ("wait", "post", "barrier")),
    (move, ("dmadim", "dmald", "dmast", "dmagat", "put", "signal")),
    (matmul, ("mma",)),
    (tile, ("vbinary", "vbinary_s", "vunary", "vsel", "vfill", "vreduce", "vscan", "vtrans", "vcvt",
            "vgather")),
):
    for _name in _names:
        FAMILIES[_name] = _mod.prepare

_missing = {s.semantics for s in INSTRUCTIONS} - set(FAMILIES)
assert not _missing, f"no emulator handler for semantics {sorted(_missing)}"


def prepare(ins: Instr, emu: Emulator, ncode: int) -> tuple[Handler, Any]:
    """The handler and operands of one instruction in a section of `ncode` instructions."""
    return FAMILIES[ins.spec.semantics](ins, emu, ncode)
