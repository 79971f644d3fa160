"""The backend's fallback: split a graph with unsupported ops into parts that run on the emulator and
parts that run eagerly.

The dynamo graph is traced once through AOTAutograd (dojoc's decomposition table, parameters frozen), so
the partitioner sees the ATen ops that `dojoc.frontend.supported_ops()` names. Unsupported nodes are the
ops with no lowering plus the ones the frontend rejected for their arguments (matched by op and shapes
from the UnsupportedOpsError). `CapabilityBasedPartitioner` groups the rest into fused submodules; each
is compiled (`compile_part`) and swapped for a module that runs its program; a part the code generator
cannot handle stays eager.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner, Partition
from torch.fx.passes.operator_support import OperatorSupport
from torch.utils import _pytree as pytree

from dojoc.errors import CompileError, UnsupportedOpsError
from dojoc.report import Report

if TYPE_CHECKING:
    from dojoc.backend import BackendOptions


class _Support(OperatorSupport):
    def __init__(self, unsupported: set[torch.fx.Node]) -> None:
        super().__init__()
        self.unsupported = unsupported

    def is_node_supported(self, submodules: Mapping[str, torch.nn.Module], node: torch.fx.Node) -> bool:
        return node.op == "call_function" and node not in self.unsupported


class _Part(torch.nn.Module):
    """Runs a compiled part: drops its frozen arguments, runs the program, records the report."""

    def __init__(self, program: Any, frozen: set[int], out_spec: pytree.TreeSpec, reports: list[Report]) -> None:
        super().__init__()
        self.program = program
        self.frozen = frozen
        self.out_spec = out_spec
        self.reports = reports

    def forward(self, *args: Any) -> Any:
        flat, report = self.program.run_flat(*[a for i, a in enumerate(args) if i not in self.frozen])
        self.reports.append(report)
        return pytree.tree_unflatten(flat, self.out_spec)


def _op_name(node: torch.fx.Node) -> str:
    if isinstance(node.target, torch._ops.OpOverload):
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def unsupported_nodes(gm: torch.fx.GraphModule, error: UnsupportedOpsError | None) -> set[torch.fx.Node]:
    """Nodes of an ATen graph that the frontend cannot lower: no lowering, or rejected (from `error`),
    and the getitems of such nodes."""
    from dojoc.frontend import supported_ops
    from dojoc.frontend.convert import signature_of

    supported = supported_ops()
    rejected = [(op, shapes) for op, shapes, _ in (error.ops if error is not None else [])]
    bad: set[torch.fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node)
        if node.target not in supported:
            bad.add(node)
        elif node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node) and node.args[0] in bad:
            bad.add(node)
        elif any((op == name or op.startswith(name + " (")) and shapes == signature_of(node)
                 for op, shapes in rejected):
            bad.add(node)
    return bad


def _worth_compiling(part: Partition) -> bool:
    from dojoc.backend import TRIVIAL

    return any(n.op == "call_function" and n.target not in TRIVIAL for n in part.nodes)


def partition_and_compile(gm: torch.fx.GraphModule, targs: list[torch.Tensor], frozen: list[int],
                          opts: BackendOptions, error: UnsupportedOpsError, *, name: str
                          ) -> tuple[Any, list[str]]:
    """Returns (runner, names of the ops that run eagerly). `runner(targs)` -> (flat outputs, reports)."""
    from torch._functorch.aot_autograd import aot_export_module

    from dojoc.backend import compile_part
    from dojoc.frontend import decomposition_table
    from dojoc.frontend.aot import _Frozen

    module = _Frozen(gm, {i: targs[i] for i in frozen}, len(targs)).eval()
    user = [x for i, x in enumerate(targs) if i not in set(frozen)]
    try:
        with torch.no_grad():
            traced, sig = aot_export_module(module, user, trace_joint=False, decompositions=decomposition_table())
    except Exception as e:
        raise CompileError(f"AOTAutograd tracing failed: {type(e).__name__}: {e}") from e
    assert isinstance(traced, torch.fx.GraphModule)
    buffers = dict(module.named_buffers())
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    param_of = {n: buffers[lifted[n.name]] for n in placeholders if n.name in lifted}
    user_nodes = [n for n in placeholders if n not in param_of]

    bad = unsupported_nodes(traced, error)
    eager_ops = sorted({_op_name(n) for n in bad if n.target is not operator.getitem})
    partitioner = CapabilityBasedPartitioner(traced, _Support(bad), allows_single_node_partition=True)
    parts = [p for p in partitioner.propose_partitions() if _worth_compiling(p)]
    fused = partitioner.fuse_partitions(parts)

    def feed(a: Sequence[torch.Tensor]) -> list[Any]:
        values = dict(param_of)
        values.update(zip(user_nodes, [a[i] for i in range(len(targs)) if i not in set(frozen)], strict=True))
        return [values[n] for n in placeholders]

    # the example inputs of every part, from one eager run of the fused graph
    calls = {n.target: n for n in fused.graph.nodes if n.op == "call_module"}
    captured: dict[str, tuple[Any, ...]] = {}

    class Capture(torch.fx.Interpreter):
        def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
            captured[str(target)] = args
            return super().call_module(target, args, kwargs)

    with torch.no_grad():
        Capture(fused).run(*feed(targs))
    reports: list[Report] = []
    for target, call in calls.items():
        sub = getattr(fused, str(target))
        sub_args = list(captured[str(target)])
        frozen_pos = [i for i, a in enumerate(call.args) if a in param_of]
        try:
            prog = compile_part(sub, sub_args, frozen_pos, opts, name=f"{name}_{target}")
        except CompileError as e:  # e.g. an op the code generator cannot handle yet: this part stays eager
            ops = e.ops if isinstance(e, UnsupportedOpsError) else [(str(e).splitlines()[0], "", "")]
            eager_ops += sorted({op.split(" (")[0] for op, _, _ in ops} - set(eager_ops))
            continue
        out = next(n for n in sub.graph.nodes if n.op == "output")
        setattr(fused, str(target), _Part(prog, set(frozen_pos), pytree.tree_structure(out.args[0]), reports))

    def run(a: Sequence[torch.Tensor]) -> tuple[Any, list[Report]]:
        reports.clear()
        flat = fused(*feed(a))
        return flat, list(reports)

    return run, eager_ops
