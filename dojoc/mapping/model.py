"""The mapping as data: where every op runs and where every value lives (DESIGN.md, "The compiler").

A `Mapping` is what the partition and placement decisions of one compile produced, in frozen
dataclasses: for each op (each *decision*: an op whose kernel runs in several phases, such as a full
reduction, makes one per phase) its kernel family, region of cores, split, tile shape, whether its
weights stay resident, its pipeline stage, and the cost model's prediction and bound; for each value
its placement (in DRAM at an address, and for resident weights sharded over the SRAM of a region at
per-core addresses) and its lifetime in op order.

It round-trips through JSON (`Mapping.to_json`, `Mapping.from_json`), so it can be dumped, explained,
edited and fed back (`dojoc.compile(..., mapping=...)`, `dojoc compile --mapping m.json`): a kernel given
a decision for its op emits that decision instead of choosing one (docs/mapping.md says which fields
each kernel family reads).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dojoc.errors import MappingError
from dojoc.mapping.stages import Pipeline

SCHEMA_VERSION = 1


class Bound(StrEnum):
    """What limits an op's predicted time."""

    COMPUTE = "compute"  # the matrix or vector unit
    SRAM = "sram"  # SRAM load/store bandwidth
    LINK = "link"  # NoC links and ports
    DRAM = "dram"  # the DRAM ports
    SYNC = "sync"  # barriers and semaphores


class Where(StrEnum):
    """Where a value lives."""

    DRAM = "dram"
    SRAM = "sram"


def format_cores(cores: Iterable[int]) -> str:
    """Core ids as compact ranges: (0, 1, 2, 5, 7, 8) -> "0-2,5,7-8" (order kept, runs merged)."""
    out: list[str] = []
    run: list[int] = []
    for c in cores:
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_cores(text: str, where: str) -> tuple[int, ...]:
    """The inverse of `format_cores`; MappingError names `where` for a malformed list."""
    cores: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                cores.extend(range(a, b + 1))
            else:
                cores.append(int(part))
        except ValueError:
            raise MappingError(f"{where}: core list {text!r} is malformed at {part!r}; write ids and "
                               "ranges such as \"0-15,32\"") from None
    if not cores:
        raise MappingError(f"{where}: the region has no cores; give at least one core id")
    if len(set(cores)) != len(cores):
        raise MappingError(f"{where}: core list {text!r} names a core twice")
    return tuple(cores)


Pairs = tuple[tuple[str, int], ...]


def _pairs(d: Any, where: str, what: str) -> Pairs:
    if d is None:
        return ()
    if not isinstance(d, AbcMapping) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in d.values()):
        raise MappingError(f"{where}: {what} must be an object of integers, e.g. {{\"m\": 128}}")
    return tuple((str(k), int(v)) for k, v in d.items())


