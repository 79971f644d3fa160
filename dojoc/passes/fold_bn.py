"""Fold inference batch norm, and other per-channel affine epilogues, into the convolution that feeds them.

A convolution followed by y = conv(x) * scale[c] + shift[c] is the convolution with weights
W[c] * scale[c] and bias b[c] * scale[c] + shift[c]. This pass rewrites, repeatedly (so a chain such as
conv -> batch_norm -> mul -> add folds into one conv):

- batch_norm(conv, weight, bias, mean, var): scale = weight / sqrt(var + eps), shift = bias - mean * scale;
- add / sub / mul / div of the convolution and a constant that varies only along the channel dim (a
  scalar, [C], [C, 1, 1] or [1, C, 1, 1]): the obvious scale and shift (c - conv negates the weights;
  conv / c scales by 1 / c);

when the convolution's output has no other reader (and is not a graph output), its weight and bias are
parameters, and every other operand is a compile-time constant: a parameter, a scalar constant, or an
expand/reshape of one (batch norm without affine parameters lowers its weight and bias to `expand` of a
constant). The folded weight and bias are new parameters, computed in float64 and rounded once to the
weight's dtype; the originals are dropped when nothing else reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dojoc.ir import Graph, Node, Op, Value, maybe_dump, verify
from dojoc.passes.consts import constant

Affine = tuple[np.ndarray, np.ndarray]  # (scale, shift), float64 [C]


def fold_batch_norm(graph: Graph) -> Graph:
    """A new graph with batch norms and per-channel affine epilogues folded into their convolutions."""
    g = graph.copy()
    while _fold_one(g):
        pass
    g.eliminate_dead_code()
    maybe_dump(g, "fold_bn")
    return verify(g)


def _constant(g: Graph, producers: dict[Value, Node], v: Value) -> np.ndarray | None:
    """The value of `v` when it is known at compile time, constants in float64 (the folding arithmetic)."""
    return constant(g, producers, v, np.float64)


def _per_channel(c: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """A constant operand broadcast against the conv output [N, C, H, W] as a [C] vector, or None when it
    varies along another dim or would grow the output."""
    if c.ndim > len(out_shape):
        return None
    shape = (1,) * (len(out_shape) - c.ndim) + c.shape
    C = out_shape[1]
    if any(s != 1 for i, s in enumerate(shape) if i != 1) or shape[1] not in (1, C):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (C,))  # c.size is 1 or C


def _epilogue(g: Graph, producers: dict[Value, Node], node: Node, conv_out: Value) -> Affine | None:
    """The per-channel (scale, shift) that `node` applies to `conv_out`, or None."""
    if node.outputs[0].type != conv_out.type:
        return None
    C = conv_out.type.shape[1]
    ones, zeros = np.ones(C), np.zeros(C)
    if node.op is Op.BATCH_NORM:
        if node.inputs[0] is not conv_out or conv_out in node.inputs[1:]:
            return None
        vals = [_constant(g, producers, v) for v in node.inputs[1:]]
        if any(v is None for v in vals):
            return None
        w, b, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1) for v in vals if v is not None)
        scale = w / np.sqrt(var + node.attrs["eps"])
        return scale, b - mean * scale
    rules: dict[Op, Callable[[np.ndarray, bool], Affine]] = {
        Op.ADD: lambda c, left: (ones, c),
        Op.SUB: lambda c, left: (ones, -c) if left else (-ones, c),
        Op.MUL: lambda c, left: (c, zeros),
        Op.DIV: lambda c, left: (1.0 / c, zeros),
    }
    if node.op not in rules or (node.op is Op.DIV and node.attrs["rounding_mode"] is not None):
        return None
    x, y = node.inputs
    if (x is conv_out) == (y is conv_out):  # neither, or conv * conv
        return None
    left = x is conv_out
    if node.op is Op.DIV and not left:  # c / conv is not affine
        return None
    raw = _constant(g, producers, y if left else x)
    c = _per_channel(raw, conv_out.type.shape) if raw is not None else None
    if c is None or (node.op is Op.DIV and not np.all(np.isfinite(1.0 / c))):
        return None
    return rules[node.op](c, left)


def _fold_one(g: Graph) -> bool:
    """Fold one epilogue into its convolution; False when there is none left."""
    producers = g.producers()
    users = g.users()
    outputs = set(g.outputs)
    for node in g.nodes:
        if node.op not in (Op.BATCH_NORM, Op.ADD, Op.SUB, Op.MUL, Op.DIV):
            continue
        for v in dict.fromkeys(node.inputs):
            conv = producers.get(v)
            if conv is None or conv.op is not Op.CONV2D or v in outputs or len(users.get(v, [])) != 1 \
                    or conv.attrs["epilogue"]:  # an epilogue runs after the bias: nothing folds through it
                continue
            w_node = producers.get(conv.inputs[1])
            b_node = producers.get(conv.inputs[2]) if len(conv.inputs) == 3 else None
            if w_node is None or w_node.op is not Op.PARAM or (len(conv.inputs) == 3 and (
                    b_node is None or b_node.op is not Op.PARAM)):
                continue
            affine = _epilogue(g, producers, node, v)
            if affine is not None:
                _rewrite(g, conv, node, w_node, b_node, affine, users)
                return True
    return False


def _rewrite(g: Graph, conv: Node, epi: Node, w_node: Node, b_node: Node | None, affine: Affine,
             users: dict[Value, list[Node]]) -> None:
    """Replace conv and its epilogue by one conv with folded parameters, where the epilogue was."""
    scale, shift = affine
    w = g.parameters[w_node.attrs["name"]]
    O = w.shape[0]
    bias = (np.asarray(g.parameters[b_node.attrs["name"]], dtype=np.float64) if b_node is not None
            else np.zeros(O))
    new_w = (w.astype(np.float64) * scale.reshape(O, 1, 1, 1)).astype(w.dtype)
    new_b = (bias * scale + shift).astype(w.dtype)
    params: list[Node] = []
    w_v = _param(g, w_node, "", new_w, users, params)
    b_v = _param(g, b_node, w_node.attrs["name"].removesuffix("weight") + "bias", new_b, users, params)
    out = Value(conv.name, epi.outputs[0].type)
    new_conv = Node(conv.name, Op.CONV2D, (conv.inputs[0], w_v, b_v), conv.attrs, (out,), conv.source)
    nodes: list[Node] = []
    for n in g.nodes:
        if n is conv:
            continue
        nodes += [*params, new_conv] if n is epi else [n]
    g.nodes = nodes
    g.replace_uses({epi.outputs[0]: out})


def _param(g: Graph, old: Node | None, name: str, array: np.ndarray, users: dict[Value, list[Node]],
           new_nodes: list[Node]) -> Value:
    """A parameter holding `array`: the old one updated in place when an earlier fold made it for this conv
    alone (so a chain of folds makes one parameter), else a new PARAM node appended to `new_nodes`."""
    if old is not None and old.attrs["name"].endswith(".folded") and len(users[old.output]) == 1:
        g.parameters[old.attrs["name"]] = array  # the graph's dict is a copy: the input graph keeps its array
        return old.output
    v = g.param(f"{old.attrs['name'] if old is not None else name}.folded", array,
                source=old.source if old is not None else None)
    new_nodes.append(g.nodes.pop())  # g.param appends at the end; the caller places it before the conv
    return v
