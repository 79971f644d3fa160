"""The IR graph: `Value`s produced by `Node`s in topological order, parameters held as numpy arrays.

Nodes and values are frozen; a pass builds new nodes (`Node.with_inputs`, `Graph.replace_node`) or a new
graph. `Graph` is also the builder: `add` infers output types with the op's shape rule, so every node
it creates is well typed, and `verify` checks the whole graph.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dojoc.errors import CompileError, ShapeError
from dojoc.ir.ops import Attrs, Op, OpKind
from dojoc.ir.table import op_def
from dojoc.ir.types import IRDType, TensorType


@dataclass(frozen=True, eq=False)
class Value:
    """An SSA value: a tensor of a static type, defined once by one node. Compared by identity."""

    name: str
    type: TensorType

    def __str__(self) -> str:
        return f"%{self.name}"

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(frozen=True, eq=False)
class Node:
    """One op applied to input values, defining its output values.

    `source` is the model's `file:line` the node comes from (None when unknown); `name` is unique in
    the graph and is also the name of the first output.
    """

    name: str
    op: Op
    inputs: tuple[Value, ...]
    attrs: Attrs
    outputs: tuple[Value, ...]
    source: str | None = None

    @property
    def kind(self) -> OpKind:
        return op_def(self.op).kind

    @property
    def output(self) -> Value:
        """The single output (an error for multi-output nodes)."""
        if len(self.outputs) != 1:
            raise ValueError(f"node {self.name} ({self.op}) has {len(self.outputs)} outputs")
        return self.outputs[0]

    def signature(self) -> str:
        """`(f32[2,3], f32[3]) -> f32[2,3]`, for messages."""
        outs = ", ".join(str(v.type) for v in self.outputs)
        return f"({', '.join(str(v.type) for v in self.inputs)}) -> {outs}"

    def with_inputs(self, inputs: Sequence[Value]) -> Node:
        """The same node (same outputs) reading other values of the same types."""
        return replace(self, inputs=tuple(inputs))

    def error(self, message: str, cls: type[CompileError] = CompileError) -> CompileError:
        """An error naming this node, its shapes and its source line."""
        return cls(message, node=f"%{self.name} = {self.op}", shapes=self.signature(), source=self.source)


_NAME_RE = re.compile(r"[^A-Za-z0-9_]+")


@dataclass
class Graph:
    """A whole program: nodes in topological order, user inputs, parameters and outputs.

    - `inputs`: the INPUT nodes' values, in export's flattened order of the tensor user inputs;
    - `parameters`: name -> numpy array, the real values of weights, buffers and folded constants,
      read by PARAM nodes;
    - `outputs` with `output_names`; `in_spec`/`out_spec`: torch pytree specs as JSON strings
      (`torch.utils._pytree.treespec_dumps`), so a runtime can take eager's argument structure and
      rebuild eager's output structure; `baked_inputs`: non-tensor user inputs (flat index -> value)
      that were specialised at export;
    - `fusion_notes`: node name -> why the `fuse` pass did not fuse that op into the op before it (code
      generation copies them into the mapping, so `--explain` shows them).
    """

    name: str = "graph"
    nodes: list[Node] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    parameters: dict[str, np.ndarray] = field(default_factory=dict)
    in_spec: str | None = None
    out_spec: str | None = None
    baked_inputs: dict[int, Any] = field(default_factory=dict)
    fusion_notes: dict[str, str] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set, repr=False)

    # -- building ---------------------------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        """A node name not yet used in this graph, derived from base."""
        base = _NAME_RE.sub("_", base).strip("_") or "v"
        if base[0].isdigit():
            base = "v" + base
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        return name

    def add(self, op: Op, inputs: Sequence[Value] = (), attrs: Mapping[str, Any] | None = None, *,
            name: str | None = None, source: str | None = None) -> Node:
        """Append a node; its output types come from the op's shape rule (ShapeError names the node)."""
        d = op_def(op)
        a = d.normalize_attrs(attrs)
        problem = d.check_attrs(a)
        lo, hi = d.arity
        if problem is None and not (lo <= len(inputs) and (hi is None or len(inputs) <= hi)):
            problem = f"takes {lo}..{'' if hi is None else hi} inputs, got {len(inputs)}"
        node_name = self.fresh_name(name or op.value)
        sig = f"({', '.join(str(v.type) for v in inputs)})"
        if problem is not None:
            raise CompileError(f"{op}: {problem}", node=f"%{node_name}", shapes=sig, source=source)
        try:
            types = d.shape([v.type for v in inputs], a)
        except ShapeError as e:
            raise ShapeError(f"{op}: {e}", node=f"%{node_name}", shapes=sig, source=source) from None
        outs = tuple(Value(node_name if i == 0 else f"{node_name}.{i}", t) for i, t in enumerate(types))
        node = Node(node_name, op, tuple(inputs), a, outs, source)
        self._names.add(node_name)
        self.nodes.append(node)
        return node

    def call(self, op: Op, *inputs: Value, name: str | None = None, source: str | None = None,
             **attrs: Any) -> Value:
        """`add` for single-output ops, returning the output value."""
        return self.add(op, inputs, attrs, name=name, source=source).output

    def input(self, name: str, type: TensorType, flat_index: int | None = None) -> Value:
        """Append a user input (after the existing ones)."""
        fi = len(self.inputs) if flat_index is None else flat_index
        attrs = {"name": name, "shape": type.shape, "dtype": type.dtype, "flat_index": fi}
        v = self.add(Op.INPUT, (), attrs, name=name).output
        self.inputs.append(v)
        return v

    def param(self, name: str, array: np.ndarray, *, source: str | None = None) -> Value:
        """Register a parameter array (renamed if the name is taken) and return its PARAM node's value."""
        array = np.ascontiguousarray(array)
        key, i = name, 0
        while key in self.parameters:
            i += 1
            key = f"{name}_{i}"
        self.parameters[key] = array
        t = TensorType.of(array)
        attrs = {"name": key, "shape": t.shape, "dtype": t.dtype}
        return self.add(Op.PARAM, (), attrs, name=key, source=source).output

    def const(self, value: bool | int | float, dtype: IRDType, *, source: str | None = None) -> Value:
        """A scalar constant of the given dtype (the value is converted to the dtype's Python type)."""
        if dtype == IRDType.BOOL:
            value = bool(value)
        elif dtype.is_int:
            value = int(value)
        else:
            value = float(value)
        return self.call(Op.CONST, name="c", source=source, value=value, dtype=dtype)

    def set_outputs(self, values: Sequence[Value], names: Sequence[str] | None = None) -> None:
        """Declare the graph's outputs (names default to out0, out1, ...)."""
        self.outputs = list(values)
        self.output_names = list(names) if names is not None else [f"out{i}" for i in range(len(values))]

    # -- queries ----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def producers(self) -> dict[Value, Node]:
        """value -> the node that defines it."""
        return {v: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[Value, list[Node]]:
        """value -> the nodes that read it (in order; a node reading a value twice is listed twice)."""
        out: dict[Value, list[Node]] = {v: [] for n in self.nodes for v in n.outputs}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def find(self, op: Op) -> list[Node]:
        """The nodes of one op, in order."""
        return [n for n in self.nodes if n.op == op]

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op (sources excluded)."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            if n.kind != OpKind.SOURCE:
                counts[n.op.value] = counts.get(n.op.value, 0) + 1
        return counts

    # -- rewriting --------------------------------------------------------------------------------

    def replace_uses(self, mapping: Mapping[Value, Value]) -> None:
        """Make every reader of a key (nodes and outputs) read its value instead; types must match."""
        for old, new in mapping.items():
            if old.type != new.type:
                raise ShapeError(f"cannot replace {old!r} by {new!r}: types differ")
        if not mapping:
            return
        self.nodes = [n.with_inputs([mapping.get(v, v) for v in n.inputs])
                      if any(v in mapping for v in n.inputs) else n for n in self.nodes]
        self.outputs = [mapping.get(v, v) for v in self.outputs]

    def eliminate_dead_code(self) -> int:
        """Remove nodes none of whose outputs is used (inputs stay) and unused parameters; the count removed."""
        live: set[Value] = set(self.outputs)
        keep: list[Node] = []
        for n in reversed(self.nodes):
            if n.op == Op.INPUT or any(v in live for v in n.outputs):
                keep.append(n)
                live.update(n.inputs)
        removed = len(self.nodes) - len(keep)
        self.nodes = keep[::-1]
        used = {n.attrs["name"] for n in self.nodes if n.op == Op.PARAM}
        self.parameters = {k: v for k, v in self.parameters.items() if k in used}
        self._names = {n.name for n in self.nodes}
        return removed

    def copy(self) -> Graph:
        """A shallow copy: new node list and dicts, shared (immutable) nodes and parameter arrays."""
        return replace(self, nodes=list(self.nodes), inputs=list(self.inputs), outputs=list(self.outputs),
                       output_names=list(self.output_names), parameters=dict(self.parameters),
                       baked_inputs=dict(self.baked_inputs), fusion_notes=dict(self.fusion_notes),
                       _names=set(self._names))

    def insert_name(self, name: str) -> None:
        """Reserve a node name (for passes that build nodes by hand)."""
        self._names.add(name)

    def param_bytes(self) -> int:
        return sum(a.nbytes for a in self.parameters.values())

    def signature(self) -> dict[str, Any]:
        """JSON-able description of the inputs and outputs (names, shapes, dtypes, pytree specs)."""
        return {
            "inputs": [{"name": n.attrs["name"], "shape": list(n.output.type.shape),
                        "dtype": n.output.type.dtype.value, "flat_index": n.attrs["flat_index"]}
                       for n in self.nodes if n.op == Op.INPUT],
            "outputs": [{"name": name, "shape": list(v.type.shape), "dtype": v.type.dtype.value}
                        for name, v in zip(self.output_names, self.outputs, strict=False)],
            "in_spec": json.loads(self.in_spec) if self.in_spec else None,
            "out_spec": json.loads(self.out_spec) if self.out_spec else None,
            "baked_inputs": {str(k): v for k, v in self.baked_inputs.items()},
        }

    def __str__(self) -> str:
        from dojoc.ir.printer import format_graph
        return format_graph(self)
