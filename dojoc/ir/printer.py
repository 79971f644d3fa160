"""A readable text form of IR graphs (`str(graph)`), and the `DOJOC_DEBUG` dump hook."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dojoc.ir.graph import Graph, Node
from dojoc.ir.ops import REQUIRED, Op, format_attr
from dojoc.ir.table import op_def

_SOURCE_ATTRS = {"name", "shape", "dtype", "flat_index", "value"}


def format_node(node: Node) -> str:
    """One line: `%y = op(%a, %b) {attr=...} : type  # source`."""
    lhs = ", ".join(str(v) for v in node.outputs)
    types = ", ".join(str(v.type) for v in node.outputs)
    a = node.attrs
    if node.op == Op.INPUT:
        rhs = f"input[{a['flat_index']}] {a['name']!r}"
    elif node.op == Op.PARAM:
        rhs = f"param {a['name']!r}"
    elif node.op == Op.CONST:
        rhs = f"const {format_attr(a['value'])}"
    else:
        schema = op_def(node.op).attrs
        attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in a.items()
                          if k not in schema or schema[k].default is REQUIRED or not _same(v, schema[k].default))
        rhs = f"{node.op}({', '.join(str(v) for v in node.inputs)})" + (f" {{{attrs}}}" if attrs else "")
    line = f"{lhs} = {rhs} : {types}"
    if node.source:
        line = f"{line:<100}  # {node.source}"
    return line


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def format_graph(graph: Graph) -> str:
    """The whole graph: header with inputs, one line per node, the returned values."""
    ins = ", ".join(f"{v}: {v.type}" for v in graph.inputs)
    mb = graph.param_bytes() / 2**20
    lines = [f"graph {graph.name}({ins}) {{  # {len(graph.nodes)} nodes, {len(graph.parameters)} parameters "
             f"({mb:.2f} MiB)"]
    lines += ["  " + format_node(n) for n in graph.nodes]
    outs = ", ".join(f"{name}={v}" for name, v in zip(graph.output_names, graph.outputs, strict=False))
    lines.append(f"  return ({outs})")
    lines.append("}")
    return "\n".join(lines)


_dump_count = 0


def maybe_dump(graph: Graph, stage: str) -> None:
    """If `DOJOC_DEBUG` is set (not 0/empty), print the graph after `stage` to stderr.

    With `DOJOC_DEBUG_DIR=dir` as well, write it to `dir/NN_stage.txt` instead.
    """
    global _dump_count
    flag = os.environ.get("DOJOC_DEBUG", "")
    if flag in ("", "0"):
        return
    _dump_count += 1
    text = f"=== dojoc IR after {stage} ===\n{format_graph(graph)}\n"
    out_dir = os.environ.get("DOJOC_DEBUG_DIR")
    if out_dir:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{_dump_count:02d}_{stage}.txt").write_text(text)
    else:
        print(text, file=sys.stderr)
