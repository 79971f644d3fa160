"""The cost model's view of the way between DRAM and a region of cores: latency and the bottleneck rate.

Every tensor of a program lies on DRAM port 0 (`Ctx.dram` allocates from address 0). A DMA for core (r, c)
enters the mesh at the port's entry router for that core (its row, clamped to the port's span) and follows
the XY route, so a region's traffic is split over the entry routers of its cores. With the traffic spread
evenly over the region's cores, the bottleneck is the port itself or the first link out of the busiest entry
router (all cores below a west port's span funnel through its last row), at the die-to-die width when that
group reaches another die. Latency is the port's plus the longest route's hop latencies, die crossings
included. Both are derived from the machine description, as the emulator's timing is (docs/timing.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from isa.machine import Machine
from runtime_emu.noc import Network


@dataclass(frozen=True)
class PortPath:
    """Latency (cycles) of a DMA to the farthest core, and cycles per byte at the bottleneck."""

    latency: int
    cycles_per_byte: float


@lru_cache(maxsize=8)
def _network(machine: Machine) -> Network:
    return Network(machine)


@lru_cache(maxsize=1 << 14)
def port_path(machine: Machine, cores: tuple[int, ...]) -> PortPath:
    """The way between DRAM port 0 and `cores` (ids)."""
    port = machine.dram_ports[0]
    net = _network(machine)
    dr, dc = machine.die
    groups: Counter[tuple[int, int]] = Counter()
    far: set[tuple[int, int]] = set()  # entry routers whose group reaches another die
    hops = 0
    for core in cores or (0,):
        r, c = machine.coords[core]
        entry = port.entry_router(machine, r, c)
        groups[entry] += 1
        if (entry[0] // dr, entry[1] // dc) != (r // dr, c // dc):
            far.add(entry)
        hops = max(hops, net.path_latency(entry, (r, c)))
    n = max(1, len(cores))
    rate = 1 / port.bytes_per_cycle
    for entry, count in groups.items():
        width = machine.d2d_link_bytes_per_cycle if entry in far else machine.link_bytes_per_cycle
        rate = max(rate, count / n / width)
    return PortPath(port.latency + hops, rate)


@lru_cache(maxsize=1 << 10)
def barrier_cycles(machine: Machine, cores: tuple[int, ...]) -> int:
    """Cycles from the last arrival at a barrier over `cores` (ids) to its release, as the emulator's
    barrier takes them (`Network.barrier_cycles`: the combining tree's round trip over their bounding box,
    plus `barrier_latency`)."""
    return _network(machine).barrier_cycles([machine.coords[c] for c in cores])


def signal_cycles(machine: Machine, src: int, dsts: tuple[int, ...], signals: int) -> int:
    """Cycles from core `src` issuing `signals` signals (multicasts) to the last of cores `dsts` taking
    one: their issue, the longest route's hop latencies, and the wait that takes it."""
    net = _network(machine)
    far = max((net.path_latency(machine.coords[src], machine.coords[d]) for d in dsts), default=0)
    return signals * machine.issue_cycles + far + machine.sem_cycles


@lru_cache(maxsize=1 << 10)
def exchange_link_bytes(machine: Machine, cores: tuple[int, ...], piece: float) -> float:
    """The bytes on the busiest link when every core of `cores` puts `piece` bytes to every other one
    (all to all, along the XY routes the network takes)."""
    net = _network(machine)
    load: Counter[object] = Counter()
    at = [machine.coords[c] for c in cores]
    for src in at:
        for dst in at:
            for link in net.xy_path(src, dst):
                load[link] += 1
    return max(load.values(), default=0) * piece


def route_links(machine: Machine, src: int, dsts: tuple[int, ...]) -> frozenset[object]:
    """The links a put from core `src` to cores `dsts` (one, or a multicast's) reserves: the union of the XY
    routes, which from one source is the multicast's tree."""
    net = _network(machine)
    at = machine.coords
    return frozenset(link for d in dsts for link in net.xy_path(at[src], at[d]))
