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

from dataclasses import dataclass

from isa.machine import Machine


@dataclass(frozen=True)
class Rect:
    """A rectangle of mesh positions: rows r0 .. r0 + rows - 1, columns c0 .. c0 + cols - 1. Kernels that
    lay a grid of blocks over the mesh (SUMMA) run on one, in its own coordinates (row 0 is r0)."""

    r0: int
    c0: int
    rows: int
    cols: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    def local(self, rc: tuple[int, int]) -> tuple[int, int]:
        """Mesh position `rc` in the rectangle's coordinates."""
        return rc[0] - self.r0, rc[1] - self.c0

    def mesh(self, i: int, j: int) -> tuple[int, int]:
        """The mesh position of the rectangle's (i, j)."""
        return self.r0 + i, self.c0 + j

    def covers(self, machine: Machine) -> tuple[bool, bool]:
        """Whether the rectangle spans the mesh's whole rows, and its whole columns."""
        return (self.c0 == 0 and self.cols == machine.mesh[1]), (self.r0 == 0 and self.rows == machine.mesh[0])


def home_die(machine: Machine) -> Rect:
    """The die that DRAM port 0 enters (where every tensor lies): the whole mesh on a one-die machine."""
    dr, dc = machine.die
    er, ec = machine.dram_ports[0].entry_router(machine, 0, 0)
    return Rect(er // dr * dr, ec // dc * dc, dr, dc)


def usable_cores(machine: Machine) -> list[int]:
    """Every core of `machine`, in the order ops are offered them (see the module docstring); so every core
    a given mapping names is among them."""
    dr, dc = machine.die
    port = machine.dram_ports[0]
    h = home_die(machine)
    home = (h.r0 // dr, h.c0 // dc)

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
