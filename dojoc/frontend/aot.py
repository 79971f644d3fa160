"""The AOTAutograd frontend, for the torch.compile backend: an FX graph from dynamo -> IR.

`from_aot(gm, example_inputs)` traces `gm` with `aot_export_module` (inference, no joint graph) under
dojoc's decomposition table, so both frontends see the same ops. The module's own parameters and
buffers (get_attr in dynamo's graph) are frozen as IR parameters from their real values; placeholders
listed in `frozen_inputs` (dynamo lifts a module's parameters to graph inputs) are frozen too, from
`example_inputs`. The remaining placeholders are the user inputs, in order.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.fx
from torch._functorch.aot_autograd import aot_export_module
from torch.utils import _pytree as pytree

from dojoc.errors import CompileError
from dojoc.frontend.convert import Binding, convert
from dojoc.frontend.decompositions import decomposition_table
from dojoc.frontend.export import dumps_spec, output_names
from dojoc.frontend.fold import fold_constants
from dojoc.ir import Graph, maybe_dump, verify

_DYNAMO_PATH = re.compile(r"_(?:modules|parameters|buffers)_")


def dynamo_param_name(placeholder: str) -> str:
    """`L_self_modules_h_modules_0_parameters_weight_` -> `h.0.weight` (dynamo's lifted-parameter names)."""
    parts = _DYNAMO_PATH.split(placeholder.removeprefix("L_").removeprefix("l_").rstrip("_"))
    return ".".join(parts[1:]) if len(parts) > 1 else placeholder


def dynamo_frozen_inputs(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> list[int]:
    """Placeholders of a dynamo graph that are a module's parameters or buffers (dynamo lifts them to
    inputs): nn.Parameter values, or names that say `_parameters_` / `_buffers_`."""
    names = [str(n.target) for n in gm.graph.nodes if n.op == "placeholder"]
    return [i for i, (name, x) in enumerate(zip(names, example_inputs, strict=False))
            if isinstance(x, torch.nn.Parameter) or "_parameters_" in name or "_buffers_" in name]


class _Frozen(torch.nn.Module):
    """Calls gm with the frozen placeholders bound to buffers, so AOTAutograd lifts them as buffers."""

    def __init__(self, gm: torch.fx.GraphModule, frozen: dict[int, torch.Tensor], n: int) -> None:
        super().__init__()
        self.gm = gm
        self.n = n
        self.slots = sorted(frozen)
        for i, t in frozen.items():
            self.register_buffer(f"frozen_{i}", t.detach())

    def forward(self, *user: Any) -> Any:
        args: list[Any] = []
        it = iter(user)
        for i in range(self.n):
            args.append(getattr(self, f"frozen_{i}") if i in self.slots else next(it))
        # an fx.Interpreter (not gm's code) so that preserve_node_meta carries dynamo's stack traces over
        return tuple(pytree.tree_leaves(torch.fx.Interpreter(self.gm).run(*args)))


def from_aot(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], *,
             frozen_inputs: Collection[int] | None = None, name: str = "aot", fold: bool = True) -> Graph:
    """Lower a dynamo FX GraphModule to IR through AOTAutograd with dojoc's decomposition table.

    `frozen_inputs`: indices of placeholders to freeze as parameters (default: `dynamo_frozen_inputs`).
    The graph's outputs are flattened (pytree); `graph.out_spec` records their structure.
    """
    if frozen_inputs is None:
        frozen_inputs = dynamo_frozen_inputs(gm, example_inputs)
    placeholder_names = [str(n.target) for n in gm.graph.nodes if n.op == "placeholder"]
    frozen = {i: example_inputs[i] for i in frozen_inputs}
    user = [x for i, x in enumerate(example_inputs) if i not in frozen]
    module = _Frozen(gm, frozen, len(example_inputs)).eval()
    try:
        with torch.no_grad(), torch.fx.traceback.preserve_node_meta():
            traced, sig = aot_export_module(module, user, trace_joint=False, decompositions=decomposition_table())
    except Exception as e:
        raise CompileError(f"AOTAutograd tracing failed: {type(e).__name__}: {e}") from e
    assert isinstance(traced, torch.fx.GraphModule)
    fx_gm = traced
    named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    if sig.buffers_to_mutate:
        raise CompileError(f"the graph mutates buffers {sorted(sig.buffers_to_mutate.values())}; dojoc compiles "
                           "inference graphs")
    bindings: list[Binding] = []
    user_names = [n for n in fx_gm.graph.nodes if n.op == "placeholder"]
    user_placeholders = [p for i, p in enumerate(placeholder_names) if i not in frozen]
    flat = 0
    for node in user_names:
        if node.name in params:
            key = params[node.name]
            if key.startswith("frozen_"):
                pname = dynamo_param_name(placeholder_names[int(key.removeprefix("frozen_"))])
            else:
                pname = key.removeprefix("gm.")
            bindings.append(Binding("param", pname, named[key]))
        else:
            pname = user_placeholders[flat] if flat < len(user_placeholders) else f"arg{flat}"
            bindings.append(Binding("input", pname.removeprefix("L_").strip("_") or f"arg{flat}", None, flat))
            flat += 1
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    out_spec = pytree.tree_structure(out_node.args[0])
    graph = convert(fx_gm, bindings, name=name, output_names=output_names(out_spec))
    graph.out_spec = dumps_spec(out_spec)
    maybe_dump(graph, "frontend")
    return fold_constants(graph) if fold else verify(graph)
