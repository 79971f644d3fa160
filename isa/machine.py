"""The machine description: one frozen dataclass from which every cost is derived.

A machine is a 2-D mesh of cores (row, col). Core ids number the *enabled* cores in row-major order;
a disabled core has no id, but its router still forwards. The mesh may be made of several dies
(`die_shape` cores each); a link that crosses a die edge uses the die-to-die width and latency.
DRAM is reached through ports on the mesh edge; the DRAM address space is the concatenation of the
ports' capacities in declaration order.

Fields whose value is not public are marked `assumption=True` in their metadata; `dojoc machines`
lists them. Presets live in `isa/presets.py`; TOML files load with `load_machine`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from functools import cached_property
from typing import Any

from isa.errors import MachineError


class Edge(StrEnum):
    """The mesh edge a DRAM port sits on."""

    WEST = "west"
    EAST = "east"
    NORTH = "north"
    SOUTH = "south"


def _f(default: Any, doc: str, *, assumption: bool = False, unit: str = "") -> Any:
    return field(default=default, metadata={"doc": doc, "assumption": assumption, "unit": unit})


@dataclass(frozen=True)
class DramPort:
    """A DRAM port on one mesh edge, injecting into the edge routers `first..last` (inclusive).

    A DMA enters or leaves the mesh at the edge router of the span nearest to the core
    (the same row for west/east ports, the same column for north/south ports).
    """

    name: str = _f("hbm0", "port name")
    edge: Edge = _f(Edge.WEST, "mesh edge the port sits on", assumption=True)
    first: int = _f(0, "first edge router index (row for west/east, column for north/south)", assumption=True)
    last: int = _f(0, "last edge router index, inclusive", assumption=True)
    bytes_per_cycle: int = _f(400, "bandwidth", unit="B/cycle")
    latency: int = _f(200, "access latency", assumption=True, unit="cycles")
    capacity: int = _f(32 * 10**9, "capacity", unit="B")

    def routers(self, machine: Machine) -> list[tuple[int, int]]:
        """Mesh coordinates (row, col) of the edge routers this port injects into."""
        rows, cols = machine.mesh
        span = range(self.first, self.last + 1)
        if self.edge is Edge.WEST:
            return [(r, 0) for r in span]
        if self.edge is Edge.EAST:
            return [(r, cols - 1) for r in span]
        if self.edge is Edge.NORTH:
            return [(0, c) for c in span]
        return [(rows - 1, c) for c in span]

    def entry_router(self, machine: Machine, row: int, col: int) -> tuple[int, int]:
        """The edge router through which data for core (row, col) enters or leaves the mesh."""
        along = row if self.edge in (Edge.WEST, Edge.EAST) else col
        idx = min(max(along, self.first), self.last)
        rows, cols = machine.mesh
        return {
            Edge.WEST: (idx, 0),
            Edge.EAST: (idx, cols - 1),
            Edge.NORTH: (0, idx),
            Edge.SOUTH: (rows - 1, idx),
        }[self.edge]


MAX_MESH_POSITIONS = 1 << 20  # mesh rows x cols a machine description may declare
MAX_SRAM_BYTES = 1 << 32  # per core


@dataclass(frozen=True)
class Machine:
    """A Dojo-like machine. Every cycle cost in the emulator and the cost model derives from these fields."""

    name: str = _f("custom", "machine name")
    description: str = _f("", "one line about the machine")
    # -- mesh ---------------------------------------------------------------------------------
    mesh: tuple[int, int] = _f((4, 4), "mesh shape (rows, cols) over all dies", assumption=True)
    die_shape: tuple[int, int] = _f((0, 0), "cores per die (rows, cols); (0, 0) means one die", unit="cores")
    disabled: tuple[tuple[int, int], ...] = _f(
        (), "(row, col) of disabled cores; routers still forward", assumption=True)
    clock_hz: int = _f(2_000_000_000, "core clock", unit="Hz")
    # -- core ---------------------------------------------------------------------------------
    sram_bytes: int = _f(1_310_720, "SRAM per core (1.25 MiB)", unit="B")
    sram_load_bytes_per_cycle: int = _f(200, "SRAM load bandwidth (400 GB/s)", unit="B/cycle")
    sram_store_bytes_per_cycle: int = _f(135, "SRAM store bandwidth (270 GB/s)", unit="B/cycle")
    macs_bf16: int = _f(256, "matrix unit BF16 MACs per cycle", unit="MAC/cycle")
    macs_cfp8: int = _f(256, "matrix unit CFP8 MACs per cycle (no double rate)", unit="MAC/cycle")
    macs_fp32: int = _f(16, "FP32 FMAs per cycle (one 64 B SIMD pipe)", unit="MAC/cycle")
    simd_bytes: int = _f(64, "SIMD vector width", unit="B")
    semaphores: int = _f(32, "semaphores per core", assumption=True)
    scalar_cycles: int = _f(1, "cycles of a scalar ALU op or branch", assumption=True, unit="cycles")
    mxu_latency: int = _f(16, "matrix unit pipeline latency", assumption=True, unit="cycles")
    simd_latency: int = _f(4, "SIMD pipeline latency", assumption=True, unit="cycles")
    transcendental_passes: int = _f(
        8, "SIMD passes per vector for exp, log, tanh, erf, ...", assumption=True, unit="passes"
    )
    issue_cycles: int = _f(2, "cycles to issue a DMA or network put", assumption=True, unit="cycles")
    sem_cycles: int = _f(1, "cycles of a semaphore wait/signal that does not stall", assumption=True)
    barrier_latency: int = _f(
        32, "constant part of a barrier's release, on top of its combining tree's round trip over the "
        "participants' span", assumption=True, unit="cycles"
    )
    # -- network ------------------------------------------------------------------------------
    link_bytes_per_cycle: int = _f(64, "NoC link width per direction (128 GB/s)", unit="B/cycle")
    hop_latency: int = _f(1, "router hop latency", assumption=True, unit="cycles")
    inject_bytes_per_cycle: int = _f(
        64, "router injection port width: what a core sends into the mesh (one link width)", assumption=True,
        unit="B/cycle"
    )
    eject_bytes_per_cycle: int = _f(
        64, "router ejection port width: what the mesh delivers into a core (one link width)", assumption=True,
        unit="B/cycle"
    )
    d2d_link_bytes_per_cycle: int = _f(
        55, "die-to-die link width per direction (2 TB/s per edge over 18 links)", assumption=True,
        unit="B/cycle"
    )
    d2d_latency: int = _f(200, "die-to-die latency (~100 ns)", unit="cycles")
    # -- DRAM ---------------------------------------------------------------------------------
    dram_ports: tuple[DramPort, ...] = _f((DramPort(),), "DRAM ports on the mesh edge")

    def __post_init__(self) -> None:
        rows, cols = self.mesh
        if rows <= 0 or cols <= 0:
            raise MachineError(f"machine {self.name!r}: mesh {self.mesh} must have positive rows and cols")
        # before anything is built per core: the emulator and the compiler hold state for every position
        if rows * cols > MAX_MESH_POSITIONS:
            raise MachineError(f"machine {self.name!r}: mesh {rows} x {cols} has {rows * cols:,} positions, more "
                               f"than the {MAX_MESH_POSITIONS:,} dojoc can model (a 25-die tile has 9,000)")
        if self.sram_bytes > MAX_SRAM_BYTES:
            raise MachineError(f"machine {self.name!r}: sram_bytes {self.sram_bytes:,} is above the "
                               f"{MAX_SRAM_BYTES:,} per core that dojoc can model")
        for r, c in self.disabled:
            if not (0 <= r < rows and 0 <= c < cols):
                raise MachineError(f"machine {self.name!r}: disabled core {(r, c)} is outside mesh {self.mesh}")
        if self.num_cores == 0:
            raise MachineError(f"machine {self.name!r}: every core is disabled")
        dr, dc = self.die
        if rows % dr or cols % dc:
            raise MachineError(f"machine {self.name!r}: die shape {self.die_shape} does not tile mesh {self.mesh}")
        for name in ("clock_hz", "sram_bytes", "sram_load_bytes_per_cycle", "sram_store_bytes_per_cycle",
                     "macs_bf16", "macs_cfp8", "macs_fp32", "simd_bytes", "semaphores",
                     "link_bytes_per_cycle", "d2d_link_bytes_per_cycle", "inject_bytes_per_cycle",
                     "eject_bytes_per_cycle"):
            if getattr(self, name) <= 0:
                raise MachineError(f"machine {self.name!r}: field {name} must be positive")
        if not self.dram_ports:
            raise MachineError(f"machine {self.name!r}: at least one DRAM port is needed")
        for p in self.dram_ports:
            limit = rows if p.edge in (Edge.WEST, Edge.EAST) else cols
            if not (0 <= p.first <= p.last < limit):
                raise MachineError(f"machine {self.name!r}: DRAM port {p.name} span {p.first}..{p.last} "
                                   f"is off the {p.edge.value} edge (0..{limit - 1})")

    # -- derived ------------------------------------------------------------------------------
    @property
    def die(self) -> tuple[int, int]:
        """Cores per die (rows, cols); the whole mesh when `die_shape` is (0, 0)."""
        return self.mesh if self.die_shape == (0, 0) else self.die_shape

    @cached_property
    def coords(self) -> tuple[tuple[int, int], ...]:
        """(row, col) of each core id, row-major over the enabled cores."""
        off = set(self.disabled)
        rows, cols = self.mesh
        return tuple((r, c) for r in range(rows) for c in range(cols) if (r, c) not in off)

    @cached_property
    def core_at(self) -> dict[tuple[int, int], int]:
        """Core id of each enabled (row, col)."""
        return {rc: i for i, rc in enumerate(self.coords)}

    @cached_property
    def num_cores(self) -> int:
        """Enabled cores (computed once: the emulator asks for it on every put and signal)."""
        return self.mesh[0] * self.mesh[1] - len(set(self.disabled))

    def macs_per_cycle(self, kind: str) -> int:
        """Matrix-unit MACs per cycle for operand kind 'bf16', 'cfp8' or 'fp32'."""
        return {"bf16": self.macs_bf16, "cfp8": self.macs_cfp8, "fp32": self.macs_fp32}[kind]

    def peak_flops_per_core_cycle(self, precision: str) -> int:
        """2 x MACs per cycle at a precision ('bf16', 'cfp8', 'fp32'): the utilization denominator."""
        return 2 * self.macs_per_cycle(precision)

    def crosses_die(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        """Whether the link between neighbouring routers a and b crosses a die edge."""
        dr, dc = self.die
        return (a[0] // dr, a[1] // dc) != (b[0] // dr, b[1] // dc)

    def dram_base(self, port_index: int) -> int:
        """First DRAM address served by a port."""
        return sum(p.capacity for p in self.dram_ports[:port_index])

    @property
    def dram_bytes(self) -> int:
        return sum(p.capacity for p in self.dram_ports)

    def port_of(self, address: int) -> int | None:
        """Index of the port whose address range holds `address`, or None when outside DRAM."""
        base = 0
        for i, p in enumerate(self.dram_ports):
            if base <= address < base + p.capacity:
                return i
            base += p.capacity
        return None

    # -- identity -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, ints, strings) for TOML, JSON and the object file."""

        def plain(v: Any) -> Any:
            if isinstance(v, Enum):
                return v.value
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, tuple | list):
                return [plain(x) for x in v]
            return v

        return plain(self)  # type: ignore[no-any-return]

    @cached_property
    def hash(self) -> str:
        """sha256 of the full description (name and description excluded: they do not change costs)."""
        d = self.to_dict()
        d.pop("name")
        d.pop("description")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def assumptions() -> list[tuple[str, str]]:
    """(field, doc) of every machine and DRAM-port field that is an assumption, not a public figure."""
    out = [(f.name, f.metadata["doc"]) for f in dataclasses.fields(Machine) if f.metadata.get("assumption")]
    out += [(f"dram_ports.{f.name}", f.metadata["doc"]) for f in dataclasses.fields(DramPort)
            if f.metadata.get("assumption")]
    return out
