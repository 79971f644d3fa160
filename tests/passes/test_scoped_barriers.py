"""Barriers scoped to the cores of the phases on their two sides (ProgramBuilder.keep)."""

from __future__ import annotations

import torch

import dojoc
from dojoc.codegen.builder import ID_TURN, ProgramBuilder
from isa.presets import load_machine


def _phases(b: ProgramBuilder, workers: list[set[int]]) -> None:
    for k, cores in enumerate(workers):
        for c in cores:
            b.cores[c].emit("nop")
        if k < len(workers) - 1:
            b.barrier()


def test_a_barrier_joins_the_cores_of_the_phases_before_and_after_it() -> None:
    m = load_machine("mesh4x4")
    b = ProgramBuilder(m, list(range(16)))
    _phases(b, [{0, 1}, {2}, {0, 3}])
    b.keep(set(range(4)))
    assert b.scopes == [(0, 1, 2), (0, 2, 3)]
    for c, want in ((0, 2), (1, 1), (2, 2), (3, 1)):
        bars = [i for i in b.cores[c].code if i.spec.mnemonic == "barrier"]
        assert len(bars) == want and all(i["count"] == 3 for i in bars)


def test_an_idle_core_joins_a_barrier_before_the_ids_come_round() -> None:
    """A core that sits out phases arrives early at its next barrier; it must not arrive at one whose id an
    earlier barrier still collecting its cores has."""
    m = load_machine("mesh4x4")
    b = ProgramBuilder(m, [0, 1])
    _phases(b, [{0, 1}] + [{0}] * 80 + [{0, 1}])
    b.keep({0, 1})
    joined = [k for k, s in enumerate(b.scopes) if 1 in s]
    assert joined[0] == 0 and joined[-1] == len(b.scopes) - 1
    assert max(y - x for x, y in zip(joined, joined[1:], strict=False)) <= ID_TURN - 1


def test_a_small_op_does_not_make_every_core_wait() -> None:
    """A model whose ops run on different numbers of cores: some barriers span fewer than all cores kept,
    and the program still matches eager."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8)).eval()
    x = torch.randn(4, 64)
    prog = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32")
    with torch.no_grad():
        torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)
    counts = {i["count"] for s in prog.image.sections for i in s.code if i.spec.mnemonic == "barrier"}
    assert min(counts) < prog.lowered.cores_used == max(counts)
