"""The code-generation driver: an IR graph -> a program for the mesh (docs/compiler.md).

Every value gets a DRAM view: user inputs, weights and outputs are declared tensors; intermediates are
scratch tensors; view ops (reshape, permute, expand, slice, select) make views over their source's bytes
and emit no code. Every other op runs its registered kernel, then all cores meet at a barrier. Kernels
may keep weights resident in SRAM; their loading runs once, before the call, and ends at the load
barrier, so the emulator's cycles split into `load_cycles` and `cycles`.
"""

from __future__ import annotations

from collections.abc import Mapping

import dojoc.codegen.kernels  # noqa: F401  (registers the kernels)
from dojoc.codegen.builder import CoreCode, ProgramBuilder
from dojoc.codegen.context import Ctx, SramPlan
from dojoc.codegen.kernels.copy import copy_view
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.registry import KERNELS
from dojoc.codegen.result import LOAD_BARRIER, Lowered
from dojoc.codegen.view import View
from dojoc.errors import UnsupportedOpsError
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.ops import Op
from isa.machine import Machine
from isa.program import Signature, TensorKind

PRECISIONS = ("bf16", "fp32", "cfp8")


def _view_op(ctx: Ctx, node: Node) -> View | None:
    """The output view of a view op, or None when the op needs a copy (a reshape of a strided view)."""
    v = ctx.views[node.inputs[0]]
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
        if n.op is Op.MATMUL:
            out = n.output.type.shape
            k = n.inputs[0].type.shape[-1]
            size = 1
            for s in out:
                size *= s
            total += 2 * size * k
        elif n.op is Op.CONV2D:
            out = n.output.type.shape
            w = n.inputs[1].type.shape  # [O, C/groups, KH, KW]
            size = 1
            for s in out:
                size *= s
            total += 2 * size * w[1] * w[2] * w[3]
    return total


def unsupported(graph: Graph) -> list[tuple[str, str, str]]:
    """Every op the code generator has no kernel for (op, shapes, source)."""
    known = set(KERNELS) | set(VIEW_OPS) | {Op.INPUT, Op.PARAM, Op.CONST}
    return [(str(n.op), n.signature(), n.source or "") for n in graph.nodes if n.op not in known]


