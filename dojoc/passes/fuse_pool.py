"""fuse_pool: a max pool's rows fold into the convolution that feeds it (after `fuse`).

A max pool is separable: the max over a kh x kw window is the max over kw columns of the max over kh rows.
So a `max_pool2d` whose indices nothing reads, and whose input is the output of a convolution that nothing
else reads, becomes:

- the convolution with one more epilogue step, `("row_max", kh, sh, ph)` (dojoc/ir/epilogue.py): its
  output has the pooled rows, so it writes 1 / sh of the rows it computes (ResNet's stem: 12.8 MB at batch
  8 becomes 6.4 MB, and the pool reads that much less); the step's fused name is the pool's name with
  `_rows`;
- then the pool over the columns alone, `kernel (1, kw)`, `stride (1, sw)`, `padding (0, pw)` (none when
  kw, sw are 1 and pw is 0).

Not for a convolution with groups (the depthwise and grouped kernels do not take the step), one whose
epilogue adds a residual (its tiles would be the convolution's rows, not the pooled ones), a dilated or
ceil-mode pool, a pool of one row, or one whose row stride is not above its row padding (the kernel writes
each pooled row over the first rows of its tile, which no later pooled row may still need). A pool left
alone gets a note in `graph.fusion_notes` saying why.
"""

from __future__ import annotations

from dojoc.ir import Graph, Node, Op, Value, maybe_dump, verify
from dojoc.ir.epilogue import RESIDUAL_STEPS, ROW_MAX, row_max_rows, steps_of


def fuse_pool(graph: Graph) -> Graph:
    """A new graph with max pools' rows folded into the convolutions that feed them."""
    g = graph.copy()
    users, producers, outputs = g.users(), g.producers(), set(g.outputs)
    for pool in list(g.nodes):
        if pool.op is not Op.MAX_POOL2D:
            continue
        conv = producers.get(pool.inputs[0])
        why = _why_not(pool, conv, users, outputs)
        if why:
            g.fusion_notes.setdefault(pool.name, why)
            continue
        assert conv is not None
        _rewrite(g, pool, conv)
    maybe_dump(g, "fuse_pool")
    return verify(g)


def _why_not(pool: Node, conv: Node | None, users: dict[Value, list[Node]], outputs: set[Value]) -> str:
    a = pool.attrs
    x, idx = pool.inputs[0], pool.outputs[1]
    if users.get(idx) or idx in outputs:
        return "its indices are read"
    if tuple(a["dilation"]) != (1, 1) or a["ceil_mode"] or a["kernel"][0] == 1:
        return "it is dilated, in ceil mode or one row high"
    if a["stride"][0] <= a["padding"][0]:  # (each pooled row is written over a row no later one reads)
        return "its row stride is not above its row padding"
    if conv is None or conv.op is not Op.CONV2D:
        return "its input is not a convolution's output"
    if conv.attrs["groups"] != 1 or any(s[0] in (*RESIDUAL_STEPS, ROW_MAX) for s in steps_of(conv.attrs)):
        return f"{conv.name} has groups or a residual in its epilogue"
    if len(users.get(x, [])) != 1 or x in outputs:
        return f"the output of {conv.name} has other readers"
    return ""


def _rewrite(g: Graph, pool: Node, conv: Node) -> None:
    (kh, kw), (sh, sw), (ph, pw) = pool.attrs["kernel"], pool.attrs["stride"], pool.attrs["padding"]
    name = g.fresh_name(f"{pool.name}_rows")
    g.insert_name(name)
    attrs = conv.attrs.replace(epilogue=steps_of(conv.attrs) + ((ROW_MAX, kh, sh, ph),),
                               fused=tuple(conv.attrs["fused"]) + (name,))
    n, c, h, w = conv.output.type.shape
    rows = Value(conv.output.name, conv.output.type.with_shape((n, c, row_max_rows(h, kh, sh, ph), w)))
    fused = Node(conv.name, conv.op, conv.inputs, attrs, (rows,), conv.source)
    alone = (kw, sw, pw) == (1, 1, 0)
    cols = Node(pool.name, pool.op, (rows,), pool.attrs.replace(kernel=(1, kw), stride=(1, sw), padding=(0, pw)),
                pool.outputs, pool.source)
    g.nodes = [fused if nd is conv else cols if nd is pool else nd for nd in g.nodes if not (alone and nd is pool)]
    if alone:
        g.replace_uses({pool.outputs[0]: rows})
