"""`Report`: what one call of a compiled program cost on the emulated machine (DESIGN.md, "Report fields").

A report is built from an emulator run (`Report.from_run`, or `Report.from_lowered` with the code
generator's facts), summed over the subgraphs of one call (`a + b`, `Report.sum`), written as JSON
(`to_json`, the keys of report.json) and printed as a table (`format`).

    cycles       one call, inputs in DRAM -> outputs in DRAM, resident weights already in SRAM
                 (total cycles minus the release cycle of the load barrier)
    load_cycles  the one-time loading of resident weights (that release cycle; 0 without a load phase)
    utilization  flops / (cycles x all cores of the machine x peak flops per core per cycle at the precision)

`dram_bytes`, `noc_bytes` and `instructions` count the call alone too: the emulator snapshots its counters
when the load barrier releases, and the report subtracts that snapshot from the run's totals.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dojoc.codegen.result import LOAD_BARRIER, Lowered
from dojoc.codegen.sram import SRAM_PARTS
from isa.machine import Machine
from runtime_emu import RunResult
from runtime_emu.stats import PhaseCounters, RunStats, utilization

SCHEMA_VERSION = 1

# the fields that need a run (None in a report.json written before the program ran)
RUN_FIELDS = ("cycles", "load_cycles", "seconds", "utilization", "dram_bytes", "noc_bytes", "instructions",
              "pcc", "max_abs_err")


def _versions() -> tuple[str, str]:
    import torch

    import dojoc

    return dojoc.__version__, str(torch.__version__)


def load_phase_end(stats: RunStats) -> int:
    """The release cycle of the load barrier (LOAD_BARRIER), or 0 when the program has no load phase."""
    for bid, cycle in stats.barrier_releases:
        if bid == LOAD_BARRIER:
            return cycle
    return 0


@dataclass(frozen=True)
class Report:
    """The cost of one call on the emulator, and what produced it (the keys of report.json)."""

    cycles: int
    load_cycles: int
    seconds: float
    flops: int
    utilization: float
    cores_used: int
    sram_peak_bytes: int
    dram_bytes: int
    noc_bytes: int
    instructions: int
    compile_seconds: float
    schema_version: int
    machine: str
    machine_hash: str
    precision: str
    options: Mapping[str, Any] = field(default_factory=dict)
    dojoc_version: str = ""
    torch_version: str = ""
    pcc: float | None = None
    max_abs_err: float | None = None
    # per op (each decision of the mapping, in program order): kernel, region, split, tile, where its
    # values live, predicted cycles and bound, emulated cycles (dojoc.mapping.explain.op_rows)
    ops: tuple[Mapping[str, Any], ...] = ()
    # per core that runs code, the memory plan's bytes (dojoc.codegen.sram.CoreSram): core, code, resident,
    # scratch, held, free
    sram: tuple[Mapping[str, int], ...] = ()

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_run(cls, result: RunResult, machine: Machine, *, precision: str, flops: int, cores_used: int,
                 sram_peak_bytes: int, compile_seconds: float = 0.0, options: Mapping[str, Any] | None = None,
                 pcc: float | None = None, max_abs_err: float | None = None,
                 ops: tuple[Mapping[str, Any], ...] = (), sram: tuple[Mapping[str, int], ...] = ()) -> Report:
        """A report from an emulator run of a program for `machine` (`flops`: the model's count)."""
        load = load_phase_end(result.stats)
        cycles = max(result.cycles - load, 0)
        before = result.stats.snapshots.get(LOAD_BARRIER, PhaseCounters())
        dv, tv = _versions()
        return cls(cycles=cycles, load_cycles=load, seconds=cycles / machine.clock_hz, flops=int(flops),
                   utilization=utilization(flops, cycles, machine, precision), cores_used=int(cores_used),
                   sram_peak_bytes=int(sram_peak_bytes), dram_bytes=result.stats.dram_bytes - before.dram_bytes,
                   noc_bytes=result.stats.noc_bytes - before.noc_bytes,
                   instructions=result.stats.instructions - before.instructions,
                   compile_seconds=float(compile_seconds), schema_version=SCHEMA_VERSION, machine=machine.name,
                   machine_hash=machine.hash, precision=precision, options=dict(options or {}),
                   dojoc_version=dv, torch_version=tv, pcc=pcc, max_abs_err=max_abs_err, ops=tuple(ops),
                   sram=tuple(sram))

    @classmethod
    def from_lowered(cls, result: RunResult, lowered: Lowered, *, compile_seconds: float = 0.0,
                     options: Mapping[str, Any] | None = None) -> Report:
        """A report from a run of `lowered.image`, with the code generator's flops, cores and SRAM plan, and
        the per-op section from its mapping and the run."""
        from dojoc.mapping.explain import op_rows

        return cls.from_run(result, lowered.image.machine, precision=lowered.precision, flops=lowered.flops,
                            cores_used=lowered.cores_used, sram_peak_bytes=lowered.sram_peak_bytes,
                            compile_seconds=compile_seconds, options=options,
                            ops=tuple(op_rows(lowered, result.stats)), sram=_sram_rows(lowered))

    @staticmethod
    def static_dict(lowered: Lowered, *, compile_seconds: float, options: Mapping[str, Any]) -> dict[str, Any]:
        """The report.json keys of a program that has not run yet: run figures are None."""
        from dojoc.mapping.explain import op_rows

        m = lowered.image.machine
        dv, tv = _versions()
        d: dict[str, Any] = {f.name: None for f in dataclasses.fields(Report)}
        d.update(flops=lowered.flops, cores_used=lowered.cores_used, sram_peak_bytes=lowered.sram_peak_bytes,
                 compile_seconds=compile_seconds, schema_version=SCHEMA_VERSION, machine=m.name,
                 machine_hash=m.hash, precision=lowered.precision, options=dict(options),
                 dojoc_version=dv, torch_version=tv, ops=_plain(op_rows(lowered)), sram=list(_sram_rows(lowered)))
        return d

    # -- summing over subgraphs --------------------------------------------------------------------
    def __add__(self, other: Report) -> Report:
        """Two subgraphs of one call: cycles, flops, bytes and instructions add; utilization is recomputed
        from the sums; SRAM peak and cores used are maxima; the accuracy is the worse of the two."""
        if not isinstance(other, Report):
            return NotImplemented
        if other.machine_hash != self.machine_hash or other.precision != self.precision:
            raise ValueError(f"cannot add reports for different machines or precisions "
                             f"({self.machine}/{self.precision} and {other.machine}/{other.precision})")
        cycles = self.cycles + other.cycles
        # utilization_i x cycles_i = flops_i / peak (same machine and precision): a cycle-weighted mean
        util = (self.utilization * self.cycles + other.utilization * other.cycles) / cycles if cycles else 0.0
        pccs = [p for p in (self.pcc, other.pcc) if p is not None]
        errs = [e for e in (self.max_abs_err, other.max_abs_err) if e is not None]
        return dataclasses.replace(
            self, cycles=cycles, load_cycles=self.load_cycles + other.load_cycles,
            seconds=self.seconds + other.seconds, flops=self.flops + other.flops, utilization=util,
            cores_used=max(self.cores_used, other.cores_used),
            sram_peak_bytes=max(self.sram_peak_bytes, other.sram_peak_bytes),
            dram_bytes=self.dram_bytes + other.dram_bytes, noc_bytes=self.noc_bytes + other.noc_bytes,
            instructions=self.instructions + other.instructions,
            compile_seconds=self.compile_seconds + other.compile_seconds, ops=tuple(self.ops) + tuple(other.ops),
            pcc=min(pccs) if pccs else None, max_abs_err=max(errs) if errs else None,
            sram=_sram_max(self.sram, other.sram))

    def __radd__(self, other: Any) -> Report:
        if other == 0:  # builtin sum() starts from 0
            return self
        return NotImplemented

    @staticmethod
    def sum(reports: Iterable[Report]) -> Report | None:
        """The sum of the reports of one call's subgraphs (None for none)."""
        total: Report | None = None
        for r in reports:
            total = r if total is None else total + r
        return total

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data with exactly the report fields."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["options"] = _plain(dict(self.options))
        d["ops"] = _plain([dict(r) for r in self.ops])
        d["sram"] = [dict(r) for r in self.sram]
        return d

    def to_json(self, *, indent: int = 2, machine: Machine | None = None) -> str:
        """JSON of `to_dict()`; with `machine`, also the full machine description (report.json carries it)."""
        d = self.to_dict()
        if machine is not None:
            d["machine_description"] = machine.to_dict()
        return json.dumps(d, indent=indent, allow_nan=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """A report from `to_dict()` output (or report.json); unknown keys are ignored; missing run figures
        are an error."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n not in ("pcc", "max_abs_err", "options", "ops", "sram")]
        if missing:
            raise ValueError(f"not a dojoc report: missing {', '.join(missing)}")
        kwargs = {n: data[n] for n in names if n in data}
        for n in RUN_FIELDS[:-2]:
            if kwargs.get(n) is None:
                raise ValueError(f"the report has no run figures ({n} is null): the program has not run")
        kwargs["options"] = dict(kwargs.get("options") or {})
        kwargs["ops"] = tuple(dict(r) for r in kwargs.get("ops") or ())
        kwargs["sram"] = tuple({k: int(v) for k, v in r.items()} for r in kwargs.get("sram") or ())
        return cls(**kwargs)

    # -- display -----------------------------------------------------------------------------------
    def format(self) -> str:
        """A readable table."""
        us = self.seconds * 1e6
        ghz = self.cycles / self.seconds / 1e9 if self.seconds else 0.0
        rows = [
            ("machine", f"{self.machine} (hash {self.machine_hash[:12]}), precision {self.precision}"),
            ("cycles", f"{self.cycles:,} per call ({_time(us)}" + (f" at {ghz:g} GHz)" if ghz else ")")),
            ("load cycles", f"{self.load_cycles:,} once (resident weights into SRAM)"),
            ("flops", f"{self.flops:,}"),
            ("utilization", f"{self.utilization:.4%} of {self.precision} peak over all cores"),
            ("cores used", f"{self.cores_used:,}"),
            ("SRAM peak", f"{_bytes(self.sram_peak_bytes)} per core (planned, code included)"),
            *((("SRAM tightest", _tightest(self.sram)),) if self.sram else ()),
            ("DRAM bytes", f"{self.dram_bytes:,} ({_bytes(self.dram_bytes)})"),
            ("NoC bytes", f"{self.noc_bytes:,} (summed over links crossed)"),
            ("instructions", f"{self.instructions:,} executed"),
            ("compile", f"{self.compile_seconds:.2f} s"),
        ]
        if self.pcc is not None or self.max_abs_err is not None:
            pcc = "n/a" if self.pcc is None else f"{self.pcc:.6f}"
            err = "n/a" if self.max_abs_err is None else f"{self.max_abs_err:.3g}"
            rows.append(("vs eager", f"PCC {pcc}, max |err| {err}"))
        return "\n".join(f"{k:<13} {v}" for k, v in rows)

    def __str__(self) -> str:
        return self.format()


def _sram_rows(lowered: Lowered) -> tuple[dict[str, int], ...]:
    return tuple(dataclasses.asdict(u) for u in lowered.sram)


def _peak(row: Mapping[str, int]) -> int:
    return sum(int(row[k]) for k in SRAM_PARTS)


def _sram_max(a: Sequence[Mapping[str, int]], b: Sequence[Mapping[str, int]]) -> tuple[Mapping[str, int], ...]:
    """Per core, the plan of the two programs (run one after the other) that reaches further."""
    by_core: dict[int, Mapping[str, int]] = {}
    for row in (*a, *b):
        c = int(row["core"])
        if c not in by_core or _peak(row) > _peak(by_core[c]):
            by_core[c] = row
    return tuple(by_core[c] for c in sorted(by_core))


def _tightest(rows: Sequence[Mapping[str, int]]) -> str:
    """The core with the least SRAM free, by kind of bytes."""
    r = min(rows, key=lambda x: (int(x["free"]), int(x["core"])))
    parts = ", ".join(f"{k} {_bytes(int(r[k]))}" for k in SRAM_PARTS)
    return f"core {r['core']}: {parts}; {_bytes(int(r['free']))} free"


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    return str(v)


def _time(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:.3f} s"
    if us >= 1e3:
        return f"{us / 1e3:.3f} ms"
    return f"{us:.3f} us"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


# -- accuracy ------------------------------------------------------------------------------------------

def accuracy(actual: Sequence[Any], expected: Sequence[Any]) -> tuple[float, float]:
    """(PCC, max |actual - expected|) over all elements of matching flat outputs (tensors or arrays).

    Non-finite values must match exactly (else the error is inf and the PCC nan); constant outputs that
    agree have a PCC of 1."""
    if len(actual) != len(expected):
        raise ValueError(f"{len(actual)} outputs against {len(expected)} expected")
    a = np.concatenate([_f64(x) for x in actual]) if actual else np.zeros(0)
    e = np.concatenate([_f64(x) for x in expected]) if expected else np.zeros(0)
    if a.shape != e.shape:
        raise ValueError("output sizes differ from eager's")
    if a.size == 0:
        return 1.0, 0.0
    finite = np.isfinite(a) & np.isfinite(e)
    same_nonfinite = ~finite & ((a == e) | (np.isnan(a) & np.isnan(e)))
    if not np.all(finite | same_nonfinite):
        return math.nan, math.inf
    a, e = a[finite], e[finite]
    if a.size == 0:
        return 1.0, 0.0
    err = float(np.max(np.abs(a - e)))
    da, de = a - a.mean(), e - e.mean()
    denom = math.sqrt(float(np.dot(da, da)) * float(np.dot(de, de)))
    if denom == 0.0:
        return (1.0 if err == 0.0 or np.allclose(a, e) else 0.0), err
    return float(np.dot(da, de) / denom), err


def _f64(x: Any) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy().reshape(-1)
    return np.asarray(x, dtype=np.float64).reshape(-1)
