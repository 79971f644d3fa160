"""recognize: pointwise subgraphs that spell out an op the IR has become that op (rewrite rules).

Models often write an activation by hand. GPT-2's `NewGELUActivation` is

    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))

which exports as seven elementwise ops (a pow, four muls, two adds and a tanh): seven passes over a
[tokens, 4d] activation through DRAM, of which the fuse pass could fold only the scalar steps. It is
exactly `gelu(x, approximate="tanh")`, which fuses into the matmul before it as one epilogue step. Each
rule here matches such a subgraph (operands in either order, constants within float32 rounding, every
inner value read only inside the subgraph) and replaces its result by the op; the dead nodes go.

The rewrite is an identity of real numbers, not of roundings: the op evaluates the formula in FP32 and
rounds once, where the graph rounded after every step (a few ulps apart; fp32 results stay within 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from dojoc.ir import Graph, Node, Op, Value
from dojoc.passes.consts import constant

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class _Match:
    """The graph's producers, readers and outputs, and the inner nodes of the match so far."""

    def __init__(self, g: Graph) -> None:
        self.g, self.producers, self.users, self.outputs = g, g.producers(), g.users(), set(g.outputs)

    def node(self, v: Value, op: Op) -> Node | None:
        """The producer of `v` when it is `op` and `v` is read once and is not a graph output."""
        n = self.producers.get(v)
        if n is None or n.op is not op or len(self.users.get(v, [])) != 1 or v in self.outputs:
            return None
        return n

    def scalar(self, v: Value, value: float) -> bool:
        c = constant(self.g, self.producers, v)
        return c is not None and c.size == 1 and bool(np.isclose(float(c.reshape(())), value, rtol=1e-6, atol=0))

    def by_const(self, v: Value, op: Op, value: float) -> Value | None:
        """For v = op(y, c) or op(c, y) with the scalar constant c == value: y."""
        n = self.node(v, op)
        if n is None or len(n.inputs) != 2:
            return None
        a, b = n.inputs
        if self.scalar(b, value):
            return a
        if self.scalar(a, value):
            return b
        return None


def _gelu_tanh(m: _Match, n: Node) -> Value | None:
    """x when n computes 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))."""
    if n.op is not Op.MUL or len(n.inputs) != 2:
        return None
    for half, rest in (n.inputs, n.inputs[::-1]):
        x = m.by_const(half, Op.MUL, 0.5)
        t = m.by_const(rest, Op.ADD, 1.0)
        th = m.node(t, Op.TANH) if t is not None else None
        if x is None or th is None:
            continue
        u = m.by_const(th.inputs[0], Op.MUL, SQRT_2_OVER_PI)
        s = m.node(u, Op.ADD) if u is not None else None
        if s is None:
            continue
        for y, cube in (s.inputs, s.inputs[::-1]):
            p = m.by_const(cube, Op.MUL, 0.044715)
            pw = m.node(p, Op.POW) if p is not None else None
            if y is x and pw is not None and pw.inputs[0] is x and m.scalar(pw.inputs[1], 3.0):
                return x
    return None


# (rule, the op it becomes, its attributes)
RULES: list[tuple[Callable[[_Match, Node], Value | None], Op, dict[str, object]]] = [
    (_gelu_tanh, Op.GELU, {"approximate": "tanh"}),
]


def recognize(graph: Graph) -> Graph:
    """The graph with every subgraph that a rule of RULES matches replaced by its op."""
    g = graph.copy()
    # one rewrite at a time: a rewrite replaces the nodes that read its result, so matching starts again
    while (hit := _first_match(g)) is not None:
        n, x, op, attrs = hit
        new = g.add(op, (x,), attrs, name=f"{n.name}_{op.value}", source=n.source)
        g.nodes.remove(new)
        g.nodes.insert(g.nodes.index(n), new)
        g.replace_uses({n.output: new.output})
        g.eliminate_dead_code()
    return g


def _first_match(g: Graph) -> tuple[Node, Value, Op, dict[str, object]] | None:
    """The first node (in graph order) that a rule matches, with the rule's operand, op and attributes."""
    m = _Match(g)
    for n in g.nodes:
        for rule, op, attrs in RULES:
            x = rule(m, n)
            if x is not None:
                return n, x, op, attrs
    return None


def combine_constants(graph: Graph) -> Graph:
    """add(add(x, c1), c2) -> add(x, c1 + c2) for floating constants c1 and c2 (either operand order, the
    inner add read only by the outer, c1 + c2 no larger than the result): one pass over the activation
    instead of two. BERT's embeddings add the token-type and the position embeddings, both constants once
    the token types and positions fold; that is two adds of [tokens, d] through DRAM, now one. The sum is
    rounded once where the graph rounded twice (a few ulps: fp32 results stay within 1e-6)."""
    g = graph.copy()
    while (hit := _constant_pair(g)) is not None:
        n, x, total = hit
        c = g.param(f"{n.name}_constants", total.astype(n.output.type.dtype.numpy), source=n.source)
        new = g.add(Op.ADD, (x, c), {}, name=f"{n.name}_combined", source=n.source)
        for node in (g.producers()[c], new):  # (param and add append at the end: place them at n)
            g.nodes.remove(node)
            g.nodes.insert(g.nodes.index(n), node)
        g.replace_uses({n.output: new.output})
        g.eliminate_dead_code()
    return g


def _constant_pair(g: Graph) -> tuple[Node, Value, np.ndarray] | None:
    """The first add of a constant to the add of a constant (graph order): (the outer add, x, c1 + c2)."""
    m = _Match(g)
    for n in g.nodes:
        if n.op is not Op.ADD or len(n.inputs) != 2 or not n.output.type.dtype.is_float:
            continue
        for inner_v, c2v in (n.inputs, n.inputs[::-1]):
            inner, c2 = m.node(inner_v, Op.ADD), constant(g, m.producers, c2v)
            if inner is None or c2 is None or len(inner.inputs) != 2:
                continue
            for x, c1v in (inner.inputs, inner.inputs[::-1]):
                c1 = constant(g, m.producers, c1v)
                if c1 is None or constant(g, m.producers, x) is not None or x.type != n.output.type:
                    continue
                total = np.add(np.asarray(c1, np.float32), np.asarray(c2, np.float32))
                if total.ndim <= len(n.output.type.shape) and total.size <= np.prod(n.output.type.shape):
                    return n, x, total
    return None
