"""The torch.export frontend: `export_module` (module, callable or ExportedProgram -> ExportedProgram)
and `from_exported` (ExportedProgram -> IR)."""

from __future__ import annotations

import inspect
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import ConstantArgument, InputKind, OutputKind
from torch.utils import _pytree as pytree

from dojoc.errors import CompileError
from dojoc.frontend.convert import Binding, convert
from dojoc.frontend.decompositions import decomposition_table
from dojoc.frontend.fold import fold_constants
from dojoc.ir import Graph, maybe_dump, verify


class _CallableModule(torch.nn.Module):
    """Wraps a plain function so torch.export can trace it (with the function's argument names)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _wrap_callable(fn: Callable[..., Any]) -> torch.nn.Module:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return _CallableModule(fn).eval()

    def forward(self: _CallableModule, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = inspect.Signature([self_param, *params])  # type: ignore[attr-defined]
    cls = type(getattr(fn, "__name__", "fn"), (_CallableModule,), {"forward": forward})
    return cls(fn).eval()


def check_eval_mode(model: torch.nn.Module) -> None:
    """CompileError unless the module and all its submodules are in eval mode."""
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        where = training[0] + (f" and {len(training) - 1} more" if len(training) > 1 else "")
        raise CompileError(f"the model is in training mode ({where}); call .eval() before dojoc.compile")


def export_module(model: Any, example_inputs: Any, example_kwargs: Mapping[str, Any] | None = None
                  ) -> ExportedProgram:
    """torch.export (non-strict) an nn.Module in eval mode, a plain callable, or pass an ExportedProgram
    through. `example_inputs` is a tuple of positional arguments (a single tensor is wrapped)."""
    if isinstance(model, ExportedProgram):
        return model
    if isinstance(model, torch.nn.Module):
        check_eval_mode(model)
        module = model
    elif callable(model):
        module = _wrap_callable(model)
    else:
        raise CompileError(f"cannot compile a {type(model).__name__}: pass an nn.Module, a callable or an "
                           "ExportedProgram")
    args = tuple(example_inputs) if isinstance(example_inputs, list | tuple) else (example_inputs,)
    try:
        with torch.no_grad():
            return torch.export.export(module, args, dict(example_kwargs or {}), strict=False)
    except CompileError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CompileError(f"torch.export failed: {type(e).__name__}: {first}") from e


def output_names(spec: pytree.TreeSpec) -> list[str]:
    """Names of the flattened outputs from their pytree paths (`last_hidden_state`, `out0`, ...)."""
    tree = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    names: list[str] = []
    for i, (path, _) in enumerate(pytree.tree_flatten_with_path(tree)[0]):
        base = re.sub(r"[^A-Za-z0-9_]+", "_", pytree.keystr(path)).strip("_")
        base = base if base and not base[0].isdigit() else f"out{base or i}"
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names


def dumps_spec(spec: pytree.TreeSpec | None) -> str | None:
    if spec is None:
        return None
    try:
        return pytree.treespec_dumps(spec)
    except Exception:  # a pytree type without a serialized name: keep the structure unknown
        return None


def from_exported(ep: ExportedProgram, *, name: str = "model", fold: bool = True) -> Graph:
    """Lower an ExportedProgram to IR: run dojoc's decompositions, lift parameters, buffers and constant
    tensors as real parameters, map user inputs in export's flattened order, record the pytree specs;
    then fold constants (unless fold=False) and verify."""
    try:
        with warnings.catch_warnings():  # torch's own deprecation noise from copying pytree specs
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            ep = ep.run_decompositions(decomposition_table())
    except Exception as e:
        raise CompileError(f"decomposing the exported program failed: {type(e).__name__}: {e}") from e
    sig = ep.graph_signature
    for spec in sig.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            target = spec.target or spec.arg
            raise CompileError(f"the model mutates {target} in forward ({spec.kind.name}); dojoc compiles "
                               "inference graphs: call .eval() and do not update buffers in forward")
    bindings = []
    flat = 0
    for spec in sig.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            value = spec.arg.value if isinstance(spec.arg, ConstantArgument) else None
            bindings.append(Binding("input", spec.arg.name, value, flat))
            flat += 1
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            assert spec.target is not None
            value = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
            bindings.append(Binding("param", spec.target, value))
        else:
            raise CompileError(f"input {spec.arg} of kind {spec.kind.name} is not supported")
    out_spec = ep.call_spec.out_spec
    names = output_names(out_spec) if out_spec is not None else None
    graph = convert(ep.graph_module, bindings, name=name, output_names=names)
    graph.in_spec, graph.out_spec = dumps_spec(ep.call_spec.in_spec), dumps_spec(out_spec)
    maybe_dump(graph, "frontend")
    return fold_constants(graph) if fold else verify(graph)


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Ctrl-C inside the block is taken when it ends: a KeyboardInterrupt raised while torch's C++ calls back
    into Python (export, decompositions) aborts the process (pybind11 cannot carry it through), so the
    interrupt is recorded and raised after. Only in the main thread, and only over Python's own handler."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    hit: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: hit.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if hit:
        raise KeyboardInterrupt


def from_module(model: Any, example_inputs: Sequence[Any] | Any, example_kwargs: Mapping[str, Any] | None = None,
                *, name: str | None = None, fold: bool = True) -> Graph:
    """`export_module` then `from_exported` (an interrupt is taken after them: `deferred_interrupt`)."""
    with deferred_interrupt():
        ep = export_module(model, example_inputs, example_kwargs)
        if name is None:
            inner = getattr(model, "fn", model)
            name = type(inner).__name__ if isinstance(inner, torch.nn.Module) else getattr(inner, "__name__", "model")
        return from_exported(ep, name=name, fold=fold)
