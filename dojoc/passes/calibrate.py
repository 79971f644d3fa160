"""CFP8 calibration: the range of every activation on example inputs, from the IR interpreter.

A CFP8 tensor carries one exponent bias; `isa.formats.choose_bias` picks it from the largest magnitude
the tensor holds. Weights have their real values at compile time; activations do not, so `dojoc.compile`
runs the graph once on its example inputs and records each value's largest magnitude.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dojoc.ir import Graph
from dojoc.ir.graph import Node
from dojoc.ir.interpreter import Interpreter


class _Ranges(Interpreter):
    """The interpreter, noting max |x| of every floating value it computes."""

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph)
        self.amax: dict[str, float] = {}

    def run_node(self, node: Node, args: list[np.ndarray]) -> Any:
        results = super().run_node(node, args)
        for v, r in zip(node.outputs, results, strict=True):
            a = np.asarray(r)
            if v.type.dtype.is_float and a.size:
                finite = np.abs(a[np.isfinite(a)].astype(np.float64))
                self.amax[v.name] = float(finite.max()) if finite.size else 0.0
        return results


def activation_ranges(graph: Graph, inputs: Sequence[np.ndarray]) -> dict[str, float]:
    """{value name: largest finite |x|} of every floating value, running `graph` on `inputs`."""
    r = _Ranges(graph)
    r.run(*inputs)
    return r.amax
