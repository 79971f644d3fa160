"""FX graph -> IR graph, shared by both frontends.

The caller says what each placeholder is (`Binding`): a user input, or a parameter with its real
tensor. Every call node goes through the lowering registry. Unsupported ops (no lowering, or a lowering
that raised `Unsupported`) are collected in one pass, and raised together as UnsupportedOpsError;
nodes that depend on them are skipped, not reported. Each lowering's result is checked against FX's
own types (meta['val']), so a lowering bug is a CompileError at the node that has it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from dojoc.errors import CompileError, UnsupportedOpsError
from dojoc.frontend.registry import LowerCtx, Unsupported, lookup, meta_type, to_numpy
from dojoc.ir import Graph, TensorType, Value


@dataclass(frozen=True)
class Binding:
    """What one placeholder of the FX graph is.

    kind "input": a user input, `name` its name, `flat_index` its position among the flattened user
    inputs; a non-tensor user input is baked in with `value`. kind "param": a parameter, buffer or
    constant tensor named `name` (its state-dict key) with real values `value`.
    """

    kind: str
    name: str
    value: Any = None
    flat_index: int = 0


class _Poison:
    """Stands for the result of an op that could not be lowered."""


_POISON = _Poison()
_TORCH_DIR = os.path.dirname(torch.__file__)
_DOJOC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_of(node: torch.fx.Node) -> str | None:
    """`file:line` of the innermost frame of the node's stack trace outside torch itself."""
    trace = node.meta.get("stack_trace")
    if not trace:
        return None
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    if not frames:
        return None
    outside = [f for f in frames if not f[0].startswith((_TORCH_DIR, _DOJOC_DIR, "<"))]
    path, line = (outside or frames)[-1]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    else:
        try:
            rel = os.path.relpath(path)
            path = rel if not rel.startswith("..") else path
        except ValueError:
            pass
    return f"{path}:{line}"


def _describe(val: Any) -> str:
    if isinstance(val, torch.Tensor):
        try:
            return str(meta_type(val))
        except Unsupported:
            return f"{str(val.dtype).replace('torch.', '')}{list(val.shape)}"
    if isinstance(val, list):
        return "[" + ", ".join(_describe(v) for v in val) + "]"
    if isinstance(val, tuple):
        return "(" + ", ".join(_describe(v) for v in val) + ")"
    return repr(val)


def signature_of(node: torch.fx.Node) -> str:
    """`(f32[2,3], 1) -> f32[2,3]` from FX meta, for messages."""
    args = [a.meta.get("val") if isinstance(a, torch.fx.Node) else a for a in node.args]
    args = [[x.meta.get("val") if isinstance(x, torch.fx.Node) else x for x in a] if isinstance(a, list | tuple)
            else a for a in args]
    return f"({', '.join(_describe(a) for a in args)}) -> {_describe(node.meta.get('val'))}"


def _check_result(node: torch.fx.Node, result: Any, meta: Any) -> None:
    if isinstance(result, Value):
        if not isinstance(meta, torch.Tensor):
            return
        want = meta_type(meta)
        if result.type != want:
            raise CompileError(f"lowering of {node.target} produced {result.type} but torch says {want} "
                               "(a dojoc bug)", node=node.name, shapes=signature_of(node), source=source_of(node))
    elif isinstance(result, list | tuple) and isinstance(meta, list | tuple):
        for r, m in zip(result, meta, strict=False):
            _check_result(node, r, m)


