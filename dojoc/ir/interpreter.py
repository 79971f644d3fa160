"""Execute an IR graph in numpy: the reference the emulator and the code generator are checked against.

Like `torch.fx.Interpreter`, it is meant to be subclassed: `run_node` dispatches each node to one
method per op category (`unary`, `binary`, `contraction`, ...), each of which defaults to the op
table's numpy reference (`reference`). Override a category to change the arithmetic (say, round to
bf16 after every op), or `run_node` to observe every value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dojoc.errors import CompileError, InputError
from dojoc.ir import epilogue
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.ops import Op
from dojoc.ir.table import op_def
from dojoc.ir.types import IRDType, TensorType

Arrays = tuple[np.ndarray, ...]


class Interpreter:
    """Runs a graph on numpy arrays. `run(*inputs)` returns the flat outputs; `env` keeps every value
    of the last run when `keep_env=True`."""

    def __init__(self, graph: Graph, *, keep_env: bool = False) -> None:
        self.graph = graph
        self.keep_env = keep_env
        self.env: dict[Value, np.ndarray] = {}
        self._inputs: dict[Value, np.ndarray] = {}

    # -- driving ----------------------------------------------------------------------------------

    def run(self, *inputs: Any) -> list[np.ndarray]:
        """Run the graph on the user inputs (in graph.inputs order); return the outputs in order (copies)."""
        g = self.graph
        if len(inputs) != len(g.inputs):
            raise InputError(f"graph {g.name} takes {len(g.inputs)} input(s) "
                             f"({', '.join(repr(v) for v in g.inputs)}), got {len(inputs)}")
        self._inputs = {v: self._check_input(v, x) for v, x in zip(g.inputs, inputs, strict=True)}
        remaining = _last_uses(g) if not self.keep_env else {}
        env: dict[Value, np.ndarray] = {}
        self.env = env
        outputs = set(g.outputs)
        for i, node in enumerate(g.nodes):
            results = self.run_node(node, [env[v] for v in node.inputs])
            env.update(zip(node.outputs, results, strict=True))
            for v in remaining.get(i, ()):
                if v not in outputs:
                    env.pop(v, None)
        return [np.array(env[v], copy=True) for v in g.outputs]  # never a view of a parameter or input

    def run_node(self, node: Node, args: list[np.ndarray]) -> Arrays:
        """Evaluate one node on its input arrays; returns arrays of exactly its output types."""
        method = getattr(self, node.kind.value)
        try:
            results = method(node, args)
        except CompileError:
            raise
        except Exception as e:  # a reference that fails is a bug of the IR or of a pass: say where
            raise node.error(f"interpreting {node.op} failed: {type(e).__name__}: {e}") from e
        if not isinstance(results, tuple):
            results = (results,)
        return tuple(_conform(node, v.type, r) for v, r in zip(node.outputs, results, strict=True))

    def _check_input(self, v: Value, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if tuple(arr.shape) != v.type.shape or arr.dtype != v.type.dtype.numpy:
            raise InputError(f"input {v.name} must be {v.type}, got {arr.dtype}{list(arr.shape)}")
        return arr

    # -- one method per op category ----------------------------------------------------------------

    def source(self, node: Node, args: list[np.ndarray]) -> np.ndarray:
        if node.op == Op.INPUT:
            return self._inputs[node.output]
        if node.op == Op.PARAM:
            return self.graph.parameters[node.attrs["name"]]
        return np.asarray(node.attrs["value"], dtype=node.attrs["dtype"].numpy)

    def unary(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def binary(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def ternary(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def contraction(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def reduction(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def normalization(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def attention(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def pooling(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def indexing(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def movement(self, node: Node, args: list[np.ndarray]) -> Any:
        return self.reference(node, args)

    def reference(self, node: Node, args: list[np.ndarray]) -> Any:
        """The op table's numpy semantics; bf16 operands are widened to float32 first. An op with an
        epilogue runs on its own inputs, then each step (`dojoc.ir.epilogue.apply`) on its extra inputs,
        rounding to the output type after each, as the unfused ops did."""
        wide = [_widen(a) for a in args]
        steps = epilogue.steps_of(node.attrs)
        if not steps:
            return op_def(node.op).ref(wide, node.attrs)
        n = len(wide) - epilogue.extra_count(steps)
        t = node.outputs[0].type

        def rnd(x: np.ndarray) -> np.ndarray:  # (a row_max step changes the shape: checked at the end)
            return _widen(_conform(node, TensorType(np.shape(x), t.dtype), x))

        out = epilogue.apply(rnd(op_def(node.op).ref(wide[:n], node.attrs)), wide[n:], steps, rnd)
        _conform(node, t, out)
        return out


def _widen(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == IRDType.BF16.numpy else a


def _conform(node: Node, t: TensorType, r: Any) -> np.ndarray:
    arr = np.asarray(r)
    if arr.dtype != t.dtype.numpy:
        with np.errstate(invalid="ignore", over="ignore"):
            arr = arr.astype(t.dtype.numpy)
    if tuple(arr.shape) != t.shape:
        raise node.error(f"reference of {node.op} gave shape {list(arr.shape)}, the shape rule says {t}")
    return arr


def _last_uses(g: Graph) -> dict[int, list[Value]]:
    """node index -> values whose last reader is that node (freed after it runs)."""
    last: dict[Value, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            last[v] = i
    out: dict[int, list[Value]] = {}
    for v, i in last.items():
        out.setdefault(i, []).append(v)
    return out


def interpret(graph: Graph, *inputs: Any) -> list[np.ndarray]:
    """Run a graph with the default Interpreter; returns the flat outputs."""
    return Interpreter(graph).run(*inputs)


def evaluate(node: Node, args: Sequence[np.ndarray], graph: Graph | None = None) -> Arrays:
    """Evaluate a single non-input node on concrete arrays (constant folding uses this)."""
    return Interpreter(graph or Graph()).run_node(node, list(args))
