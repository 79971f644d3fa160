"""Explaining a mapping: per op, its region and split, where its values live, the cost model's cycles and
bound, and the cycles the emulator measured (`dojoc compile --explain`, report.json's "ops")."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping as Row
from typing import Any

from dojoc.codegen.result import Lowered
from dojoc.mapping.model import Mapping, Where, format_cores
from runtime_emu.stats import RunStats


def emulated_cycles(lowered: Lowered, stats: RunStats | None) -> dict[str, int]:
    """Cycles per op measured by the emulator: an op runs between two barriers of its cores (of every
    core, or of its pipeline lane's), so its time is the release of the barrier after it minus the release
    of the barrier before it (the load barrier for the first). An op whose code lies between several
    barriers (a two-pass reduction) spans them. Barriers are told apart by id and by how many of that id
    released before (each id's barriers release in order)."""
    if stats is None:
        return {}
    releases: dict[int, list[int]] = {}
    for bid, cycle in stats.barrier_releases:
        releases.setdefault(bid, []).append(cycle)
    out: dict[str, int] = {}
    for op, (b0, n0), (b1, n1) in lowered.op_spans:
        if n0 < len(releases.get(b0, ())) and n1 < len(releases.get(b1, ())):
            out[op] = out.get(op, 0) + releases[b1][n1] - releases[b0][n0]
    return out


def _where(mapping: Mapping, name: str) -> str:
    v = mapping.value(name)
    if v is None:
        return name
    if v.where is Where.SRAM:
        return f"{name} (sram x{len({s.core for s in v.shards})}{' + dram' if v.dram_copy else ', held'})"
    return f"{name} (dram)"


def op_rows(lowered: Lowered, stats: RunStats | None = None) -> list[dict[str, Any]]:
    """One row per decision of the compile, in program order; fused ops name their producer."""
    mapping = lowered.mapping
    if mapping is None:
        return []
    measured = emulated_cycles(lowered, stats)
    whole: dict[str, int] = {}  # an op's predicted cycles over all its decisions (its phases)
    for om in mapping.ops:
        whole[om.op] = whole.get(om.op, 0) + om.predicted_cycles
    rows: list[dict[str, Any]] = []
    for om in mapping.ops:
        row: dict[str, Any] = {"op": om.key, "kernel": om.kernel}
        if om.fused_into is not None:
            row["fused_into"] = om.fused_into
            rows.append(row)
            continue
        row.update({"cores": len(om.cores), "region": format_cores(om.cores), "split": dict(om.split),
                    "tile": dict(om.tile), "resident": om.resident, "stage": om.stage,
                    "inputs": [_where(mapping, n) for n in om.reads],
                    "outputs": [_where(mapping, n) for n in om.writes],
                    "predicted_cycles": om.predicted_cycles, "bound": om.bound.value,
                    "emulated_cycles": measured.get(om.op) if om.part == 0 else None})
        if om.part == 0 and whole[om.op] != om.predicted_cycles:
            row["op_predicted_cycles"] = whole[om.op]  # what the op's emulated cycles compare with
        if om.note:
            row["note"] = om.note
        rows.append(row)
    return rows


def timed(rows: Iterable[Row[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ops the emulator timed (not fused, with emulated cycles)."""
    return [dict(r) for r in rows if "fused_into" not in r and r.get("emulated_cycles")]


def prediction_error(row: dict[str, Any]) -> float:
    """|predicted - emulated| / emulated of one op's row (over all its phases)."""
    emu = row["emulated_cycles"]
    return float(abs(row.get("op_predicted_cycles", row["predicted_cycles"]) - emu) / emu)


def _stage(row: dict[str, Any]) -> str:
    return f"; pipeline stage {row['stage']}" if row.get("stage") else ""


def _fmt_axes(d: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items()) or "-"


def format_explain(rows: list[dict[str, Any]]) -> str:
    """The rows as a readable table, with the median error of predicted against emulated cycles."""
    lines = [f"{'op':<34} {'kernel':<10} {'cores':>5} {'predicted':>10} {'bound':<8} {'emulated':>10}  "
             "split / tile / where"]
    errors = []
    for r in rows:
        if "fused_into" in r:
            lines.append(f"{r['op']:<34} {'(fused)':<10} {'':>5} {'':>10} {'':<8} {'':>10}  "
                         f"in the epilogue of {r['fused_into']}")
            continue
        emu = r.get("emulated_cycles")
        if emu:
            errors.append(prediction_error(r))
        lines.append(f"{r['op']:<34} {r['kernel']:<10} {r['cores']:>5} {r['predicted_cycles']:>10,} {r['bound']:<8} "
                     f"{emu if emu is not None else '-':>10}  split {_fmt_axes(r['split'])}; tile "
                     f"{_fmt_axes(r['tile'])}{'; weights resident' if r['resident'] else ''}{_stage(r)}"
                     f"; cores {r['region']}")
        if r["inputs"] or r["outputs"]:
            lines.append(f"{'':<34} reads {', '.join(r['inputs']) or '-'}; writes {', '.join(r['outputs']) or '-'}")
        if r.get("note"):
            lines.append(f"{'':<34} not fused: {r['note']}")
    if errors:
        errors.sort()
        lines.append(f"median |predicted - emulated| / emulated over {len(errors)} ops: "
                     f"{errors[len(errors) // 2]:.1%}")
    return "\n".join(lines)


def decision(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The row of one decision by key (tests, tools)."""
    return next((r for r in rows if r["op"] == key), None)

