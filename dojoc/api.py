"""`dojoc.compile`: a PyTorch model -> a `Program` that runs on the emulated mesh.

Pipeline: frontend (torch.export, non-strict, then dojoc's decompositions, lowering to IR, folding) ->
`dojoc.ir.verify` -> `generate` (the graph passes and code generation: `dojoc.pipeline.compile_graph`)
-> `Program`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from dojoc.codegen.result import Lowered
from dojoc.errors import CompileError
from dojoc.ir import Graph
from dojoc.program import Program
from isa.machine import Machine
from isa.presets import load_machine

PRECISIONS = ("bf16", "fp32", "cfp8")


def check_precision(precision: Any) -> str:
    """The precision, or a CompileError naming the valid ones."""
    if precision not in PRECISIONS:
        raise CompileError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return str(precision)


def resolve_machine(machine: str | Machine | Any) -> Machine:
    """A Machine from a preset name, a .toml path or a Machine (MachineError otherwise)."""
    return load_machine(machine)


def generate(graph: Graph, machine: Machine, precision: str, calibration: Any = None,
             mapping: Any = None, search_budget: int | None = None) -> Lowered:
    """The graph passes and code generation (`dojoc.pipeline.compile_graph`); `calibration`, the user
    inputs in graph order, sets cfp8 activation biases; `mapping` (see `resolve_mapping`) gives decisions."""
    from dojoc.pipeline import compile_graph

    return compile_graph(graph, machine, precision, calibration, resolve_mapping(mapping), search_budget)


def resolve_mapping(mapping: Any) -> Any:
    """A `dojoc.Mapping` from a Mapping, a dict (its JSON form), a path to a JSON file, or None."""
    from pathlib import Path

    from dojoc.errors import MappingError
    from dojoc.mapping import Mapping as OpsMapping

    if mapping is None or isinstance(mapping, OpsMapping):
        return mapping
    if isinstance(mapping, dict):
        return OpsMapping.from_dict(mapping)
    if isinstance(mapping, (str, Path)):
        try:
            text = Path(mapping).read_text()
        except OSError as e:
            raise MappingError(f"cannot read the mapping {mapping}: {e.strerror}") from None
        return OpsMapping.from_json(text)
    raise MappingError(f"mapping must be a dojoc.Mapping, a dict or a JSON file path, not {type(mapping).__name__}")


def calibration_inputs(graph: Graph, example_inputs: Any, example_kwargs: Mapping[str, Any] | None) -> Any:
    """The example tensors as numpy arrays in the graph's input order (by each input's flat index)."""
    from torch.utils._pytree import tree_flatten

    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    flat, _ = tree_flatten((tuple(args), dict(example_kwargs or {})))
    producers = graph.producers()
    out = []
    for v in graph.inputs:
        x = flat[producers[v].attrs["flat_index"]]
        out.append(x.detach().float().numpy() if x.is_floating_point() else x.detach().numpy())
    return out


def compile(model: Any, example_inputs: Any, *, example_kwargs: Mapping[str, Any] | None = None,
            machine: str | Machine = "d1", precision: str = "bf16", mapping: Any = None,
            search_budget: int | None = None) -> Program:
    """Compile `model` for `machine` at `precision` and return a Program that runs on the emulator.

    - `model`: an `nn.Module` in eval mode (a module in training mode is a CompileError that says to call
      `.eval()`), a plain callable, or a `torch.export.ExportedProgram`;
    - `example_inputs`: a tuple of positional arguments (a single tensor is wrapped); `example_kwargs`:
      keyword arguments. Their shapes and dtypes are the program's: calling it with others is an InputError;
    - `machine`: a preset name (`dojoc machines` lists them), a TOML file path or an `isa.machine.Machine`;
    - `precision`: "bf16" (BF16 operands, FP32 accumulation), "fp32" or "cfp8";
    - `mapping`: decisions to take instead of the compiler's own (a `dojoc.Mapping`, its JSON dict, or a
      path to a JSON file from `Program.mapping.to_json()` / `dojoc compile --dump-mapping`), edited or not;
      ops it does not name are mapped by the compiler. An illegal decision is a MappingError naming the op.
    - `search_budget`: the most candidates the cost model prices per op (default
      `dojoc.codegen.context.SEARCH_BUDGET`); an op whose search it cuts short is named in `Program.mapping.notes`.

    Raises CompileError (and its subclasses UnsupportedOpsError, ShapeError, SramOverflowError) or
    MachineError; `Program.report` is set by the first call.
    """
    return compile_with_options(model, example_inputs, example_kwargs=example_kwargs, machine=machine,
                                precision=precision, options={"frontend": "export"}, mapping=mapping,
                                search_budget=search_budget)


def compile_with_options(model: Any, example_inputs: Any, *, example_kwargs: Mapping[str, Any] | None = None,
                         machine: str | Machine = "d1", precision: str = "bf16",
                         options: Mapping[str, Any] | None = None, mapping: Any = None,
                         search_budget: int | None = None) -> Program:
    """`compile`, recording `options` in the program's reports (the command line adds its own)."""
    from dojoc.frontend import from_exported, from_module
    from dojoc.ir import verify

    start = time.perf_counter()
    m = resolve_machine(machine)
    check_precision(precision)
    if isinstance(model, torch.export.ExportedProgram):
        graph = from_exported(model)
    elif isinstance(model, torch.nn.Module) or callable(model):
        if example_inputs is None:
            example_inputs = ()
        graph = from_module(model, example_inputs, example_kwargs)
    else:
        raise CompileError(f"cannot compile a {type(model).__name__}: pass an nn.Module (in eval mode), a "
                           "callable or a torch.export.ExportedProgram")
    verify(graph)
    calibration = None
    if precision == "cfp8" and not isinstance(model, torch.export.ExportedProgram):
        calibration = calibration_inputs(graph, example_inputs, example_kwargs)
    lowered = generate(graph, m, precision, calibration, mapping, search_budget)
    return Program(lowered, graph, compile_seconds=time.perf_counter() - start, options=options)