@dataclass(frozen=True)
class OpMapping:
    """One decision of one op: its kernel family, region, split and tile, and the cost model's view.

    `split` is how the op's work is cut (axis name -> number of pieces, e.g. rows/cols of a matmul's
    output tiles); `tile` the shape of one piece (e.g. m, n, k of a matmul's accumulator tile and K
    chunk). `predicted_cycles` and `bound` are the cost model's estimate; they are reported, not read
    back. `fused_into` names the op whose epilogue computes this one (then it has no cores of its own);
    `note` says why the op was not fused into the op before it (from the `fuse` pass; reported).
    """

    op: str
    kernel: str
    cores: tuple[int, ...] = ()
    split: Pairs = ()
    tile: Pairs = ()
    resident: bool = False
    stage: int = 0
    part: int = 0  # the index of this decision among its op's decisions
    fused_into: str | None = None
    predicted_cycles: int = 0
    bound: Bound = Bound.COMPUTE
    reads: tuple[str, ...] = ()  # the values (by placement name) it reads and writes: reported, not read back
    writes: tuple[str, ...] = ()
    note: str = ""

    @property
    def key(self) -> str:
        """The name a mapping file gives this decision: the op, and `#part` after the first."""
        return self.op if self.part == 0 else f"{self.op}#{self.part}"

    def split_of(self, axis: str, default: int = 1) -> int:
        return dict(self.split).get(axis, default)

    def tile_of(self, axis: str, default: int | None = None) -> int | None:
        return dict(self.tile).get(axis, default)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.key, "kernel": self.kernel}
        if self.fused_into is not None:
            d["fused_into"] = self.fused_into
            return d
        d.update({"cores": format_cores(self.cores), "split": dict(self.split), "tile": dict(self.tile),
                  "resident": self.resident, "stage": self.stage,
                  "predicted_cycles": self.predicted_cycles, "bound": self.bound.value})
        if self.reads or self.writes:
            d.update({"reads": list(self.reads), "writes": list(self.writes)})
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: Any) -> OpMapping:
        if not isinstance(d, AbcMapping) or not isinstance(d.get("op"), str) or not isinstance(d.get("kernel"), str):
            raise MappingError("each entry of \"ops\" needs string fields \"op\" and \"kernel\"")
        key: str = d["op"]
        op, _, part = key.partition("#")
        where = f"op {key}"
        if part and not part.isdigit():
            raise MappingError(f"{where}: a decision is named op or op#N (N a number)")
        if d.get("fused_into") is not None:
            return cls(op, d["kernel"], part=int(part or 0), fused_into=str(d["fused_into"]))
        try:
            bound = Bound(d.get("bound", "compute"))
        except ValueError:
            raise MappingError(f"{where}: bound must be one of {', '.join(b.value for b in Bound)}") from None
        for name, kind in (("resident", bool), ("stage", int), ("predicted_cycles", int)):
            if name in d and not isinstance(d[name], kind):
                raise MappingError(f"{where}: {name} must be a {kind.__name__}")
        names = [d.get(k, []) for k in ("reads", "writes")]
        if not all(isinstance(n, list) and all(isinstance(x, str) for x in n) for n in names):
            raise MappingError(f"{where}: reads and writes must be lists of value names")
        if not isinstance(d.get("note", ""), str):
            raise MappingError(f"{where}: note must be a string")
        return cls(op, d["kernel"], parse_cores(d.get("cores", ""), where), _pairs(d.get("split"), where, "split"),
                   _pairs(d.get("tile"), where, "tile"), bool(d.get("resident", False)), int(d.get("stage", 0)),
                   int(part or 0), None, int(d.get("predicted_cycles", 0)), bound, tuple(names[0]),
                   tuple(names[1]), str(d.get("note", "")))


@dataclass(frozen=True)
class Shard:
    """One core's piece of a value in SRAM."""

    core: int
    address: int
    nbytes: int


@dataclass(frozen=True)
class ValuePlacement:
    """Where one value (an activation, an input, an output or a parameter) lives.

    `where` is DRAM (at `address`, `nbytes` dense) or SRAM; a resident weight is in both: its DRAM copy
    is loaded once into `shards` of the SRAM of its op's region (`layout` says how it is cut). An
    activation *held* in SRAM from its producer to its reader has shards and no DRAM copy (`dram_copy`
    false: its DRAM tensor is declared but never written). `lifetime` is (first op, last op) in program
    order: where it is written and where it is last read.
    """

    value: str
    where: Where
    address: int = 0
    nbytes: int = 0
    shape: tuple[int, ...] = ()
    dtype: str = ""
    kind: str = "scratch"  # input, output, weight, scratch
    shards: tuple[Shard, ...] = ()
    layout: str = ""
    lifetime: tuple[int, int] = (0, 0)
    dram_copy: bool = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "where": self.where.value, "kind": self.kind,
                             "address": self.address, "nbytes": self.nbytes, "shape": list(self.shape),
                             "dtype": self.dtype, "lifetime": list(self.lifetime)}
        if self.shards:
            d["layout"] = self.layout
            d["shards"] = [[s.core, s.address, s.nbytes] for s in self.shards]
        if not self.dram_copy:
            d["dram_copy"] = False
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ValuePlacement:
        if not isinstance(d, AbcMapping) or not isinstance(d.get("value"), str):
            raise MappingError("each entry of \"values\" needs a string field \"value\"")
        where = f"value {d['value']}"
        try:
            w = Where(d.get("where", "dram"))
            shards = tuple(Shard(int(c), int(a), int(n)) for c, a, n in d.get("shards", []))
            life = tuple(int(x) for x in d.get("lifetime", (0, 0)))
            shape = tuple(int(x) for x in d.get("shape", ()))
            vp = cls(d["value"], w, int(d.get("address", 0)), int(d.get("nbytes", 0)), shape,
                     str(d.get("dtype", "")), str(d.get("kind", "scratch")), shards, str(d.get("layout", "")),
                     (life[0], life[1]), bool(d.get("dram_copy", True)))
        except (TypeError, ValueError, IndexError):
            raise MappingError(f"{where}: malformed placement (where: dram|sram, shards: [[core, address, "
                               "bytes], ...], lifetime: [first, last])") from None
        return vp


