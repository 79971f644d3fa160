"""The torch.compile backend: `torch.compile(model, backend="dojo", options={...})`.

Registered through the `torch_dynamo_backends` entry point, so no import is needed. Options:

- `machine`: a preset name, a TOML path or an `isa.machine.Machine` (default "d1");
- `precision`: "bf16" (default), "fp32" or "cfp8";
- `fallback` (default True): run the ops dojoc cannot compile eagerly, with a warning naming them; when
  False, raise `dojoc.UnsupportedOpsError` listing every unsupported op.

How a dynamo graph runs: compilation is lazy, at the first call with real tensors, once per concrete
signature (the shapes and dtypes of the tensors and the values of symbolic sizes, so a graph with
symbolic sizes is specialised per shape). A graph keeps the programs of its CACHED most recently used
signatures: a model called with ever new shapes (dynamo's dynamic batch dimension) does not accumulate
programs, and a signature evicted compiles again when it comes back. Parameters and buffers are frozen
from the real tensors dynamo passes; the compiled code is guarded on their identity and version
(`_version`, bumped by in-place updates), and recompiled when either changes. In grad mode (grad enabled
and an input or parameter that requires grad) the graph runs eagerly with a warning: training is not
supported yet.

With fallback, an unsupported op splits the graph (after AOTAutograd, so the partitioner sees the ATen ops
that `dojoc.frontend.supported_ops()` names): the supported parts are compiled and run on the emulator,
the rest runs eagerly. A part that the code generator cannot handle runs eagerly too. `dojoc.last_report()`
sums the reports of every part that ran on the emulator in the last call (across dynamo's graph breaks).
"""

from __future__ import annotations

import operator
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree

from dojoc.api import check_precision, generate, resolve_machine
from dojoc.errors import CompileError, UnsupportedOpsError
from dojoc.program import Program, last_report, set_last_report
from dojoc.report import Report
from isa.machine import Machine

Runner = Callable[[Sequence[Any]], tuple[Any, list[Report]]]

OPTIONS = ("machine", "precision", "fallback")


class FallbackWarning(UserWarning):
    """Part of a graph runs eagerly: unsupported ops, an uncompilable graph, or grad mode."""


@dataclass(frozen=True)
class BackendOptions:
    """The backend's validated options."""

    machine: Machine
    precision: str = "bf16"
    fallback: bool = True

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> BackendOptions:
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise CompileError(f"unknown option(s) {', '.join(unknown)} for backend 'dojo': use "
                               f"{', '.join(OPTIONS)}")
        fallback = opts.get("fallback", True)
        if not isinstance(fallback, bool):
            raise CompileError(f"option fallback must be True or False, not {fallback!r}")
        return cls(resolve_machine(opts.get("machine", "d1")), check_precision(opts.get("precision", "bf16")),
                   fallback)

    def report_options(self) -> dict[str, Any]:
        return {"frontend": "aot", "fallback": self.fallback}


def dojo_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], *,
                 options: Mapping[str, Any] | None = None, mode: str | None = None) -> Callable[..., Any]:
    """The torch.compile backend (`backend="dojo"`): returns a callable that compiles lazily, per concrete
    input signature, and runs on the emulator. `mode` is accepted and ignored."""
    return DojoGraph(gm, options)


def _is_resume(gm: torch.fx.GraphModule) -> bool:
    """Whether dynamo traced this graph from a resume function (the code after a graph break)."""
    reason = getattr(gm, "compile_subgraph_reason", None)
    stack = getattr(reason, "user_stack", None) or []
    return bool(stack) and str(getattr(stack[0], "name", "")).startswith("torch_dynamo_resume_in_")


