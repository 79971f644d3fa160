"""The lowering registry: ATen op overload -> a function that emits IR nodes for it.

A lowering is registered with `@register(torch.ops.aten.addmm.default, ...)` and called as
`fn(ctx, *args, **kwargs)` with the FX node's arguments, where FX nodes are replaced by what their own
lowerings returned (IR `Value`s, tuples of them, or Python numbers for shape arithmetic). It returns
the same kind of thing. A lowering that meets arguments it does not support raises `Unsupported(reason)`;
the converter collects those with the ops that have no lowering at all and reports them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from dojoc.ir import Graph, IRDType, Node, Op, TensorType, Value

Lowering = Callable[..., Any]
_REGISTRY: dict[Any, Lowering] = {}


class Unsupported(Exception):
    """Raised by a lowering for arguments (or dtypes) it cannot lower; the message says which."""


def register(*targets: Any) -> Callable[[Lowering], Lowering]:
    """Register a lowering for one or more op overloads (or Python callables such as operator.getitem)."""
    def deco(fn: Lowering) -> Lowering:
        for t in targets:
            if t in _REGISTRY:
                raise ValueError(f"{t} already has a lowering ({_REGISTRY[t].__name__})")
            _REGISTRY[t] = fn
        return fn
    return deco


def lookup(target: Any) -> Lowering | None:
    """The lowering of an FX call target, or None."""
    _load()
    return _REGISTRY.get(target)


def supported_ops() -> frozenset[Any]:
    """Every call target the frontend lowers (ATen overloads and a few Python operators), for the
    fallback partitioner of the torch.compile backend."""
    _load()
    return frozenset(_REGISTRY)


def _load() -> None:
    import dojoc.frontend.lowerings  # noqa: F401  (registers on import)


# -- dtypes -----------------------------------------------------------------------------------------

_TORCH_TO_IR = {torch.float32: IRDType.F32, torch.bfloat16: IRDType.BF16, torch.int32: IRDType.I32,
                torch.int64: IRDType.I64, torch.bool: IRDType.BOOL}
_IR_TO_TORCH = {v: k for k, v in _TORCH_TO_IR.items()}


def ir_dtype(dt: torch.dtype) -> IRDType:
    """The IR type of a torch dtype; Unsupported for dtypes the IR does not hold (f64, f16, ...)."""
    try:
        return _TORCH_TO_IR[dt]
    except KeyError:
        raise Unsupported(f"dtype {dt} (dojoc handles float32, bfloat16, int32, int64, bool)") from None


def torch_dtype(dt: IRDType) -> torch.dtype:
    return _IR_TO_TORCH[dt]


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A real tensor's values as a numpy array of the matching IR dtype (a copy, contiguous)."""
    t = t.detach().cpu().contiguous()
    dt = ir_dtype(t.dtype)
    if dt == IRDType.BF16:
        return t.view(torch.int16).numpy().view(dt.numpy).copy()
    return t.numpy().copy()


def meta_type(val: Any) -> TensorType:
    """The IR type of an FX node's meta['val'] (a FakeTensor with static sizes)."""
    shape = tuple(val.shape)
    if not all(isinstance(d, int) for d in shape):
        raise Unsupported(f"symbolic shape {list(shape)}; dojoc compiles each concrete shape separately")
    return TensorType(shape, ir_dtype(val.dtype))


# -- the context lowerings build with ---------------------------------------------------------------

