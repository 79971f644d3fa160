"""The code-generation driver: an IR graph -> a program for the mesh (docs/compiler.md).

Every value gets a DRAM view: user inputs, weights and outputs are declared tensors; intermediates are
scratch tensors; view ops (reshape, permute, expand, slice, select) make views over their source's bytes
and emit no code. Every other op runs its registered kernel, then all cores meet at a barrier. Kernels
may keep weights resident in SRAM; their loading runs once, before the call, and ends at the load
barrier, so the emulator's cycles split into `load_cycles` and `cycles`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from math import prod

import dojoc.codegen.kernels  # noqa: F401  (registers the kernels)
from dojoc.codegen.builder import CoreCode, ProgramBuilder, Span
from dojoc.codegen.context import Ctx
from dojoc.codegen.kernels import band
from dojoc.codegen.kernels.copy import copy_view
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.kernels.held import release_kept
from dojoc.codegen.lanes import Lanes
from dojoc.codegen.paths import barrier_cycles
from dojoc.codegen.registry import KERNELS
from dojoc.codegen.result import LOAD_BARRIER, Lowered
from dojoc.codegen.sram import CODE_SLACK, CodeOverflow, SramPlan, aligned
from dojoc.codegen.view import View
from dojoc.errors import CompileError, MappingError, SramOverflowError, UnsupportedOpsError
from dojoc.ir import shapes
from dojoc.ir.epilogue import split_inputs, steps_of
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.build import build_mapping, check_given
from dojoc.mapping.model import Mapping as OpsMapping
from dojoc.mapping.model import OpMapping
from dojoc.mapping.place import usable_cores
from isa.machine import Machine
from isa.program import Signature, TensorKind
from isa.table import WORD_BYTES
from runtime_emu.hostgc import growing_heap

PRECISIONS = ("bf16", "fp32", "cfp8")


def view_of(ctx: Ctx, node: Node) -> View | None:
    """The output view of a view op, or None when the op needs a copy (a reshape of a strided view)."""
    return view_after(node, ctx.views[node.inputs[0]])


def view_after(node: Node, v: View) -> View | None:
    """The output view of view op `node` over its input's view `v` (None: it needs a copy)."""
    a = node.attrs
    if node.op is Op.RESHAPE:
        return v.reshape(tuple(a["shape"]))
    if node.op is Op.PERMUTE:
        return v.permute(tuple(a["perm"]))
    if node.op is Op.EXPAND:
        return v.expand(tuple(a["shape"]))
    if node.op is Op.SLICE:
        return v.slice(a["dim"], a["start"], a["end"], a["step"])
    if node.op is Op.SELECT:
        return v.select(a["dim"], a["index"])
    raise AssertionError(node.op)


VIEW_OPS = (Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SLICE, Op.SELECT)


def flops_of(graph: Graph) -> int:
    """2 x the multiply-accumulates of matmul and conv2d at the model's shapes (torch's flop counter)."""
    total = 0
    for n in graph.nodes:
        if n.op is Op.MATMUL:  # each output element is a dot product of length K
            total += 2 * prod(n.output.type.shape) * n.inputs[0].type.shape[-1]
        elif n.op is Op.CONV2D:  # ... of length C/groups x KH x KW (weight [O, C/groups, KH, KW])
            # (at the convolution's own shape: a row_max epilogue step pools its rows after it)
            own, _ = split_inputs(n.inputs, n.attrs)
            out = shapes.conv2d([v.type for v in own], n.attrs)[0].shape
            total += 2 * prod(out) * prod(n.inputs[1].type.shape[1:])
    return total


def unsupported(graph: Graph) -> list[tuple[str, str, str]]:
    """Every op the code generator has no kernel for (op, shapes, source)."""
    known = set(KERNELS) | set(VIEW_OPS) | {Op.INPUT, Op.PARAM, Op.CONST}
    return [(str(n.op), n.signature(), n.source or "") for n in graph.nodes if n.op not in known]