def _signature_key(args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(("t", tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else ("v", type(a).__name__, a)
                 for a in args)


def _warn(message: str) -> None:
    warnings.warn(message, FallbackWarning, stacklevel=3)


CACHED = 8  # programs kept per dynamo graph, most recently used first (as dynamo's own recompile limit)


@dataclass
class _Entry:
    """The compiled form of one concrete signature, with the frozen tensors it is guarded on."""

    frozen: list[tuple[int, torch.Tensor, int]]  # (argument index, tensor, its _version)
    attrs: list[tuple[str, torch.Tensor, int]]  # get_attr tensors of dynamo's graph
    run: Runner

    def valid(self, args: Sequence[Any], gm: torch.fx.GraphModule) -> bool:
        return (all(args[i] is t and t._version == v for i, t, v in self.frozen)
                and all(_fetch(gm, name) is t and t._version == v for name, t, v in self.attrs))


def _fetch(gm: torch.nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class DojoGraph:
    """What the backend returns for one dynamo graph (see the module docstring)."""

    def __init__(self, gm: torch.fx.GraphModule, options: Mapping[str, Any] | None) -> None:
        self.gm = gm
        self.raw_options = options
        self.resume = _is_resume(gm)
        cid = str(gm.meta.get("dynamo_compile_id", "")) if hasattr(gm, "meta") else ""
        self.name = "dynamo_" + (re.sub(r"\W+", "_", cid).strip("_") or "graph")
        out = next(n for n in gm.graph.nodes if n.op == "output")
        self.out_spec = pytree.tree_structure(out.args[0])
        self._options: BackendOptions | None = None
        self._cache: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()

    @property
    def options(self) -> BackendOptions:
        if self._options is None:
            self._options = BackendOptions.parse(self.raw_options)
        return self._options

    def __call__(self, *args: Any) -> Any:
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            _warn("dojoc: training is not supported yet; running this graph eagerly (call the model under "
                  "torch.no_grad() or torch.inference_mode() to run it on the emulator)")
            if not self.resume:
                set_last_report(None)  # nothing of this call ran on the emulator
            return self.gm(*args)
        opts = self.options
        key = _signature_key(args)
        entry = self._cache.get(key)
        if entry is None or not entry.valid(args, self.gm):
            entry = self._compile(args, opts)
            self._cache[key] = entry
            while len(self._cache) > CACHED:  # the least recently used program goes
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        out, reports = entry.run(args)
        total = Report.sum(reports)
        previous = last_report()
        if self.resume and previous is not None:  # the same call, after a graph break
            if total is not None and previous.machine_hash == total.machine_hash \
                    and previous.precision == total.precision:
                total = previous + total
            elif total is None:
                total = previous
        set_last_report(total)
        return out

    # -- compiling ----------------------------------------------------------------------------------
    def _compile(self, args: Sequence[Any], opts: BackendOptions) -> _Entry:
        from dojoc.frontend.aot import dynamo_frozen_inputs

        tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        gm = specialize(self.gm, args)
        targs = [args[i] for i in tensor_pos]
        frozen = dynamo_frozen_inputs(gm, targs)
        guards = [(tensor_pos[i], targs[i], targs[i]._version) for i in frozen]
        attrs = [(str(n.target), t, t._version) for n in self.gm.graph.nodes if n.op == "get_attr"
                 for t in [_fetch(self.gm, str(n.target))] if isinstance(t, torch.Tensor)]
        runner = self._compile_tensors(gm, targs, frozen, opts)

        def run(call_args: Sequence[Any]) -> tuple[Any, list[Report]]:
            return runner([call_args[i] for i in tensor_pos])

        return _Entry(guards, attrs, run)

    def _compile_tensors(self, gm: torch.fx.GraphModule, targs: list[torch.Tensor], frozen: list[int],
                         opts: BackendOptions) -> Runner:
        try:
            prog = compile_part(gm, targs, frozen, opts, name=self.name)
        except UnsupportedOpsError as e:
            if not opts.fallback:
                raise
            return self._partitioned(gm, targs, frozen, opts, e)
        except CompileError as e:
            if not opts.fallback:
                raise
            _warn(f"dojoc could not compile this graph, running it eagerly: {str(e).splitlines()[0]}")
            return lambda a: (gm(*a), [])
        user = [i for i in range(len(targs)) if i not in set(frozen)]
        spec = self.out_spec

        def run(a: Sequence[Any]) -> tuple[Any, list[Report]]:
            flat, report = prog.run_flat(*[a[i] for i in user])
            return pytree.tree_unflatten(flat, spec), [report]

        return run

    def _partitioned(self, gm: torch.fx.GraphModule, targs: list[torch.Tensor], frozen: list[int],
                     opts: BackendOptions, error: UnsupportedOpsError) -> Runner:
        from dojoc.backend_partition import partition_and_compile

        runner, eager_ops = partition_and_compile(gm, targs, frozen, opts, error, name=self.name)
        if eager_ops:
            _warn(f"dojoc: {len(eager_ops)} op(s) not supported, running them eagerly: {', '.join(eager_ops)}")
        spec = self.out_spec

        def run(a: Sequence[Any]) -> tuple[Any, list[Report]]:
            flat, reports = runner(a)
            return pytree.tree_unflatten(list(flat), spec), reports

        return run


def compile_part(gm: torch.fx.GraphModule, targs: Sequence[torch.Tensor], frozen: Sequence[int],
                 opts: BackendOptions, *, name: str) -> Program:
    """One FX graph (dynamo's, or a partition of the ATen graph) -> Program, with the placeholders at
    `frozen` frozen as parameters."""
    from dojoc.frontend import from_aot
    from dojoc.ir import verify

    start = time.perf_counter()
    with torch.no_grad():
        graph = from_aot(gm, list(targs), frozen_inputs=list(frozen), name=name)
    verify(graph)
    lowered = generate(graph, opts.machine, opts.precision)
    return Program(lowered, graph, compile_seconds=time.perf_counter() - start, options=opts.report_options())


def specialize(gm: torch.fx.GraphModule, args: Sequence[Any]) -> torch.fx.GraphModule:
    """`gm` with its non-tensor placeholders (symbolic sizes and other scalars) replaced by the concrete
    values in `args`; `gm` itself when every placeholder is a tensor."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if all(isinstance(a, torch.Tensor) for a in args):
        return gm
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, Any] = {}
    values = dict(zip(placeholders, args, strict=True))
    for node in gm.graph.nodes:
        if node.op == "placeholder" and not isinstance(values[node], torch.Tensor):
            env[node] = values[node]
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    return torch.fx.GraphModule(gm, graph, class_name=type(gm).__name__)


# ops that only move or view data: a partition made of these alone is not worth a program
TRIVIAL = frozenset({
    operator.getitem, torch.ops.aten.view.default, torch.ops.aten.reshape.default,
    torch.ops.aten._unsafe_view.default, torch.ops.aten.permute.default, torch.ops.aten.t.default,
    torch.ops.aten.transpose.int, torch.ops.aten.expand.default, torch.ops.aten.slice.Tensor,
    torch.ops.aten.select.int, torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims,
    torch.ops.aten.unsqueeze.default, torch.ops.aten.alias.default, torch.ops.aten.clone.default,
    torch.ops.aten.detach.default,
})