class LowerCtx:
    """What a lowering sees: the graph being built, the FX node being lowered and helpers.

    Every node a lowering adds carries the FX node's source line; its name derives from the FX node.
    """

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.fx_node: torch.fx.Node | None = None
        self.source: str | None = None
        self.created: list[Node] = []

    # -- about the node being lowered
    @property
    def meta(self) -> Any:
        """The FX node's meta['val']: a FakeTensor, a tuple of them, or a number."""
        assert self.fx_node is not None
        return self.fx_node.meta.get("val")

    @property
    def out_type(self) -> TensorType:
        m = self.meta
        return meta_type(m[0] if isinstance(m, list | tuple) else m)

    @property
    def out_dtype(self) -> IRDType:
        return self.out_type.dtype

    # -- building
    def add(self, op: Op, inputs: Sequence[Value], attrs: dict[str, Any] | None = None) -> Node:
        assert self.fx_node is not None
        node = self.g.add(op, inputs, attrs, name=f"{self.fx_node.name}_{op.value}", source=self.source)
        self.created.append(node)
        return node

    def call(self, op: Op, *inputs: Value, **attrs: Any) -> Value:
        return self.add(op, inputs, attrs).output

    def const(self, value: bool | int | float, dtype: IRDType) -> Value:
        v = self.g.const(value, dtype, source=self.source)
        self.created.append(self.g.nodes[-1])
        return v

    def param(self, name: str, array: np.ndarray) -> Value:
        v = self.g.param(name, array, source=self.source)
        self.created.append(self.g.nodes[-1])
        return v

    def cast(self, v: Value, dtype: IRDType) -> Value:
        return v if v.type.dtype == dtype else self.call(Op.CAST, v, dtype=dtype)

    def tensor(self, x: Value | bool | int | float, dtype: IRDType) -> Value:
        """A value of the given dtype: a Value is cast, a Python number becomes a CONST."""
        if isinstance(x, Value):
            return self.cast(x, dtype)
        if isinstance(x, bool | int | float):
            return self.const(x, dtype)
        raise Unsupported(f"operand {x!r} of type {type(x).__name__}")

    def full(self, value: bool | int | float, shape: Sequence[int], dtype: IRDType) -> Value:
        c = self.const(value, dtype)
        return self.expand(c, tuple(shape))

    def reshape(self, v: Value, shape: Sequence[int]) -> Value:
        shape = tuple(int(s) for s in shape)
        if -1 in shape:
            known = int(np.prod([s for s in shape if s != -1]))
            shape = tuple(v.type.numel // max(known, 1) if s == -1 else s for s in shape)
        return v if shape == v.type.shape else self.call(Op.RESHAPE, v, shape=shape)

    def permute(self, v: Value, perm: Sequence[int]) -> Value:
        perm = tuple(int(p) % max(v.type.rank, 1) for p in perm)
        return v if perm == tuple(range(v.type.rank)) else self.call(Op.PERMUTE, v, perm=perm)

    def expand(self, v: Value, shape: Sequence[int]) -> Value:
        lead = len(shape) - v.type.rank
        shape = tuple(v.type.shape[i - lead] if s == -1 else int(s) for i, s in enumerate(shape))
        return v if shape == v.type.shape else self.call(Op.EXPAND, v, shape=shape)

    def finish(self, result: Any) -> Any:
        """Rename the node defining the result after the FX node, when the lowering created it last."""
        assert self.fx_node is not None
        if not self.created or self.g.nodes[-1] is not self.created[-1]:
            return result
        node = self.created[-1]
        flat = list(result) if isinstance(result, list | tuple) else [result]
        values = [v for v in flat if isinstance(v, Value)]
        if node.op in (Op.PARAM, Op.CONST) or not any(v in node.outputs for v in values):
            return result
        want = self.g.fresh_name(self.fx_node.name)
        if want == node.name:
            return result
        outs = tuple(Value(want if i == 0 else f"{want}.{i}", v.type) for i, v in enumerate(node.outputs))
        self.g.nodes[-1] = Node(want, node.op, node.inputs, node.attrs, outs, node.source)
        self.g.insert_name(want)
        rename = dict(zip(node.outputs, outs, strict=True))
        new = [rename.get(v, v) if isinstance(v, Value) else v for v in flat]
        if isinstance(result, Value):
            return new[0]
        return type(result)(new) if isinstance(result, tuple) else new


def norm_dim(d: int, rank: int) -> int:
    """Normalize a possibly negative dim."""
    r = max(rank, 1)
    if not -r <= d < r:
        raise Unsupported(f"dim {d} out of range for rank {rank}")
    return d % r
