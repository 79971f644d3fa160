"""Helpers shared by the handler families."""

from __future__ import annotations

from typing import Any

from runtime_emu.core import Core, Handler
from runtime_emu.memory import Fault
from runtime_emu.traps import TrapKind


def raiser(kind: TrapKind, message: str) -> Handler:
    """A handler that traps with `kind` and `message` when executed (for faults known at pre-decode)."""

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        raise Fault(kind, message)

    return h


def skip(core: Core, ops: Any, pc: int, t: int) -> int:
    """A handler that does nothing (timing-only tile instructions, writes to r0)."""
    return pc + 1