def lower_graph(graph: Graph, machine: Machine, precision: str = "bf16",
                ranges: Mapping[str, float] | None = None) -> Lowered:
    """Generate the program for `graph` on `machine` at `precision` ("bf16", "fp32", "cfp8"). `ranges`
    ({value name: max |x|} from calibration) sets the CFP8 bias of activations; without it they use a
    fixed bias (see kernels/mxu.py)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    missing = unsupported(graph)
    if missing:
        raise UnsupportedOpsError(missing)
    n = machine.num_cores
    ctx = Ctx(graph, machine, precision, ProgramBuilder(machine, n))
    ctx.ranges = dict(ranges or {})
    ctx.sram = [SramPlan(machine.sram_bytes) for _ in range(n)]
    ctx.load = [CoreCode(c) for c in range(n)]
    outputs = set(graph.outputs)
    fused, via = fuse_epilogues(ctx, graph, outputs)
    for node in graph.nodes:
        if node in fused:  # computed by its producer's epilogue, into the producer's buffer
            if node in via:  # ... seen through a reshape: the reshape's view already holds the result
                ctx.views[node.output] = ctx.views[via[node].output]
            continue
        _lower_node(ctx, node, outputs, {a: p for a, p in fused.items() if a not in via})
    out_names = tuple(graph.output_names)
    for value, name in zip(graph.outputs, out_names, strict=True):
        v = ctx.views[value]
        out = next((t for t in ctx.tensors if t.name == name and t.kind is TensorKind.OUTPUT), None)
        if out is None or View.dense(out.address, out.shape, out.dtype) != v:
            dst = ctx.dram(name, TensorKind.OUTPUT, value.type.shape, ctx.storage(value.type.dtype))
            ctx.begin_op()
            copy_view(ctx, v, dst, f"output {name}", None)
            ctx.builder.barrier()
    _prepend_load_phase(ctx)
    in_names = tuple(str(v.name) for v in graph.inputs)
    image = ctx.builder.build(tuple(ctx.tensors), Signature(in_names, out_names, graph.out_spec or ""))
    return Lowered(image, in_names, out_names, flops_of(graph), precision, max(len(ctx.used), 1),
                   max(s.peak for s in ctx.sram))


EPILOGUES = {Op.RELU: "vrelu", Op.SILU: "vsilu", Op.SIGMOID: "vsigmoid", Op.TANH: "vtanh"}
# ops whose kernels apply a fused activation to their result tile before storing it
FUSABLE = (Op.MATMUL, Op.CONV2D, Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM)


def fuse_epilogues(ctx: Ctx, graph: Graph, outputs: set[Value]) -> tuple[dict[Node, Node], dict[Node, Node]]:
    """Fuse an activation into the op that feeds it when it is that result's only reader: a matmul or
    convolution (the activation runs on the FP32 accumulator tile before the store) or an elementwise
    arithmetic op (it runs on the result tile). The activation may read the result through a reshape
    that nothing else reads (elementwise ops commute with it; AOTAutograd puts such reshapes between a
    linear layer and its activation). Returns ({activation: producer}, {activation: the reshape between});
    `ctx.epilogue` gets the activation's mnemonic per producer."""
    users = graph.users()
    fused: dict[Node, Node] = {}
    via: dict[Node, Node] = {}
    for n in graph.nodes:
        if n.op not in FUSABLE or n.output in outputs or len(users[n.output]) != 1:
            continue
        act = users[n.output][0]
        reshape = None
        if act.op is Op.RESHAPE and act.output not in outputs and len(users[act.output]) == 1:
            reshape, act = act, users[act.output][0]
        if act.op is Op.GELU:
            mnemonic = "vgelut" if act.attrs["approximate"] == "tanh" else "vgelu"
        elif act.op in EPILOGUES:
            mnemonic = EPILOGUES[act.op]
        else:
            continue
        if act.output.type != (reshape or n).output.type:
            continue
        ctx.epilogue[n] = mnemonic
        fused[act] = n
        if reshape is not None:
            via[act] = reshape
    return fused, via


def _lower_node(ctx: Ctx, node: Node, outputs: set[Value], fused: dict[Node, Node]) -> None:
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
        v = _view_op(ctx, node)
        if v is not None:
            ctx.views[node.output] = v
            return
    act = next((a for a, m in fused.items() if m is node), None)
    for i, value in enumerate(node.outputs):
        if act is not None:  # the fused activation's result is this op's result
            value = act.output
        kind = TensorKind.OUTPUT if value in outputs else TensorKind.SCRATCH
        name = ctx.graph.output_names[ctx.graph.outputs.index(value)] if value in outputs else value.name
        if kind is TensorKind.OUTPUT and any(t.name == name for t in ctx.tensors):
            kind, name = TensorKind.SCRATCH, f"{name}_{i}"
        ctx.views[value] = ctx.dram(name, kind, value.type.shape, ctx.storage(value.type.dtype))
        if act is not None:
            ctx.views[node.outputs[i]] = ctx.views[value]
    ctx.begin_op()
    if node.op in VIEW_OPS and node.inputs[0] in ctx.consts:  # a broadcast scalar (torch.full, no-affine norms)
        fill(ctx, ctx.views[node.output], float(ctx.consts[node.inputs[0]]), node.name, node.source)
    elif node.op in VIEW_OPS:  # a view op whose view must be materialised
        src = ctx.views[node.inputs[0]]
        view = _view_op(ctx, node)
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


def _prepend_load_phase(ctx: Ctx) -> None:
    """Put each core's resident-weight loading before its call code, ended by the load barrier."""
    b = ctx.builder
    for core, load in zip(b.cores, ctx.load, strict=True):
        load.emit("barrier", id=LOAD_BARRIER, count=b.participants)
        shift = len(load.code)
        core.code[:0] = load.code
        core.debug = load.debug + [(pc + shift, op, src) for pc, op, src in core.debug]
