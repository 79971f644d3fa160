"""Placement at the top of the hierarchy: the order in which a compile offers the machine's cores to ops.

A bigger machine must never be slower, so a compile should use only as many cores and dies as help:
- every tensor of a program lies on DRAM port 0 (`Ctx.dram` allocates from address 0), so cores are
  offered die by die, nearest dies to that port's die first (by die steps), then by id: an op that needs
  few cores gets them on the port's die, as on a one-die machine, and spills onto the next die only when it
  asks for more cores than a die has;
- the kernels' cost model sees the way from the port to a region (latency across die edges, the busiest
  link: codegen/paths.py), so a region that would reach far cores through a narrow way costs what it
  costs, and the search prefers smaller regions then;
- cores that get no work are dropped from the program after code generation (`ProgramBuilder.keep`),
  so barriers span only the cores that take part.
On a one-die machine the order is the id order.
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

    def key(core: int) -> tuple[int, int, int, int]:
        r, c = machine.coords[core]
        die = (r // dr, c // dc)
        return abs(die[0] - home[0]) + abs(die[1] - home[1]), die[0], die[1], core

    return sorted(range(machine.num_cores), key=key)
