"""Generated code leaves no semaphore count behind: every signal, put and DMA that a kernel issues with a
semaphore is waited for by the op that issued it, so each core's semaphores are all zero when the program
halts. The emulator cannot trap on this (a program may leave counts; the hardware does not care), but a
count left over in a compiled program is a wait that was skipped or miscounted, which the race checks miss
when the read came before the write was issued. Checked on the small models, on the kernels with their own
multicast protocols (shared A, SUMMA with held and kept operands, attention), and on a machine with
disabled cores."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_three_paths import FACTORIES
from torch import nn

import dojoc
from dojoc.errors import CompileError
from isa.presets import load_machine
from runtime_emu.emulator import Emulator


def _leftover(prog: dojoc.Program, args: tuple[Any, ...]) -> dict[int, list[int]]:
    emu = Emulator(prog.image)
    emu.set_inputs(prog.encode_inputs(args, {}))
    emu.run()
    return {c: list(emu.core(c).sems) for c in sorted({c for s in prog.image.sections for c in s.cores})
            if any(emu.core(c).sems)}


class Head(nn.Module):
    """A linear over few rows and many columns (shared A), then a GELU MLP pair (SUMMA, held hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.up, self.down = nn.Linear(96, 512), nn.Linear(512, 1024), nn.Linear(1024, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.down(torch.nn.functional.gelu(self.up(h))) + h


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("machine", ["mesh4x4", "holed"])
def test_every_semaphore_ends_at_zero(name: str, machine: str) -> None:
    torch.manual_seed(0)
    mach = load_machine("mesh4x4", ["disabled=[[1,2],[3,0]]"]) if machine == "holed" else load_machine(machine)
    model, args = FACTORIES[name]()
    prog = dojoc.compile(model, args, machine=mach, precision="bf16")
    assert _leftover(prog, args) == {}


def test_shared_a_and_held_operands_leave_no_count() -> None:
    torch.manual_seed(0)
    model, x = Head().eval(), torch.randn(16, 96)
    for mach in (load_machine("mesh4x4"), load_machine("mesh4x4", ["disabled=[[1,0],[2,3]]"])):
        prog = dojoc.compile(model, (x,), machine=mach, precision="bf16")
        assert prog.mapping is not None
        assert prog.mapping.by_key()["linear_matmul"].tile_of("share_a") == 1
        assert _leftover(prog, (x,)) == {}


def test_a_machine_with_too_few_semaphores_is_a_compile_error() -> None:
    """The kernels' semaphore layouts take up to sems.MOST ids (32); a machine with fewer per core fails to
    compile with the op named, not at run time with a trap."""
    torch.manual_seed(0)
    model, x = Head().eval(), torch.randn(16, 96)
    few = load_machine("mesh4x4", ["semaphores=8"])
    with pytest.raises(CompileError, match=r"op \w+ uses semaphore \d+ on core \d+ .* has 8 per core; .* "
                                           "semaphores=32"):
        dojoc.compile(model, (x,), machine=few, precision="bf16")
