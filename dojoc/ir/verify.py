"""The IR verifier: run after every stage of the pipeline.

It checks that values are defined once and before use (topological order), that every node's
attributes match its op's schema and its output types match its shape rule, that sources agree with
the graph (inputs in order, parameters present with their types, constants of their dtype) and that the
outputs are defined. The first violation raises IRError (or ShapeError) naming the node, its shapes and
its source line.
"""

from __future__ import annotations

import math

from dojoc.errors import IRError, ShapeError
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.ops import Op
from dojoc.ir.table import op_def
from dojoc.ir.types import IRDType, TensorType


def verify(graph: Graph) -> Graph:
    """Check every invariant of the graph; return it unchanged, or raise IRError/ShapeError."""
    defined: set[Value] = set()
    names: set[str] = set()
    inputs_seen: list[Value] = []
    for node in graph.nodes:
        _check_node(graph, node, defined)
        if node.name in names:
            raise node.error(f"node name {node.name!r} is used twice", IRError)
        names.add(node.name)
        for v in node.outputs:
            if v in defined:
                raise node.error(f"value {v} is defined twice", IRError)
            defined.add(v)
        if node.op == Op.INPUT:
            inputs_seen.append(node.output)
    if inputs_seen != list(graph.inputs):
        raise IRError(f"graph.inputs {[str(v) for v in graph.inputs]} are not the INPUT nodes in order "
                      f"{[str(v) for v in inputs_seen]}")
    flat = [n.attrs["flat_index"] for n in graph.nodes if n.op == Op.INPUT]
    if flat != sorted(set(flat)):
        raise IRError(f"input flat indices {flat} must increase")
    for v in graph.outputs:
        if v not in defined:
            raise IRError(f"graph output {v} is not defined by any node")
    if len(graph.output_names) != len(graph.outputs):
        raise IRError(f"{len(graph.outputs)} outputs but {len(graph.output_names)} output names")
    return graph


def _check_node(graph: Graph, node: Node, defined: set[Value]) -> None:
    d = op_def(node.op)
    problem = d.check_attrs(node.attrs)
    if problem:
        raise node.error(f"{node.op}: {problem}", IRError)
    lo, hi = d.arity
    if not (lo <= len(node.inputs) and (hi is None or len(node.inputs) <= hi)):
        raise node.error(f"{node.op} takes {lo}..{'' if hi is None else hi} inputs, got {len(node.inputs)}",
                         IRError)
    for v in node.inputs:
        if v not in defined:
            raise node.error(f"input {v} is not defined before use (nodes must be in topological order)",
                             IRError)
    try:
        expected = d.shape([v.type for v in node.inputs], node.attrs)
    except ShapeError as e:
        raise node.error(f"{node.op}: {e}", ShapeError) from None
    got = tuple(v.type for v in node.outputs)
    if got != tuple(expected):
        raise node.error(f"{node.op}: declared output types {', '.join(map(str, got))} but the shape rule "
                         f"gives {', '.join(map(str, expected))}", IRError)
    if node.outputs and node.outputs[0].name != node.name:
        raise node.error(f"first output {node.outputs[0]} must carry the node's name", IRError)
    if node.op == Op.PARAM:
        arr = graph.parameters.get(node.attrs["name"])
        if arr is None:
            raise node.error(f"parameter {node.attrs['name']!r} is not in graph.parameters", IRError)
        try:
            t = TensorType.of(arr)
        except KeyError:
            raise node.error(f"parameter {node.attrs['name']!r} has unsupported dtype {arr.dtype}", IRError) \
                from None
        if t != node.output.type:
            raise node.error(f"parameter {node.attrs['name']!r} holds {t}, declared {node.output.type}", IRError)
    elif node.op == Op.CONST:
        _check_const(node)


def _check_const(node: Node) -> None:
    value, dtype = node.attrs["value"], node.attrs["dtype"]
    ok = (isinstance(value, bool) if dtype == IRDType.BOOL
          else isinstance(value, int) and not isinstance(value, bool) if dtype.is_int
          else isinstance(value, float))
    if not ok:
        raise node.error(f"const value {value!r} is not a {dtype} scalar", IRError)
    if dtype.is_int:
        info = {IRDType.I32: (-2**31, 2**31 - 1), IRDType.I64: (-2**63, 2**63 - 1)}[dtype]
        if not info[0] <= value <= info[1]:
            raise node.error(f"const {value} overflows {dtype}", IRError)
    if dtype == IRDType.BF16 and math.isfinite(value) and abs(value) > 3.39e38:
        raise node.error(f"const {value} overflows bf16", IRError)
