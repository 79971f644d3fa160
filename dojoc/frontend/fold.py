"""Constant folding: nodes whose inputs are all constants are evaluated with the IR interpreter at
compile time and replaced by parameters (or by CONST nodes for scalars).

`expand` of a constant is kept as a broadcast (materializing it would only cost memory); a node that
reads it still folds. A result larger than `max_bytes` that is also larger than its inputs is kept as
computation. Dead nodes and unused parameters are dropped afterwards.
"""

from __future__ import annotations

import numpy as np

from dojoc.ir import Graph, Node, Op, OpKind, Value, evaluate, maybe_dump, op_def, verify

DEFAULT_MAX_BYTES = 16 << 20


def fold_constants(graph: Graph, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Graph:
    """A new graph with constant subgraphs evaluated; the input graph is not changed."""
    g = graph.copy()
    known: dict[Value, np.ndarray] = {}      # values whose contents are known at compile time
    origin: dict[Value, str] = {}             # a readable parameter name each derives from
    mapping: dict[Value, Value] = {}
    nodes: list[Node] = []
    for node in g.nodes:
        if any(v in mapping for v in node.inputs):
            node = node.with_inputs([mapping.get(v, v) for v in node.inputs])
        if node.op == Op.PARAM:
            known[node.output] = g.parameters[node.attrs["name"]]
            origin[node.output] = node.attrs["name"]
        elif node.op == Op.CONST:
            known[node.output] = np.asarray(node.attrs["value"], dtype=node.attrs["dtype"].numpy)
        elif node.kind != OpKind.SOURCE and node.inputs and all(v in known for v in node.inputs):
            results = evaluate(node, [known[v] for v in node.inputs], g)
            base = next((origin[v] for v in node.inputs if v in origin), "const")
            if node.op == Op.EXPAND or not _worth_it(node, results, known, max_bytes):
                known.update(zip(node.outputs, results, strict=True))
                origin.update((v, base) for v in node.outputs)
                nodes.append(node)
                continue
            for i, (out, arr) in enumerate(zip(node.outputs, results, strict=True)):
                new = _source_node(g, node, i, arr, base)
                if new.output is not out:
                    mapping[out] = new.output
                known[new.output] = arr
                origin[new.output] = base
                nodes.append(new)
            continue
        nodes.append(node)
    g.nodes = nodes
    g.outputs = [mapping.get(v, v) for v in g.outputs]
    g.eliminate_dead_code()
    maybe_dump(g, "fold")
    return verify(g)


def _worth_it(node: Node, results: tuple[np.ndarray, ...], known: dict[Value, np.ndarray],
              max_bytes: int) -> bool:
    out_bytes = sum(r.nbytes for r in results)
    in_bytes = sum(known[v].nbytes for v in node.inputs)
    return out_bytes <= max_bytes or out_bytes <= in_bytes


def _source_node(g: Graph, node: Node, i: int, arr: np.ndarray, base: str) -> Node:
    """A PARAM (or, for a scalar, CONST) node for output i of node; output 0 keeps its Value."""
    out = node.outputs[i]
    name = node.name if i == 0 else g.fresh_name(f"{node.name}_{i}")
    g.insert_name(name)
    attrs: dict[str, object]
    if arr.shape == ():
        dt = out.type.dtype
        value = bool(arr) if dt.value == "bool" else int(arr) if dt.is_int else float(arr)
        attrs = {"value": value, "dtype": dt}
        op = Op.CONST
    else:
        key, k = f"{base}.{node.op.value}", 0
        while key in g.parameters:
            k += 1
            key = f"{base}.{node.op.value}_{k}"
        g.parameters[key] = np.ascontiguousarray(arr)
        attrs = {"name": key, "shape": out.type.shape, "dtype": out.type.dtype}
        op = Op.PARAM
    value_out = out if i == 0 else Value(name, out.type)
    return Node(name, op, (), op_def(op).normalize_attrs(attrs), (value_out,), node.source)
