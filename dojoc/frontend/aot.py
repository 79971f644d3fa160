"""The AOTAutograd frontend, for the torch.compile backend: an FX graph from dynamo -> IR.

`from_aot(gm, example_inputs)` traces `gm` with `aot_export_module` (inference, no joint graph) under
dojoc's decomposition table, so both frontends see the same ops. The module's own parameters and
buffers (get_attr in dynamo's graph) are frozen as IR parameters from their real values; placeholders
listed in `frozen_inputs` (dynamo lifts a module's parameters to graph inputs) are frozen too, from
`example_inputs`. The remaining placeholders are the user inputs, in order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.fx
from torch._functorch.aot_autograd import aot_export_module

from dojoc.errors import CompileError
from dojoc.frontend.convert import Binding, convert
from dojoc.frontend.decompositions import decomposition_table
from dojoc.frontend.fold import fold_constants
from dojoc.ir import Graph, maybe_dump, verify


class _Frozen(torch.nn.Module):
    """Calls gm with the frozen placeholders bound to buffers, so AOT lifts them as buffers."""

    def __init__(self, gm: torch.fx.GraphModule, frozen: dict[int, torch.Tensor], n: int) -> None:
        super().__init__()
        self.gm = gm
        self.n = n
        self.slots = sorted(frozen)
        for i, t in frozen.items():
            self.register_buffer(f"frozen_input_{i}", t.detach())

    def forward(self, *user: Any) -> Any:
        args: list[Any] = []
        it = iter(user)
        for i in range(self.n):
            args.append(getattr(self, f"frozen_input_{i}") if i in self.slots else next(it))
        return self.gm(*args)


def from_aot(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], *, frozen_inputs: Collection[int] = (),
             name: str = "aot", fold: bool = True) -> Graph:
    """Lower a dynamo FX GraphModule to IR through AOTAutograd with dojoc's decomposition table.

    The graph must return a tuple or list of tensors (dynamo graphs do); the IR's outputs follow it.
    """
    frozen = {i: example_inputs[i] for i in frozen_inputs}
    user = [x for i, x in enumerate(example_inputs) if i not in frozen]
    module = _Frozen(gm, frozen, len(example_inputs)).eval()
    try:
        with torch.no_grad():
            fx_gm, sig = aot_export_module(module, user, trace_joint=False, decompositions=decomposition_table())
    except Exception as e:
        raise CompileError(f"AOTAutograd tracing failed: {type(e).__name__}: {e}") from e
    named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    if sig.buffers_to_mutate:
        raise CompileError(f"the graph mutates buffers {sorted(sig.buffers_to_mutate.values())}; dojoc compiles "
                           "inference graphs")
    bindings: list[Binding] = []
    user_names = [n for n in fx_gm.graph.nodes if n.op == "placeholder"]
    flat = 0
    for node in user_names:
        if node.name in params:
            key = params[node.name]
            bindings.append(Binding("param", key.removeprefix("gm.").removeprefix("frozen_input_"), named[key]))
        else:
            bindings.append(Binding("input", f"arg{flat}", None, flat))
            flat += 1
    graph = convert(fx_gm, bindings, name=name)
    maybe_dump(graph, "frontend")
    return fold_constants(graph) if fold else verify(graph)
