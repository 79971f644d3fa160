"""Values known at compile time, shared by the graph passes."""

from __future__ import annotations

from typing import Any

import numpy as np

from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.ops import Op


def constant(g: Graph, producers: dict[Value, Node], v: Value, const_dtype: Any = None) -> np.ndarray | None:
    """The value of `v` when a parameter or a constant defines it, possibly through reshapes and expands
    (replayed on the array); None otherwise. A constant's array takes `const_dtype`, or its own dtype."""
    n = producers.get(v)
    if n is None:
        return None
    if n.op is Op.PARAM:
        return np.asarray(g.parameters[n.attrs["name"]])
    if n.op is Op.CONST:
        return np.asarray(n.attrs["value"], dtype=const_dtype if const_dtype is not None else n.attrs["dtype"].numpy)
    if n.op in (Op.EXPAND, Op.RESHAPE):
        src = constant(g, producers, n.inputs[0], const_dtype)
        if src is None:
            return None
        shape = tuple(n.attrs["shape"])
        return np.broadcast_to(src, shape) if n.op is Op.EXPAND else src.reshape(shape)
    return None