def convert(gm: torch.fx.GraphModule, bindings: Sequence[Binding], *, name: str = "graph",
            output_names: Sequence[str] | None = None) -> Graph:
    """Lower an FX graph of ATen ops to IR. `bindings` has one entry per placeholder, in order."""
    g = Graph(name)
    ctx = LowerCtx(g)
    env: dict[torch.fx.Node, Any] = {}
    unsupported: list[tuple[str, str, str]] = []
    shared: dict[int, Value] = {}  # tied weights: one parameter for one tensor
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(bindings):
        raise CompileError(f"{len(placeholders)} placeholders but {len(bindings)} bindings")
    binding = dict(zip(placeholders, bindings, strict=True))
    outputs: list[Any] = []

    for node in gm.graph.nodes:
        ctx.fx_node, ctx.source, ctx.created = node, source_of(node), []
        if node.op == "placeholder":
            b = binding[node]
            if b.kind == "param":
                env[node] = _param(ctx, b.name, b.value, shared)
            elif isinstance(node.meta.get("val"), torch.Tensor):
                try:
                    env[node] = g.input(b.name, meta_type(node.meta["val"]), b.flat_index)
                except Unsupported as e:
                    raise CompileError(f"user input {b.name}: {e}") from None
            else:
                env[node] = b.value if b.value is not None else node.meta.get("val")
                g.baked_inputs[b.flat_index] = _jsonable(env[node])
        elif node.op == "get_attr":
            env[node] = _param(ctx, str(node.target), _fetch_attr(gm, str(node.target)), shared)
        elif node.op == "call_function":
            env[node] = _lower(ctx, node, env, unsupported)
        elif node.op == "output":
            outputs = list(torch.fx.node.map_arg(node.args[0], lambda n: env[n]))  # type: ignore[arg-type]
        else:
            raise CompileError(f"FX node kind {node.op} ({node.target}) is not expected after export")
    if unsupported:
        raise UnsupportedOpsError(unsupported)
    for i, v in enumerate(outputs):
        if not isinstance(v, Value):
            raise CompileError(f"output {i} is {v!r}, not a tensor; dojoc returns tensors only")
    g.set_outputs(outputs, output_names)
    return g


def _lower(ctx: LowerCtx, node: torch.fx.Node, env: dict[torch.fx.Node, Any],
           unsupported: list[tuple[str, str, str]]) -> Any:
    args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: env[n])
    flat = [env[n] for n in node.all_input_nodes]
    if any(v is _POISON for v in flat):
        return _POISON
    missing = [n for n in node.all_input_nodes if env[n] is None and isinstance(n.meta.get("val"), torch.Tensor)]
    fn = lookup(node.target)
    try:
        if missing:
            raise Unsupported(f"uses {missing[0].name}, an output dojoc does not compute")
        if fn is None:
            raise Unsupported("")
        result = fn(ctx, *args, **kwargs)
        _check_result(node, result, node.meta.get("val"))
    except Unsupported as e:
        unsupported.append((_op_name(node) + (f" ({e})" if str(e) else ""), signature_of(node),
                            source_of(node) or ""))
        return _POISON
    except CompileError:
        raise
    except Exception as e:  # a lowering that breaks is a dojoc bug: say where
        raise CompileError(f"lowering {_op_name(node)} failed ({type(e).__name__}: {e}); this is a dojoc bug",
                           node=node.name, shapes=signature_of(node), source=source_of(node)) from e
    return ctx.finish(result)


def _op_name(node: torch.fx.Node) -> str:
    if isinstance(node.target, torch._ops.OpOverload):
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _param(ctx: LowerCtx, name: str, value: Any, shared: dict[int, Value]) -> Value:
    if not isinstance(value, torch.Tensor):
        raise CompileError(f"parameter {name} is a {type(value).__name__}, not a tensor")
    key = id(value)
    if key in shared:
        return shared[key]
    try:
        arr = to_numpy(value)
    except Unsupported as e:
        raise CompileError(f"parameter {name}: {e}; convert the model with .float()") from None
    v = ctx.g.param(name, arr, source=None)
    shared[key] = v
    return v


def _fetch_attr(gm: torch.fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _jsonable(v: Any) -> Any:
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return repr(v)


def placeholder_type(node: torch.fx.Node) -> TensorType | None:
    """The IR type of a placeholder, or None for non-tensor placeholders."""
    val = node.meta.get("val")
    return meta_type(val) if isinstance(val, torch.Tensor) else None