def lower_graph(graph: Graph, machine: Machine, precision: str = "bf16",
                ranges: Mapping[str, float] | None = None, mapping: OpsMapping | None = None,
                search_budget: int | None = None, lanes: Lanes | None = None) -> Lowered:
    """Generate the program for `graph` on `machine` at `precision` ("bf16", "fp32", "cfp8"). `ranges`
    ({value name: max |x|} from calibration) sets the CFP8 bias of activations; without it they use a
    fixed bias (see kernels/mxu.py). `mapping` gives decisions (by op) that the kernels take instead of
    their own; `Lowered.mapping` has every decision taken. `search_budget` bounds the candidates each op's
    search prices (default `context.SEARCH_BUDGET`); the mapping's notes name the ops it cut short. With
    `lanes` (codegen/lanes.py: `graph` is then its micro-batched graph) the ops run as that pipeline."""
    reserves: dict[int, int] = {}  # per core, a code gap wider than the plan's default (sram.CODE_SHARE)
    with growing_heap() as settle:  # the streams grow op by op: the collector walks each op's objects once
        for _ in range(2):
            try:
                return _lower(graph, machine, precision, ranges, mapping, search_budget, reserves, lanes, settle)
            except CodeOverflow as e:  # code outgrew its gap: compile again, keeping what it took free on its core
                for c, code in e.near.items():
                    reserves[c] = max(reserves.get(c, 0), aligned(code + code // CODE_SLACK))
        try:
            return _lower(graph, machine, precision, ranges, mapping, search_budget, reserves, lanes, settle)
        except CodeOverflow as last:
            raise SramOverflowError(f"the code of core {last.core} takes {last.code:,} bytes of SRAM but its data "
                                    f"leaves {last.gap:,}; give its ops fewer tiles (a mapping with smaller splits) "
                                    "or use a machine with more SRAM (--set sram_bytes=...)") from None


def _lower(graph: Graph, machine: Machine, precision: str, ranges: Mapping[str, float] | None,
           mapping: OpsMapping | None, search_budget: int | None, reserves: Mapping[int, int],
           lanes: Lanes | None = None, settle: Callable[[], None] = lambda: None) -> Lowered:
    """The program, planned with `reserves[core]` bytes of SRAM kept for a core's code (else the default);
    `settle()` after each op (`hostgc.growing_heap`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    missing = unsupported(graph)
    if missing:
        raise UnsupportedOpsError(missing)
    given = check_given(mapping, graph, machine) if mapping is not None else {}
    ids = usable_cores(machine)
    ctx = Ctx(graph, machine, precision, ProgramBuilder(machine, ids))
    ctx.given = given
    if search_budget is not None:
        if search_budget < 1:
            raise CompileError(f"search budget {search_budget}: give at least 1 candidate per op")
        ctx.search_budget = search_budget
    ctx.ranges = dict(ranges or {})
    ctx.sram = {c: SramPlan(machine.sram_bytes, reserves.get(c, -1)) for c in ids}
    ctx.load = {c: CoreCode(c, machine.semaphores) for c in ids}
    outputs = set(graph.outputs)
    ctx.users = graph.users()
    final = write_through(graph, outputs, ctx.users)
    if lanes is not None:
        lanes.bind(ctx)
    ctx.bands = band.plan(ctx)
    written = set(final.values())
    spans: list[Span] = []
    for node in graph.nodes:
        if lanes is not None:
            lanes.enter(ctx, node.name)
        if node.outputs[0] in written:  # a reshape that its producer wrote (see write_through)
            continue
        mark, d0 = ctx.builder.mark(), len(ctx.decisions)
        with ctx.op_scope(node.name, node.source):
            _lower_node(ctx, node, outputs, final)
        release_kept(ctx, node.name)
        band.release(ctx, node.name)
        ctx.search_report(node.name)
        _note(ctx, node, d0)
        # the ops fused into this one are computed by its epilogue: they keep an entry in the mapping
        ctx.decisions += [OpMapping(name, "epilogue", fused_into=node.name) for name in node.attrs.get("fused", ())]
        ctx.decisions += [OpMapping(name, "merged", fused_into=node.name) for name in node.attrs.get("merged", ())]
        if lanes is not None:
            lanes.follow(ctx, node.name, ctx.decisions[d0:])
        span = ctx.builder.span(node.name, mark)
        if span is not None:
            spans.append(span)
        settle()
    if lanes is not None:
        lanes.close(ctx)
        ctx.decisions = [replace(om, stage=ctx.stage_of.get(om.fused_into or om.op, 0)) for om in ctx.decisions]
    out_names = tuple(graph.output_names)
    for value, name in zip(graph.outputs, out_names, strict=True):
        v = ctx.views[value]
        out = next((t for t in ctx.tensors if t.name == name and t.kind is TensorKind.OUTPUT), None)
        if out is None or View.dense(out.address, out.shape, out.dtype) != v:
            dst = ctx.dram(name, TensorKind.OUTPUT, value.type.shape, ctx.storage(value.type.dtype))
            ctx.begin_op()
            mark = ctx.builder.mark()
            with ctx.op_scope(f"output {name}"):
                copy_view(ctx, v, dst, f"output {name}", None)
            ctx.builder.barrier()
            span = ctx.builder.span(f"output {name}", mark)
            assert span is not None
            spans.append(span)
    ctx.builder.keep(ctx.used | {c for c, load in ctx.load.items() if load.code})
    _add_sync(ctx, spans)
    _prepend_load_phase(ctx)
    in_names = tuple(str(v.name) for v in graph.inputs)
    image = ctx.builder.build(tuple(ctx.tensors), Signature(in_names, out_names, graph.out_spec or ""))
    code: dict[int, int] = {}
    for sec in image.sections:
        for c in sec.cores:
            code[c] = code.get(c, 0) + len(sec.code) * WORD_BYTES
    over = {c: (n, ctx.sram[c].code_gap) for c, n in sorted(code.items()) if n > ctx.sram[c].code_gap}
    if over:  # with the cores that came within a slack of their gap: the next compile moves code about
        raise CodeOverflow(over, {c: n for c, n in code.items() if n + n // CODE_SLACK > ctx.sram[c].code_gap})
    for c, nbytes in code.items():
        ctx.sram[c].place_code(nbytes)
    unused = sorted(set(ctx.given) - {d.key for d in ctx.decisions})
    if unused:
        raise MappingError(f"op {unused[0]}: the mapping gives a decision that this compile does not take "
                           f"(the op takes fewer decisions, or is a view or is fused); remove it")
    built = build_mapping(ctx, tuple(ctx.search_notes))
    if lanes is not None:
        b = ctx.builder
        handoff = [b.handoff_cycles(lanes.handoff_id(s)) for s in range(lanes.stages - 1)]
        predicted = lanes.predict(ctx.decisions, handoff, b.dram_bytes(), machine.dram_ports[0].bytes_per_cycle)
        built = replace(built, pipeline=replace(lanes.plan, predicted_cycles=predicted))
    return Lowered(image, in_names, out_names, flops_of(graph), precision, max(len(ctx.used), 1),
                   max(s.peak for s in ctx.sram.values()), built,
                   tuple((sp.op, sp.start, sp.end) for sp in spans),
                   tuple(ctx.sram[c].usage(c) for c in sorted(code)))


def _add_sync(ctx: Ctx, spans: list[Span]) -> None:
    """Add to each op's prediction the release of the barriers that end its phases (each over its own
    cores, `ProgramBuilder.cores_of`): an op's emulated cycles run from one barrier's release to the next, so
    its prediction covers them too. Known only now, once the barriers are scoped."""
    count: dict[str, int] = {}
    for sp in spans:
        count[sp.op] = count.get(sp.op, 0) + sum(barrier_cycles(ctx.machine, ctx.builder.cores_of(r))
                                                 for r in sp.barriers)
    last = {om.op: i for i, om in enumerate(ctx.decisions) if om.fused_into is None}
    for op, n in count.items():
        i = last.get(op)
        if i is not None:
            om = ctx.decisions[i]
            ctx.decisions[i] = replace(om, predicted_cycles=om.predicted_cycles + n)


def write_through(graph: Graph, outputs: set[Value], users: dict[Value, list[Node]]) -> dict[Node, Value]:
    """{node with an epilogue: the graph output it writes directly} for a node whose one reader is a
    reshape that is a graph output (the reshape the fuse pass leaves after a chain that went through
    one): the node's buffer is declared as that output, in its shape, and the node writes it through a
    reshape to its own shape, so no copy is needed."""
    out: dict[Node, Value] = {}
    for n in graph.nodes:
        if not steps_of(n.attrs) or len(n.outputs) != 1 or n.output in outputs:
            continue
        readers = users.get(n.output, [])
        if len(readers) == 1 and readers[0].op is Op.RESHAPE and readers[0].output in outputs:
            out[n] = readers[0].output
    return out


def _note(ctx: Ctx, node: Node, first: int) -> None:
    """Put the fuse pass's note on why `node` was not fused on its first decision (taken from `first` on)."""
    note = ctx.graph.fusion_notes.get(node.name)
    if not note:
        return
    i = next((i for i in range(first, len(ctx.decisions)) if ctx.decisions[i].op == node.name), None)
    if i is not None:
        ctx.decisions[i] = replace(ctx.decisions[i], note=note)


def _lower_node(ctx: Ctx, node: Node, outputs: set[Value], final: dict[Node, Value]) -> None:
    a = node.attrs
    if node.op is Op.INPUT:
        t = node.output.type
        ctx.views[node.output] = ctx.dram(node.name, TensorKind.INPUT, t.shape, ctx.storage(t.dtype))
        return
    if node.op is Op.PARAM:
        arr = ctx.graph.parameters[a["name"]]
        ctx.views[node.output] = ctx.weight(f"w_{node.name}", arr, ctx.storage(node.output.type.dtype))
        return
    if node.op is Op.CONST:
        ctx.consts[node.output] = a["value"]
        return
    if node.op in VIEW_OPS and node.output not in outputs and node.inputs[0] not in ctx.consts:
        v = view_of(ctx, node)
        if v is not None:
            ctx.views[node.output] = v
            return
    if node.name in ctx.joined:  # its inputs were written in place (codegen/lanes.py)
        return
    last = final.get(node)
    for i, value in enumerate(node.outputs):
        if value in ctx.preplaced:
            ctx.views[value] = ctx.preplaced[value]
            continue
        if last is not None:  # this op writes the graph output that reshapes its result
            value = last
        kind = TensorKind.OUTPUT if value in outputs else TensorKind.SCRATCH
        name = ctx.graph.output_names[ctx.graph.outputs.index(value)] if value in outputs else value.name
        if kind is TensorKind.OUTPUT and any(t.name == name for t in ctx.tensors):
            kind, name = TensorKind.SCRATCH, f"{name}_{i}"
        perm = _consumer_layout(ctx, node, value, outputs)
        if perm is not None:  # written in the layout its only reader, a permute, wants: the permute is free
            shape = tuple(value.type.shape[p] for p in perm)
            inverse = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
            ctx.views[value] = ctx.dram(name, kind, shape, ctx.storage(value.type.dtype)).permute(inverse)
            continue
        ctx.views[value] = ctx.dram(name, kind, value.type.shape, ctx.storage(value.type.dtype))
        if last is not None:  # a dense buffer: it reshapes to any shape of as many elements
            own = ctx.views[value].reshape(node.outputs[i].type.shape)
            assert own is not None
            ctx.views[node.outputs[i]] = own
    ctx.begin_op()
    if node.op in VIEW_OPS and node.inputs[0] in ctx.consts:  # a broadcast scalar (torch.full, no-affine norms)
        fill(ctx, ctx.views[node.output], float(ctx.consts[node.inputs[0]]), node.name, node.source)
    elif node.op in VIEW_OPS:  # a view op whose view must be materialised
        src = ctx.views[node.inputs[0]]
        view = view_of(ctx, node)
        if view is None:  # reshape of a strided view: copy into the dense output in the new shape
            src_dense = ctx.dram(f"{node.name}_src", TensorKind.SCRATCH, src.shape, src.dtype)
            copy_view(ctx, src, src_dense, node.name, node.source)
            ctx.builder.barrier()
            ctx.begin_op()
            view = src_dense.reshape(node.output.type.shape)
            assert view is not None
        copy_view(ctx, view, ctx.views[node.output], node.name, node.source)
    else:
        KERNELS[node.op](ctx, node)
    ctx.builder.barrier()


# ops whose kernels store their result through any strided view of it, so it may lie in another layout
STRIDED_WRITERS = (Op.SDPA,)


def _consumer_layout(ctx: Ctx, node: Node, value: Value, outputs: set[Value]) -> tuple[int, ...] | None:
    """The permutation to store `value` in when its only reader is a permute (attention's heads going back
    to [batch, tokens, heads, dims] before the output projection): the buffer is laid out as the permute's
    result, so the permute and the reshape after it are views and nothing is copied."""
    if node.op not in STRIDED_WRITERS or value in outputs or len(node.outputs) != 1:
        return None
    readers = ctx.users.get(value, [])
    if len(readers) != 1 or readers[0].op is not Op.PERMUTE:
        return None
    return tuple(readers[0].attrs["perm"])


def _prepend_load_phase(ctx: Ctx) -> None:
    """Put each core's resident-weight loading before its call code, ended by the load barrier."""
    b = ctx.builder
    for c in b.ids:
        core, load = b.cores[c], ctx.load[c]
        load.emit("barrier", id=LOAD_BARRIER, count=b.participants)
        shift = len(load.code)
        core.code[:0] = load.code
        core.debug = load.debug + [(pc + shift, op, src) for pc, op, src in core.debug]
