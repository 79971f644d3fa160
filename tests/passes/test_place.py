"""Placement over the machine: a bigger machine is never slower, and barriers span only the cores used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dojoc
from dojoc.codegen.paths import exchange_link_bytes
from dojoc.mapping.place import compact_groups, home_die, usable_cores
from isa.presets import load_machine


def _mlp(rows: int = 64) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)).eval(), torch.randn(rows, 256)


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


@pytest.mark.parametrize("rows", [64, 128])
def test_a_bigger_machine_is_not_slower(rows: int) -> None:
    """64 rows take the tiled kernel; 128 take SUMMA, which on `tile` runs on the home die (the die that
    DRAM port 0 enters), its multicasts kept to that die's rows and columns (put span)."""
    model, x = _mlp(rows)
    want = model(x).detach()
    cycles, kernels = {}, {}
    for name in ("mesh8x8", "d1", "tile"):
        prog = dojoc.compile(model, (x,), machine=name, precision="bf16")
        y, report = prog.run(x)
        assert torch.corrcoef(torch.stack([y.flatten(), want.flatten()]))[0, 1] > 0.99
        cycles[name] = report.cycles
        kernels[name] = {r["kernel"] for r in report.ops if "predicted_cycles" in r}
        # every core of the program runs code and joins its barriers; no idle core waits at them
        used = {c for s in prog.image.sections for c in s.cores}
        assert len(used) == report.cores_used
        counts = {ins["count"] for s in prog.image.sections for ins in s.code if ins.spec.mnemonic == "barrier"}
        assert counts == {len(used)}
        if name == "tile" and rows == 128:
            home = home_die(prog.machine)
            assert kernels[name] == {"summa"}
            inside = [home.local(prog.machine.coords[c]) for c in used]
            assert all(0 <= i < home.rows and 0 <= j < home.cols for i, j in inside)
            assert len(used) == load_machine("d1").num_cores
    assert cycles["tile"] <= cycles["d1"] <= cycles["mesh8x8"], cycles


def test_compact_groups_cut_a_region_into_squares_where_they_fit() -> None:
    """Attention's K/V sharing exchanges all to all within a head's group: on d1's first 192 cores (10
    columns and a bit, column by column) the groups of 16 are 4 x 4 squares where the region allows, and
    no group loads a link as a line of 16 would."""
    m = load_machine("d1")
    region = usable_cores(m)[:192]
    groups = compact_groups(m, region, 16)
    assert sorted(c for g in groups for c in g) == sorted(region) and all(len(g) == 16 for g in groups)
    first = {m.coords[c] for c in groups[0]}  # d1's core (2, 3) is disabled: (4, 0) takes its place
    assert first == {(r, c) for r in range(4) for c in range(4)} - {(2, 3)} | {(4, 0)}
    line = exchange_link_bytes(m, tuple(region[:16]), 1.0)
    assert line == 64  # 8 x 8 pieces cross the middle link of a line of 16
    assert min(exchange_link_bytes(m, tuple(g), 1.0) for g in groups) == 16  # 2 x 8 pieces on a 4 x 4 square
    assert max(exchange_link_bytes(m, tuple(g), 1.0) for g in groups) < line
    assert compact_groups(m, region[:5], 2) == [region[:2], region[2:4], region[4:5]]  # a line stays in order
