"""merge_siblings: matmuls that read the same input with weights of their own become one matmul.

A transformer's attention projects its input three times (query, key and value: three Linear(d -> d) on
the same activation); the three become one Linear(d -> 3d) whose weight and bias are the three
concatenated along N, and three slices of its result (views: no code) take the place of the three
outputs. One op instead of three reads the input once, has one region and one barrier, and gives the
matrix unit a three times wider N. GPT-2's fused `c_attn` is this shape already.

Siblings merge when each is a matmul of the same input value by a 2-D parameter [K, N_i] and their
epilogues have the same steps with no residual (a bias is concatenated like the weight). The merged
node takes the first sibling's name and place; the others' names (and those of the ops fused into them)
stay in its `merged` attribute, so the mapping still lists them (as merged into it). Every output column
is the same dot product as before, so the result is the same bit for bit in the reference.
"""

from __future__ import annotations

import numpy as np

from dojoc.ir import Graph, Node, Op, Value
from dojoc.ir.epilogue import RESIDUAL_STEPS, steps_of
from dojoc.passes.consts import constant


def _is_param(producers: dict[Value, Node], v: Value) -> bool:
    n = producers.get(v)
    return n is not None and n.op is Op.PARAM


def _key(producers: dict[Value, Node], n: Node) -> tuple[object, ...] | None:
    """What siblings must share to merge, or None when this matmul cannot: a 2-D parameter as its weight,
    parameters as its biases (the fuse pass makes them so), no residual."""
    steps = steps_of(n.attrs)
    if n.op is not Op.MATMUL or n.attrs.get("merged") or any(s[0] in RESIDUAL_STEPS for s in steps):
        return None
    if len(n.inputs[1].type.shape) != 2 or not all(_is_param(producers, v) for v in n.inputs[1:]):
        return None
    return (n.inputs[0], steps, n.inputs[1].type.shape[0], n.inputs[1].type.dtype, n.attrs.get("out_dtype"))


def merge_siblings(graph: Graph) -> Graph:
    """The graph with every group of sibling matmuls merged into one (see the module docstring)."""
    g = graph.copy()
    producers = g.producers()
    groups: dict[tuple[object, ...], list[Node]] = {}
    for n in g.nodes:
        key = _key(producers, n)
        if key is not None:
            groups.setdefault(key, []).append(n)
    siblings = [nodes for nodes in groups.values() if len(nodes) > 1]
    for nodes in siblings:
        _merge(g, producers, nodes)
    if siblings:
        g.eliminate_dead_code()
    return g


def _merge(g: Graph, producers: dict[Value, Node], nodes: list[Node]) -> None:
    first = nodes[0]
    at = g.nodes.index(first)
    widths = [n.inputs[1].type.shape[1] for n in nodes]
    w, *biases = (np.concatenate([constant(g, producers, n.inputs[i]) for n in nodes], axis=-1)
                  for i in range(1, len(first.inputs)))
    for n in nodes:
        g.nodes.remove(n)
        g._names.discard(n.name)
    before = len(g.nodes)
    wv = g.param(f"{first.name}_merged_w", w, source=first.source)
    bvs = [g.param(f"{first.name}_merged_b{i}", b, source=first.source) for i, b in enumerate(biases)]
    attrs = dict(first.attrs)
    # the other siblings, and the ops fused into them (their bias adds), by name
    attrs["merged"] = tuple(name for n in nodes[1:] for name in (n.name, *n.attrs.get("fused", ())))
    big = g.add(Op.MATMUL, (first.inputs[0], wv, *bvs), attrs, name=first.name, source=first.source)
    dim = len(big.output.type.shape) - 1
    slices, start = [], 0
    for n, width in zip(nodes, widths, strict=True):
        s = g.add(Op.SLICE, (big.output,), {"dim": dim, "start": start, "end": start + width, "step": 1},
                  name=f"{n.name}_part", source=n.source)
        slices.append(s)
        start += width
    new = g.nodes[before:]
    del g.nodes[before:]
    g.nodes[at:at] = new
    g.replace_uses({n.output: s.output for n, s in zip(nodes, slices, strict=True)})
