"""Run statistics: per core, per link, per router port and per DRAM port, and the human-readable report.

The emulator engine fills `CoreStats` as it executes; `runtime_emu.noc.Network` fills `LinkStats` for its
links and its routers' injection and ejection ports; `runtime_emu.dram.Dram` fills `PortStats`. `RunStats`
gathers them at the end of a run, derives the summary figures the report needs (`instructions`,
`noc_bytes`, `dram_bytes`, shares of busy and stall time) and turns them into plain data (`to_dict`) or a
table (`format_table`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from isa.machine import Machine
from isa.table import Unit

RC = tuple[int, int]
"""A mesh position (row, col)."""
Link = tuple[RC, RC]
"""A directed link between neighbouring routers (from_rc, to_rc)."""
RouterPort = tuple[RC, str]
"""A router's injection or ejection port: ((row, col), "inject" or "eject")."""

UNITS: tuple[str, ...] = tuple(u.value for u in Unit)
"""Keys of `CoreStats.busy`: the units of `isa.table.Unit`."""
STALL_CAUSES: tuple[str, ...] = ("dma", "network", "semaphore", "barrier")
"""Keys of `CoreStats.stall`."""


def _units() -> dict[str, int]:
    return dict.fromkeys(UNITS, 0)


def _causes() -> dict[str, int]:
    return dict.fromkeys(STALL_CAUSES, 0)


def link_name(link: Link) -> str:
    """A link as text, "r,c->r,c" (the key used by `RunStats.to_dict`)."""
    (a, b), (c, d) = link
    return f"{a},{b}->{c},{d}"


def port_name(port: RouterPort) -> str:
    """A router port as text, "r,c inject" or "r,c eject" (the key used by `RunStats.to_dict`)."""
    (r, c), kind = port
    return f"{r},{c} {kind}"


@dataclass
class CoreStats:
    """What one core did: instructions executed, busy cycles by unit, stall cycles by cause."""

    instructions: int = 0
    busy: dict[str, int] = field(default_factory=_units)
    stall: dict[str, int] = field(default_factory=_causes)
    sram_high_water: int = 0
    halted_at: int = 0


@dataclass
class LinkStats:
    """Traffic over one directed link (or one router port): bytes carried and cycles reserved."""

    bytes: int = 0
    busy_cycles: int = 0


@dataclass
class PortStats:
    """Traffic through one DRAM port: bytes read (loads), bytes written (stores), cycles busy."""

    bytes_read: int = 0
    bytes_written: int = 0
    busy_cycles: int = 0


@dataclass(frozen=True)
class PhaseCounters:
    """Counters at one moment of a run (taken when a snapshot barrier releases)."""

    instructions: int = 0
    dram_bytes: int = 0
    noc_bytes: int = 0


# The barrier id that ends a compiled program's one-time loading of resident weights (dojoc.codegen).
LOAD_PHASE_BARRIER = 31