@dataclass(frozen=True)
class Mapping:
    """Every decision of one compile, in program order, and every value's placement."""

    machine: str
    machine_hash: str
    precision: str
    ops: tuple[OpMapping, ...] = ()
    values: tuple[ValuePlacement, ...] = ()
    schema_version: int = SCHEMA_VERSION
    notes: tuple[str, ...] = field(default=())  # e.g. that a search stopped early
    pipeline: Pipeline | None = None  # micro-batches through stages side by side (mapping/stages.py)

    def by_key(self) -> dict[str, OpMapping]:
        return {o.key: o for o in self.ops}

    def value(self, name: str) -> ValuePlacement | None:
        return next((v for v in self.values if v.value == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = {"schema_version": self.schema_version, "machine": self.machine, "machine_hash": self.machine_hash,
             "precision": self.precision, "notes": list(self.notes)}
        if self.pipeline is not None:
            d["pipeline"] = self.pipeline.to_dict()
        return {**d, "ops": [o.to_dict() for o in self.ops], "values": [v.to_dict() for v in self.values]}

    def to_json(self) -> str:
        """The JSON text, one line per decision and per value, so a diff or an edit touches one line."""
        d = self.to_dict()
        head = {k: v for k, v in d.items() if k not in ("ops", "values")}
        lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
        for name in ("ops", "values"):
            rows = [f"  {json.dumps(x)}" for x in d[name]]
            lines.append(f" {json.dumps(name)}: [")
            lines.append(",\n".join(rows))
            lines.append(" ]," if name == "ops" else " ]")
        return "\n".join(lines) + "\n}\n"

    @classmethod
    def from_dict(cls, d: Any) -> Mapping:
        if not isinstance(d, AbcMapping) or not isinstance(d.get("ops", []), list):
            raise MappingError("a mapping is a JSON object with a list \"ops\" (see `dojoc compile "
                               "--dump-mapping`)")
        if d.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise MappingError(f"mapping schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION}; "
                               "dump a new mapping with this dojoc (`dojoc compile --dump-mapping`)")
        ops = tuple(OpMapping.from_dict(o) for o in d.get("ops", []))
        keys = [o.key for o in ops]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise MappingError(f"op {dup}: the mapping gives it twice; keep one entry per decision")
        return cls(str(d.get("machine", "")), str(d.get("machine_hash", "")), str(d.get("precision", "")), ops,
                   tuple(ValuePlacement.from_dict(v) for v in d.get("values", [])),
                   notes=tuple(str(n) for n in d.get("notes", [])),
                   pipeline=Pipeline.from_dict(d["pipeline"]) if d.get("pipeline") is not None else None)

    @classmethod
    def from_json(cls, text: str) -> Mapping:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise MappingError(f"the mapping is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                               "start from `dojoc compile --dump-mapping m.json`") from None
        return cls.from_dict(d)
