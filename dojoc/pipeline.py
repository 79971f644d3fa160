"""The compiler's pipeline, flat and named in one place (docs/compiler.md).

`compile_graph` runs the graph-to-graph passes in order, verifying the IR after each (and dumping it
when `DOJOC_DEBUG` is set), then generates the program. Both frontends (`dojoc.compile` through
torch.export, the torch.compile backend through AOTAutograd) produce a graph and call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from dojoc.codegen.lanes import TAKE_SHARE, prepare, propose
from dojoc.codegen.lower import lower_graph
from dojoc.codegen.result import Lowered
from dojoc.ir import Graph, maybe_dump, verify
from dojoc.mapping import Mapping, Pipeline
from dojoc.mapping.place import home_die
from dojoc.passes.calibrate import activation_ranges
from dojoc.passes.fold_bn import fold_batch_norm
from dojoc.passes.fuse import fuse
from dojoc.passes.fuse_pool import fuse_pool
from dojoc.passes.merge import merge_siblings
from dojoc.passes.patterns import combine_constants, recognize
from isa.machine import Machine

Pass = Callable[[Graph], Graph]

# Graph passes, in order. Partition and placement still run in code generation, op by op, but as
# decisions: each kernel family takes its op's decision (dojoc/mapping) from a given mapping or from its
# cost model, records it, and emits it. `Lowered.mapping` holds them all.
PASSES: list[tuple[str, Pass]] = [
    ("fold_batch_norm", fold_batch_norm),  # first: a batch norm folded into a conv leaves its relu next to it
    ("recognize", recognize),  # before fuse: a hand-written gelu becomes one op, which fuses as one step
    ("combine_constants", combine_constants),  # before fuse: two constant adds become one
    ("fuse", fuse),
    ("fuse_pool", fuse_pool),  # after fuse: the convolution's activation comes before the pool's rows
    ("merge_siblings", merge_siblings),  # after fuse: siblings' biases are epilogue inputs by then
]


def run_passes(graph: Graph) -> Graph:
    """The graph after every pass of PASSES, verified after each."""
    verify(graph)
    maybe_dump(graph, "frontend")
    for name, fn in PASSES:
        graph = verify(fn(graph))
        maybe_dump(graph, name)
    return graph


def compile_graph(graph: Graph, machine: Machine, precision: str,
                  calibration: Sequence[np.ndarray] | None = None, mapping: Mapping | None = None,
                  search_budget: int | None = None) -> Lowered:
    """Passes, then code generation: the program for `graph` on `machine`. For cfp8, `calibration` (the
    user inputs, in graph order) sets each activation's CFP8 bias from its range on those inputs.
    `mapping` gives decisions that the kernels take instead of their own (dojoc/mapping); `search_budget`
    bounds the candidates each op's search prices."""
    graph = run_passes(graph)
    ranges = activation_ranges(graph, calibration) if precision == "cfp8" and calibration is not None else None
    if mapping is not None and mapping.pipeline is not None and mapping.pipeline.micro_batches == 1:
        return lower_graph(graph, machine, precision, ranges, mapping, search_budget)  # pipelining off
    if mapping is not None and mapping.pipeline is not None:  # the given pipeline, as it is
        cut, lanes = prepare(graph, mapping.pipeline, machine)
        return lower_graph(verify(cut), machine, precision, ranges, mapping, search_budget, lanes)
    lowered = lower_graph(graph, machine, precision, ranges, mapping, search_budget)
    if mapping is not None and mapping.ops:
        return lowered  # a given mapping's decisions are for this graph's ops, not for micro-batches
    return pipeline_if_faster(graph, machine, precision, ranges, search_budget, lowered)


def pipeline_if_faster(graph: Graph, machine: Machine, precision: str, ranges: Any, search_budget: int | None,
                       lowered: Lowered) -> Lowered:
    """The pipelined program (codegen/lanes.py) when the cost model predicts it faster than `lowered`, the
    one-op-at-a-time program of `graph`; else `lowered`. The screen's candidates (`lanes.propose`) are
    priced by lowering their first micro-batch (a probe); the best, when it beats `lowered`, is lowered
    whole and taken when its own prediction still does. A batch of 1, or a graph whose ops mix the items of
    its batch, is never pipelined."""
    assert lowered.mapping is not None
    decisions = list(lowered.mapping.ops)
    default = sum(om.predicted_cycles for om in decisions if om.fused_into is None)

    def price(plan: Pipeline, probe: bool) -> tuple[int, Lowered]:
        cut, lanes = prepare(graph, plan, machine, probe)
        low = lower_graph(verify(cut), machine, precision, ranges, None, search_budget, lanes)
        assert low.mapping is not None and low.mapping.pipeline is not None
        others = sum(om.predicted_cycles for om in low.mapping.ops
                     if om.fused_into is None and om.op not in lanes.where)
        return low.mapping.pipeline.predicted_cycles + others, low

    candidates = propose(graph, decisions, machine, home_die(machine))
    priced = sorted(((price(plan, True)[0], plan) for plan, _ in candidates), key=lambda p: p[0])
    if not priced:
        return lowered
    probed, plan = priced[0]
    what = f"a pipeline of {len(plan.stages)} stages over {plan.micro_batches} micro-batches"
    if probed < TAKE_SHARE * default:
        total, piped = price(plan, False)
        if total < TAKE_SHARE * default:
            assert piped.mapping is not None and piped.mapping.pipeline is not None
            note = f"pipelined: {what}, predicted {total:,} cycles against {default:,} one op at a time"
            return replace(piped, mapping=replace(piped.mapping, pipeline=replace(piped.mapping.pipeline, note=note)))
        probed = total
    note = (f"{what} (the best of {len(priced)} the screen let through) was predicted at {probed:,} cycles, not "
            f"{1 - TAKE_SHARE:.0%} faster than one op at a time ({default:,})")
    return replace(lowered, mapping=replace(lowered.mapping, notes=(*lowered.mapping.notes, note)))