@dataclass
class RunStats:
    """Statistics of one emulator run."""

    cycles: int
    cores: dict[int, CoreStats] = field(default_factory=dict)
    links: dict[Link, LinkStats] = field(default_factory=dict)
    ports: dict[str, PortStats] = field(default_factory=dict)
    router_ports: dict[RouterPort, LinkStats] = field(default_factory=dict)
    """Bytes and busy cycles of each router's injection and ejection port (not links: not in noc_bytes)."""
    op_cycles: dict[str, int] = field(default_factory=dict)
    """Busy cycles attributed to IR op names through the debug section (filled by the engine)."""
    flops: int = 0
    """2 x the multiply-accumulates of the mma instructions executed, at their unpadded shapes."""
    barrier_releases: list[tuple[int, int]] = field(default_factory=list)
    """(barrier id, release cycle) of every barrier completed, in release order."""
    snapshots: dict[int, PhaseCounters] = field(default_factory=dict)
    """Counters at the first release of each snapshot barrier (see Emulator.snapshot_barriers)."""

    # -- summary figures ----------------------------------------------------------------------
    @property
    def instructions(self) -> int:
        """Instructions executed, summed over cores."""
        return sum(c.instructions for c in self.cores.values())

    @property
    def noc_bytes(self) -> int:
        """Bytes summed over every link they cross (a 3-hop put of 1 KiB counts 3 KiB)."""
        return sum(s.bytes for s in self.links.values())

    @property
    def dram_bytes(self) -> int:
        """DRAM bytes read plus bytes written, over all ports."""
        return sum(p.bytes_read + p.bytes_written for p in self.ports.values())

    def _ran(self) -> list[CoreStats]:
        return [c for c in self.cores.values() if c.instructions > 0]

    def busy_share(self, unit: str | Unit) -> float:
        """Busy cycles of `unit` / (run cycles x cores that ran); 0 when nothing ran."""
        key = unit.value if isinstance(unit, Unit) else unit
        ran = self._ran()
        if not ran or self.cycles <= 0:
            return 0.0
        return sum(c.busy.get(key, 0) for c in ran) / (self.cycles * len(ran))

    def stall_share(self, cause: str) -> float:
        """Stall cycles of `cause` / (run cycles x cores that ran); 0 when nothing ran."""
        ran = self._ran()
        if not ran or self.cycles <= 0:
            return 0.0
        return sum(c.stall.get(cause, 0) for c in ran) / (self.cycles * len(ran))

    def hottest_links(self, n: int = 10) -> list[tuple[Link, LinkStats]]:
        """The `n` links with the most busy cycles (ties: more bytes, then link order)."""
        items = sorted(self.links.items(), key=lambda kv: (-kv[1].busy_cycles, -kv[1].bytes, kv[0]))
        return items[:n]

    @property
    def sram_high_water(self) -> int:
        """The largest SRAM high-water mark over cores."""
        return max((c.sram_high_water for c in self.cores.values()), default=0)

    # -- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able data: core ids as strings, links keyed "r,c->r,c"."""
        return {
            "cycles": self.cycles,
            "flops": self.flops,
            "instructions": self.instructions,
            "noc_bytes": self.noc_bytes,
            "dram_bytes": self.dram_bytes,
            "sram_high_water": self.sram_high_water,
            "busy_share": {u: self.busy_share(u) for u in UNITS},
            "stall_share": {c: self.stall_share(c) for c in STALL_CAUSES},
            "cores": {str(i): asdict(c) for i, c in sorted(self.cores.items())},
            "links": {link_name(k): asdict(v) for k, v in sorted(self.links.items())},
            "ports": {k: asdict(v) for k, v in self.ports.items()},
            "router_ports": {port_name(k): asdict(v) for k, v in sorted(self.router_ports.items())},
            "op_cycles": dict(self.op_cycles),
        }

    def format_table(self, machine: Machine, top: int = 5) -> str:
        """A plain-text report: cycles and seconds, busy and stall shares, top links, SRAM, DRAM."""
        ran = self._ran()
        seconds = self.cycles / machine.clock_hz
        lines = [
            f"machine          {machine.name} ({machine.mesh[0]} x {machine.mesh[1]}, "
            f"{machine.num_cores} cores, {machine.clock_hz / 1e9:g} GHz)",
            f"cycles           {self.cycles:,} ({_seconds(seconds)})",
            f"instructions     {self.instructions:,} on {len(ran)} cores",
            "busy share       " + "  ".join(f"{u} {self.busy_share(u):6.1%}" for u in UNITS),
            "stall share      " + "  ".join(f"{c} {self.stall_share(c):6.1%}" for c in STALL_CAUSES),
            f"SRAM high water  {self.sram_high_water:,} B "
            f"({self.sram_high_water / machine.sram_bytes:.1%} of {machine.sram_bytes:,} B per core)",
            f"NoC bytes        {self.noc_bytes:,} (summed over links crossed)",
            f"DRAM bytes       {self.dram_bytes:,}",
        ]
        for name, p in self.ports.items():
            share = p.busy_cycles / self.cycles if self.cycles else 0.0
            lines.append(f"  port {name:<10} read {p.bytes_read:,} B, written {p.bytes_written:,} B, "
                         f"busy {share:.1%}")
        hot = self.hottest_links(top)
        if hot:
            lines.append(f"top {len(hot)} links       busy cycles      bytes   busy share")
            for link, s in hot:
                share = s.busy_cycles / self.cycles if self.cycles else 0.0
                lines.append(f"  {link_name(link):<16} {s.busy_cycles:>11,} {s.bytes:>10,}   {share:6.1%}")
        if self.op_cycles:
            lines.append("top ops          busy cycles")
            for op, cyc in sorted(self.op_cycles.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
                lines.append(f"  {op:<28} {cyc:>11,}")
        return "\n".join(lines)


def _seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def utilization(flops: int, cycles: int, machine: Machine, precision: str) -> float:
    """flops / (cycles x all cores x peak flops per core per cycle at `precision`); 0 when cycles is 0."""
    if cycles <= 0:
        return 0.0
    return flops / (cycles * machine.num_cores * machine.peak_flops_per_core_cycle(precision))
