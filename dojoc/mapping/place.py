"""Placement at the top of the hierarchy: the order in which a compile offers the machine's cores to ops.

A bigger machine must never be slower, so a compile should use only as many cores and dies as help:
- every tensor of a program lies on DRAM port 0 (`Ctx.dram` allocates from address 0), so cores are
  offered die by die, nearest dies to that port's die first (by die steps), then by id: an op that needs
  few cores gets them on the port's die, as on a one-die machine, and spills onto the next die only when it
  asks for more cores than a die has;
- the kernels' cost model sees the way from the port to a region (latency across die edges, the busiest
  link: codegen/paths.py), so a region that would reach far cores through a narrow way costs what it
  costs, and the search prefers smaller regions then;
- within a die, cores are offered nearest to the port first and one per entry router in turn (on a west
  port that spans every row: column by column), so a small region's DMAs enter the mesh through many of
  the port's entry links rather than through the one link of the first mesh row;
- cores that get no work are dropped from the program after code generation (`ProgramBuilder.keep`),
  so barriers span only the cores that take part.
"""

from __future__ import annotations

from isa.machine import Machine


def usable_cores(machine: Machine) -> list[int]:
    """Every core of `machine`, in the order ops are offered them (see the module docstring); so every core
    a given mapping names is among them."""
    dr, dc = machine.die
    port = machine.dram_ports[0]
    er, ec = port.entry_router(machine, 0, 0)
    home = (er // dr, ec // dc)

    def key(core: int) -> tuple[int, int, int, int, tuple[int, int], int]:
        r, c = machine.coords[core]
        die = (r // dr, c // dc)
        # within a die: nearest to the port first, one core per entry router in turn, so the first n cores
        # of a region take their DMAs through as many of the port's entry links as they can (on a west
        # port over every row: column by column)
        entry = port.entry_router(machine, r, c)
        hops = abs(entry[0] - r) + abs(entry[1] - c)
        return abs(die[0] - home[0]) + abs(die[1] - home[1]), die[0], die[1], hops, entry, core

    return sorted(range(machine.num_cores), key=key)


def compact_groups(machine: Machine, cores: list[int], size: int) -> list[list[int]]:
    """`cores` cut into groups of `size` (the last one may be smaller), each as compact on the mesh as the
    cores allow, for kernels whose groups exchange data all to all (attention's K/V sharing): a group of
    16 on a 4 x 4 square loads its busiest link with a quarter of what it would on a line of 16. Seeds
    follow the order of `cores`; a group takes the cores nearest its seed (by the larger of the row and
    column distance, then by hops, then by that order), so the result is deterministic."""
    order = {c: i for i, c in enumerate(cores)}
    left = list(cores)
    groups: list[list[int]] = []
    while left:
        sr, sc = machine.coords[left[0]]

        def near(c: int, sr: int = sr, sc: int = sc) -> tuple[int, int, int]:
            r, k = machine.coords[c]
            return max(abs(r - sr), abs(k - sc)), abs(r - sr) + abs(k - sc), order[c]

        group = sorted(left, key=near)[:size]
        taken = set(group)
        left = [c for c in left if c not in taken]
        groups.append(sorted(group, key=order.__getitem__))
    return groups
