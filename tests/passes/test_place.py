"""Placement over the machine: a bigger machine is never slower, and barriers span only the cores used."""

from __future__ import annotations

import torch
from torch import nn

import dojoc
from dojoc.mapping.place import usable_cores
from isa.presets import load_machine


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)).eval(), torch.randn(64, 256)


def test_cores_are_offered_die_by_die_from_the_dram_port() -> None:
    d1, tile = load_machine("d1"), load_machine("tile")
    order1 = usable_cores(d1)
    assert sorted(order1) == list(range(d1.num_cores))
    # within the die: column by column from the west port, so the first cores are in different rows and
    # their DMAs enter the mesh through different routers of the port's span
    first_cols = [d1.coords[c] for c in order1[:d1.mesh[0]]]
    assert {c for _, c in first_cols} == {0} and len({r for r, _ in first_cols}) == d1.mesh[0]
    order = usable_cores(tile)
    assert sorted(order) == list(range(tile.num_cores))
    dr, dc = tile.die
    first = [tile.coords[c] for c in order[:d1.num_cores]]
    assert all(r < dr and c < dc for r, c in first)  # the die of port 0 (west, die row 0) first
    assert len(first) == sum(1 for r, c in tile.coords if r < dr and c < dc)


def test_a_bigger_machine_is_not_slower() -> None:
    model, x = _mlp()
    want = model(x).detach()
    cycles = {}
    for name in ("mesh8x8", "d1", "tile"):
        prog = dojoc.compile(model, (x,), machine=name, precision="bf16")
        y, report = prog.run(x)
        assert torch.corrcoef(torch.stack([y.flatten(), want.flatten()]))[0, 1] > 0.99
        cycles[name] = report.cycles
        # every core of the program runs code and joins its barriers; no idle core waits at them
        used = {c for s in prog.image.sections for c in s.cores}
        assert len(used) == report.cores_used
        counts = {ins["count"] for s in prog.image.sections for ins in s.code if ins.spec.mnemonic == "barrier"}
        assert counts == {len(used)}
    assert cycles["tile"] <= cycles["d1"] <= cycles["mesh8x8"], cycles
