"""Synchronisation handlers: wait, post, barrier.

`wait s, n` takes n from semaphore s when it holds at least n; otherwise the core blocks until an event
raises it (the engine charges the stall to 'dma', 'network' or 'semaphore'). `post s, n` adds n locally.
`barrier id, n` blocks until n cores have arrived at barrier `id`; all are released at
max(arrival) + 2 x depth + machine.barrier_latency, depth being that of a combining tree over the
participants' bounding box (`Network.combining_depth`: the largest XY path latency from the box's centre
router to a corner; docs/timing.md "Barriers"). A blocked instruction completes `cost` cycles after its
release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isa.table import Instr
from runtime_emu.core import Core, Handler
from runtime_emu.semantics.common import raiser
from runtime_emu.traps import TrapKind

if TYPE_CHECKING:
    from runtime_emu.emulator import Emulator


def _wait(core: Core, ops: tuple[int, int, int], pc: int, t: int) -> int:
    s, count, _ = ops
    sems = core.sems
    if sems[s] >= count:
        sems[s] -= count
        return pc + 1
    core.emu.block_wait(core, s, count, pc, t, ops[2])
    return -1


def _post(core: Core, ops: tuple[int, int], pc: int, t: int) -> int:
    core.sems[ops[0]] += ops[1]
    return pc + 1


def _barrier(core: Core, ops: tuple[int, int, int], pc: int, t: int) -> int:
    core.emu.barrier_arrive(core, ops[0], ops[1], pc, t, ops[2])
    return -1


def prepare(ins: Instr, emu: Emulator, ncode: int) -> tuple[Handler, Any]:
    """The handler and operands of wait, post or barrier."""
    sem = ins.spec.semantics
    nsem = emu.machine.semaphores
    if sem in ("wait", "post"):
        s, count = ins["sem"], ins["count"]
        if s >= nsem:
            return raiser(TrapKind.BAD_OPERAND, f"semaphore {s} does not exist: the machine has {nsem} "
                                                 f"per core (0..{nsem - 1})"), None
        if sem == "wait":
            return _wait, (s, count, emu.cost_of(ins))
        return _post, (s, count)
    if sem == "barrier":
        if ins["count"] == 0:
            return raiser(TrapKind.BAD_OPERAND, "a barrier needs at least one participant (count 0)"), None
        if ins["count"] > emu.machine.num_cores:
            return raiser(TrapKind.BAD_OPERAND, f"barrier count {ins['count']} exceeds the machine's "
                                                 f"{emu.machine.num_cores} cores"), None
        return _barrier, (ins["id"], ins["count"], emu.cost_of(ins))
    raise AssertionError(f"no sync handler for {ins.spec.mnemonic}")
