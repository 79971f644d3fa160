"""Reading a given mapping against a graph, and building the mapping of a finished compile."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace
from typing import TYPE_CHECKING

import networkx as nx

from dojoc.errors import MappingError
from dojoc.ir.graph import Graph, Node
from dojoc.mapping.model import Mapping, OpMapping, Shard, ValuePlacement, Where
from isa.machine import Machine
from isa.program import Tensor

if TYPE_CHECKING:  # the codegen context imports this package
    from dojoc.codegen.context import Ctx


def check_given(mapping: Mapping, graph: Graph, machine: Machine) -> dict[str, OpMapping]:
    """The decisions of a user's mapping by key; MappingError for one that names no op of the graph or a
    core off the machine's mesh."""
    nodes = {n.name for n in graph.nodes}
    names = nodes | {f"output {name}" for name in graph.output_names}
    # ops fused into another, and sibling matmuls merged into one: the op that computes them
    host = {f: n.name for n in graph.nodes for k in ("fused", "merged") for f in n.attrs.get(k, ())}
    names |= set(host)
    for om in mapping.ops:
        if om.fused_into is None and om.op in host and om.op not in nodes:
            raise MappingError(f"op {om.key}: this op runs inside {host[om.op]} (fused or merged), so it takes "
                               f"no decision of its own; give the decision to op {host[om.op]}, or mark this "
                               f"one \"fused_into\": \"{host[om.op]}\"")
        if om.op not in names:
            close = sorted(n for n in names if n.startswith(om.op[:3]))[:5]
            hint = f" (ops with a similar name: {', '.join(close)})" if close else ""
            raise MappingError(f"op {om.key}: the graph has no op of that name{hint}; dump this model's "
                               "mapping with --dump-mapping and edit that")
        n = machine.num_cores
        off = [c for c in om.cores if not 0 <= c < n]
        if off:
            raise MappingError(f"op {om.key}: core {off[0]} of its region is off the mesh ({machine.name} has "
                               f"{n} cores, ids 0-{n - 1}); give a region within it")
    return {om.key: om for om in mapping.ops if om.fused_into is None}


def record_shards(ctx: Ctx, core: int, loads: list[tuple[int, int, int]]) -> None:
    """Note the resident copies (DRAM source, SRAM address, bytes) that `core` loads; `build_mapping`
    names the DRAM tensor each comes from."""
    ctx.resident_loads += [(core, src, dst, nbytes) for src, dst, nbytes in loads]


class _TensorIndex:
    """The DRAM tensor that holds an address (tensors are allocated in disjoint, increasing ranges)."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.tensors = sorted(tensors, key=lambda t: t.address)
        self.starts = [t.address for t in self.tensors]

    def name(self, address: int) -> str | None:
        i = bisect_right(self.starts, address) - 1
        return self.tensors[i].name if i >= 0 else None


def _lifetimes(graph: Graph) -> dict[str, tuple[int, int]]:
    """(index of the op that writes it, index of the last op that reads it) per value name and per
    name of the node that produces it: liveness over the dataflow graph (networkx), a graph output living
    to the end."""
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    flow = nx.MultiDiGraph()  # one edge per (producer, reader, value)
    flow.add_nodes_from(order)
    producers = graph.producers()
    for n in graph.nodes:
        for v in n.inputs:
            if v in producers:
                flow.add_edge(producers[v].name, n.name, value=v)
    out: dict[str, tuple[int, int]] = {}
    for n in graph.nodes:
        for v in n.outputs:
            readers = [order[u] for _, u, val in flow.out_edges(n.name, data="value") if val is v]
            last = len(graph.nodes) if v in graph.outputs else max(readers, default=order[n.name])
            out[str(v.name)] = (order[n.name], last)
            out.setdefault(n.name, (order[n.name], last))
    return out


def _lifetime(name: str, lives: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """A DRAM tensor's lifetime: by its value's name, or by the op it belongs to (w_OP, OP_bias_f32, ...)."""
    if name in lives:
        return lives[name]
    base = name[2:] if name.startswith("w_") else name
    best = max((k for k in lives if base.startswith(k)), key=len, default=None)
    return lives[best] if best is not None else (0, 0)


def build_mapping(ctx: Ctx, notes: tuple[str, ...] = ()) -> Mapping:
    """The mapping of the compile in `ctx`: its decisions in program order, and every DRAM tensor's
    placement, with the resident SRAM copies of weights as shards."""
    lives = _lifetimes(ctx.graph)
    index = _TensorIndex(ctx.tensors)
    by_tensor: dict[str, list[Shard]] = {}
    for core, src, dst, nbytes in ctx.resident_loads:
        owner = index.name(src)
        if owner is not None:
            by_tensor.setdefault(owner, []).append(Shard(core, dst, nbytes))
    values = []
    for t in ctx.tensors:
        held = ctx.held_shards.get(t.address) if t.kind.value == "scratch" else None
        purpose, kept = ctx.kept_shards.get(t.address, ("", ())) if t.kind.value == "scratch" else ("", ())
        rows, band, copy = ctx.band_shards.get(t.address, ("", (), True)) if t.kind.value == "scratch" \
            else ("", (), True)
        shards = tuple(sorted(held or kept or band or by_tensor.get(t.name, []), key=lambda s: (s.core, s.address)))
        cores = len({s.core for s in shards})
        layout = (f"blocks of the mesh ({cores} cores), held from its producer to its reader" if held
                  else f"blocks of the mesh ({cores} cores), kept for {purpose} (a DRAM copy stays)"
                  if kept else rows + (" (a DRAM copy stays)" if copy else "") if band
                  else f"tiles of its op's region on {cores} cores (a DRAM copy stays)" if shards else "")
        values.append(ValuePlacement(
            t.name, Where.SRAM if shards else Where.DRAM, t.address, t.nbytes, tuple(t.shape), t.dtype.asm,
            t.kind.value, shards, layout, _lifetime(t.name, lives), dram_copy=held is None and copy))
    m = ctx.machine
    nodes = {n.name: n for n in ctx.graph.nodes}
    return Mapping(m.name, m.hash, ctx.precision, tuple(_with_io(ctx, d, nodes, index) for d in ctx.decisions),
                   tuple(values), notes=notes)


def _with_io(ctx: Ctx, om: OpMapping, nodes: dict[str, Node], index: _TensorIndex) -> OpMapping:
    """The decision with the DRAM tensors that hold the values its op reads and writes."""
    node = nodes.get(om.op)
    if node is None or om.fused_into is not None:
        return om

    def name(v: object) -> str | None:
        view = ctx.views.get(v)  # type: ignore[call-overload]
        return index.name(view.base) if view is not None else None

    reads = tuple(dict.fromkeys(n for n in map(name, node.inputs) if n is not None))
    writes = tuple(dict.fromkeys(n for n in map(name, node.outputs) if n is not None))
    return replace(om, reads=reads, writes=writes)
