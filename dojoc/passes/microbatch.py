"""Micro-batches: a graph cut along its batch into replicas that a pipeline runs side by side.

`split_batch(graph, m)` returns the graph whose every op that reads the batch is replicated `m` times,
replica i reading the i-th slice of the batch: the user inputs that carry the batch are sliced on dim 0
(views: no code), each replica's ops are those of the graph with the batch divided by `m`, and each graph
output is the concatenation of its replicas on dim 0. Parameters and constants are shared. The result
computes what the graph computes; a pipelined lowering (codegen/lanes.py) runs each replica's ops of a
stage on that stage's cores, so replica i + 1 runs on one stage while replica i runs on the next.

The cut is legal when every value that depends on a user input is *batch-major*: its dim 0 holds the batch
outermost (so one micro-batch is one contiguous run of dim 0), and no op mixes the items of a batch (an op
that reduces, concatenates, slices, selects, gathers or scans along dim 0, or a permute that moves dim 0).
`batch_problem` names the first op that breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dojoc.errors import ShapeError
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.ops import Op, OpKind

# ops whose attribute `dim` (or `dims`) must not be the batch's dim 0
_DIM_OPS = {Op.CUMSUM, Op.SOFTMAX, Op.LOG_SOFTMAX, Op.GATHER, Op.INDEX_SELECT, Op.SLICE, Op.SELECT, Op.CAT}
_DIMS_OPS = {Op.SUM, Op.MEAN, Op.AMAX, Op.AMIN, Op.VAR}
# ops whose attribute `shape` holds the output's sizes, dim 0 the batch's
_SHAPE_OPS = {Op.RESHAPE, Op.EXPAND}


@dataclass(frozen=True)
class Replica:
    """Where a node of a micro-batched graph comes from: the node of the whole graph, and its micro-batch."""

    op: str
    micro_batch: int


def batch_size(graph: Graph) -> int:
    """The batch: dim 0 of the first user input (1 for a graph without inputs or of rank-0 inputs)."""
    for v in graph.inputs:
        if v.type.rank:
            return v.type.shape[0]
    return 1


def _batched(graph: Graph, batch: int) -> set[Value]:
    """The values that depend on a user input whose dim 0 is the batch."""
    carried = {v for v in graph.inputs if v.type.rank and v.type.shape[0] == batch}
    for n in graph.nodes:
        if any(v in carried for v in n.inputs):
            carried.update(n.outputs)
    return carried


def _mixes(n: Node, carried: set[Value]) -> str | None:
    """Why `n` mixes the items of its batch (None when it keeps them apart)."""
    rank = n.inputs[0].type.rank if n.inputs else 0
    if n.op in _DIM_OPS and (n.attrs["dim"] % max(rank, 1)) == 0:
        return f"it works along dim 0, the batch ({n.op})"
    if n.op in _DIMS_OPS and any(d % max(rank, 1) == 0 for d in n.attrs["dims"]):
        return f"it reduces over dim 0, the batch ({n.op})"
    if n.op is Op.PERMUTE and n.attrs["perm"][0] != 0:
        return "it moves dim 0, the batch, away from the front"
    if n.op is Op.GATHER and n.inputs[1] not in carried:
        return "it gathers the batch with indices that do not carry it"
    if n.op is Op.MATMUL and n.inputs[0] not in carried:
        return "its batch-carrying operand is not its left one"
    return None


def batch_problem(graph: Graph, m: int) -> str | None:
    """Why `graph` cannot be cut into `m` micro-batches (None when it can)."""
    batch = batch_size(graph)
    if m < 2:
        return f"{m} micro-batches: give at least 2"
    if batch % m:
        return f"the batch is {batch}, which {m} micro-batches do not divide; give a divisor of {batch}"
    carried = _batched(graph, batch)
    if not carried:
        return "no user input carries a batch on dim 0"
    for n in graph.nodes:
        if not any(v in carried for v in n.inputs):
            continue
        why = _mixes(n, carried)
        if why is not None:
            return f"op {n.name} mixes the items of the batch: {why}"
        for v in n.outputs:
            if not v.type.rank or v.type.shape[0] % m:
                return f"op {n.name} gives {v.type}, whose dim 0 is not the batch's ({m} micro-batches)"
    for v in graph.outputs:
        if v not in carried:
            return f"output {v.name} does not depend on the batch"
    return None


def split_batch(graph: Graph, m: int) -> tuple[Graph, dict[str, Replica]]:
    """The graph as `m` micro-batch replicas, and where each replica node comes from (see the module
    docstring). ShapeError when `batch_problem` finds a reason it cannot be cut, or a replica's shapes do not
    divide (a broadcast against a batch-sized constant)."""
    problem = batch_problem(graph, m)
    if problem is not None:
        raise ShapeError(f"cannot cut the graph into micro-batches: {problem}")
    batch = batch_size(graph)
    carried = _batched(graph, batch)
    out = Graph(graph.name, parameters=dict(graph.parameters), in_spec=graph.in_spec, out_spec=graph.out_spec,
                baked_inputs=dict(graph.baked_inputs), fusion_notes=dict(graph.fusion_notes))
    shared: dict[Value, Value] = {}
    for n in graph.nodes:  # sources first: inputs, parameters, constants
        if n.op is Op.INPUT:
            shared[n.output] = out.input(n.attrs["name"], n.output.type, n.attrs["flat_index"])
        elif n.kind is OpKind.SOURCE:
            node = out.add(n.op, (), n.attrs, name=n.name, source=n.source)
            shared[n.output] = node.output
    origin: dict[str, Replica] = {}
    replicas: list[dict[Value, Value]] = []
    for i in range(m):
        vals = dict(shared)
        for v in graph.inputs:
            if v in carried:
                size = v.type.shape[0] // m
                vals[v] = out.call(Op.SLICE, shared[v], name=f"{v.name}_mb{i}", dim=0, start=i * size,
                                   end=(i + 1) * size)
        replicas.append(vals)
    for n in graph.nodes:
        if n.kind is OpKind.SOURCE:
            continue
        for i, vals in enumerate(replicas):
            attrs = n.attrs
            if n.op in _SHAPE_OPS and n.output in carried:
                shape = tuple(attrs["shape"])
                attrs = attrs.replace(shape=(shape[0] // m, *shape[1:]))
            for key in ("fused", "merged"):  # the ops an op computes are replicated with it, and renamed
                if key in attrs:
                    attrs = attrs.replace(**{key: tuple(f"{f}_mb{i}" for f in attrs[key])})
            node = out.add(n.op, [vals[v] for v in n.inputs], attrs, name=f"{n.name}_mb{i}", source=n.source)
            if n.name in graph.fusion_notes:
                out.fusion_notes[node.name] = graph.fusion_notes[n.name]
            for old, new in zip(n.outputs, node.outputs, strict=True):
                want = (old.type.shape[0] // m, *old.type.shape[1:]) if old in carried else old.type.shape
                if new.type.shape != want:
                    raise ShapeError(f"cannot cut the graph into micro-batches: op {n.name} gives {new.type} "
                                     f"for one of {m} micro-batches, not {want}")
                vals[old] = new
            origin[node.name] = Replica(n.name, i)
    outs = [out.call(Op.CAT, *[vals[v] for vals in replicas], name=f"{name}_join", dim=0)
            for v, name in zip(graph.outputs, graph.output_names, strict=True)]
    out.set_outputs(outs, list(graph.output_names))
    return out, origin
