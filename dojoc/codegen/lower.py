"""The code-generation driver: an IR graph -> a program for the mesh (docs/compiler.md).

Every value gets a DRAM view: user inputs, weights and outputs are declared tensors; intermediates are
scratch tensors; view ops (reshape, permute, expand, slice, select) make views over their source's bytes
and emit no code. Every other op runs its registered kernel, then all cores meet at a barrier. Kernels
may keep weights resident in SRAM; their loading runs once, before the call, and ends at the load
barrier, so the emulator's cycles split into `load_cycles` and `cycles`.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod

import numpy as np

import dojoc.codegen.kernels  # noqa: F401  (registers the kernels)
from dojoc.codegen.builder import CoreCode, ProgramBuilder
from dojoc.codegen.context import Ctx, SramPlan
from dojoc.codegen.kernels.copy import copy_view
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.registry import KERNELS
from dojoc.codegen.result import LOAD_BARRIER, Lowered
from dojoc.codegen.view import View
from dojoc.errors import MappingError, UnsupportedOpsError
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.build import build_mapping, check_given
from dojoc.mapping.model import Mapping as OpsMapping
from dojoc.mapping.model import OpMapping
from dojoc.mapping.place import usable_cores
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
        if n.op is Op.MATMUL:  # each output element is a dot product of length K
            total += 2 * prod(n.output.type.shape) * n.inputs[0].type.shape[-1]
        elif n.op is Op.CONV2D:  # ... of length C/groups x KH x KW (weight [O, C/groups, KH, KW])
            total += 2 * prod(n.output.type.shape) * prod(n.inputs[1].type.shape[1:])
    return total


def unsupported(graph: Graph) -> list[tuple[str, str, str]]:
    """Every op the code generator has no kernel for (op, shapes, source)."""
    known = set(KERNELS) | set(VIEW_OPS) | {Op.INPUT, Op.PARAM, Op.CONST}
    return [(str(n.op), n.signature(), n.source or "") for n in graph.nodes if n.op not in known]


def lower_graph(graph: Graph, machine: Machine, precision: str = "bf16",
                ranges: Mapping[str, float] | None = None, mapping: OpsMapping | None = None) -> Lowered:
    """Generate the program for `graph` on `machine` at `precision` ("bf16", "fp32", "cfp8"). `ranges`
    ({value name: max |x|} from calibration) sets the CFP8 bias of activations; without it they use a
    fixed bias (see kernels/mxu.py). `mapping` gives decisions (by op) that the kernels take instead of
    their own; `Lowered.mapping` has every decision taken."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    missing = unsupported(graph)
    if missing:
        raise UnsupportedOpsError(missing)
    given = check_given(mapping, graph, machine) if mapping is not None else {}
    ids = usable_cores(machine, {c for om in given.values() for c in om.cores})
    ctx = Ctx(graph, machine, precision, ProgramBuilder(machine, ids))
    ctx.given = given
    ctx.ranges = dict(ranges or {})
    ctx.sram = {c: SramPlan(machine.sram_bytes) for c in ids}
    ctx.load = {c: CoreCode(c) for c in ids}
    outputs = set(graph.outputs)
    fused, final = fuse_epilogues(ctx, graph, outputs)
    spans: list[tuple[str, int, int]] = []  # (op, barriers before it, barriers after it)
    for node in graph.nodes:
        if node in fused:  # computed by its producer's epilogue: its result is the view of what it reads
            if node.output not in ctx.views:  # (the chain's last value is the producer's buffer itself)
                ctx.views[node.output] = ctx.views[fused[node][1]]
            ctx.decisions.append(OpMapping(node.name, "epilogue", fused_into=fused[node][0].name))
            continue
        b0 = ctx.builder.barriers
        with ctx.op_scope(node.name, node.source):
            _lower_node(ctx, node, outputs, final)
        if ctx.builder.barriers > b0:
            spans.append((node.name, b0, ctx.builder.barriers))
    out_names = tuple(graph.output_names)
    for value, name in zip(graph.outputs, out_names, strict=True):
        v = ctx.views[value]
        out = next((t for t in ctx.tensors if t.name == name and t.kind is TensorKind.OUTPUT), None)
        if out is None or View.dense(out.address, out.shape, out.dtype) != v:
            dst = ctx.dram(name, TensorKind.OUTPUT, value.type.shape, ctx.storage(value.type.dtype))
            ctx.begin_op()
            b0 = ctx.builder.barriers
            with ctx.op_scope(f"output {name}"):
                copy_view(ctx, v, dst, f"output {name}", None)
            ctx.builder.barrier()
            spans.append((f"output {name}", b0, ctx.builder.barriers))
    ctx.builder.keep(ctx.used | {c for c, load in ctx.load.items() if load.code})
    _prepend_load_phase(ctx)
    in_names = tuple(str(v.name) for v in graph.inputs)
    image = ctx.builder.build(tuple(ctx.tensors), Signature(in_names, out_names, graph.out_spec or ""))
    unused = sorted(set(ctx.given) - {d.key for d in ctx.decisions})
    if unused:
        raise MappingError(f"op {unused[0]}: the mapping gives a decision that this compile does not take "
                           f"(the op takes fewer decisions, or is a view or is fused); remove it")
    return Lowered(image, in_names, out_names, flops_of(graph), precision, max(len(ctx.used), 1),
                   max(s.peak for s in ctx.sram.values()), build_mapping(ctx), tuple(spans))


EPILOGUES = {Op.RELU: "vrelu", Op.SILU: "vsilu", Op.SIGMOID: "vsigmoid", Op.TANH: "vtanh"}
# ops whose kernels apply a fused activation to their result tile before storing it
FUSABLE = (Op.MATMUL, Op.CONV2D, Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM)


def fuse_epilogues(ctx: Ctx, graph: Graph, outputs: set[Value]) -> tuple[dict[Node, tuple[Node, Value]],
                                                                     dict[Node, Value]]:
    """Fuse the elementwise ops after a matrix or elementwise op into its epilogue, each when it is the
    only reader of the result before it:

    - after a matmul, the add of a constant vector along the last dim (a linear layer's bias, a PARAM
      of shape [N] or a reshape/expand of one): `ctx.col_bias` gets the FP32 vector per matmul, added to
      the FP32 accumulator tile before the store;
    - then an activation, after a matmul or convolution (on the FP32 accumulator tile) or an elementwise
      arithmetic op (on the result tile): `ctx.epilogue` gets its mnemonic per producer.

    Each may read the result through a reshape that nothing else reads (elementwise ops commute with it;
    AOTAutograd puts such reshapes between a linear layer and its bias or activation). Returns
    ({fused node: (producer, the value whose view holds the fused node's result)}, {producer: the last
    value of its chain}): the producer's buffer is declared for that value, in its shape (so it may be a
    graph output), and the producer writes it through a reshape to its own shape."""
    users = graph.users()
    producers = graph.producers()
    fused: dict[Node, tuple[Node, Value]] = {}
    final: dict[Node, Value] = {}

    def sole_reader(v: Value) -> tuple[Node, Node | None] | None:
        """The only reader of v (seen through a reshape nothing else reads), and that reshape."""
        if v in outputs or len(users[v]) != 1:
            return None
        nxt = users[v][0]
        if nxt.op is Op.RESHAPE and nxt.output not in outputs and len(users[nxt.output]) == 1:
            return users[nxt.output][0], nxt
        return nxt, None

    for n in graph.nodes:
        if n.op not in FUSABLE or n in fused:
            continue
        chain: list[tuple[Node, Value]] = []  # (fused node, the value it reads from the chain)
        cur = n.output
        if n.op is Op.MATMUL and (r := sole_reader(cur)) is not None:
            add, reshape = r
            src = (reshape or n).output
            bias = _col_bias(ctx, add, src, producers)
            if bias is not None:
                ctx.col_bias[n] = bias
                chain.append((add, src))
                cur = add.output
        if (r := sole_reader(cur)) is not None:
            act, reshape = r
            src = (reshape.output if reshape is not None else cur)
            mnemonic = None
            if act.op is Op.GELU:
                mnemonic = "vgelut" if act.attrs["approximate"] == "tanh" else "vgelu"
            elif act.op in EPILOGUES:
                mnemonic = EPILOGUES[act.op]
            if mnemonic is not None and act.output.type == src.type:
                ctx.epilogue[n] = mnemonic
                chain.append((act, src))
        for node, src in chain:
            fused[node] = (n, src)
        if chain:
            final[n] = chain[-1][0].output
    return fused, final


def _col_bias(ctx: Ctx, add: Node, src: Value, producers: dict[Value, Node]) -> np.ndarray | None:
    """The vector [N] when `add` adds to `src` ([..., M, N]) a constant broadcast along the last dim (a
    PARAM, possibly reshaped or expanded) and its result has src's type; else None."""
    if add.op is not Op.ADD or len(add.inputs) != 2 or add.output.type != src.type:
        return None
    a, b = add.inputs
    if (a is src) == (b is src):
        return None
    other = b if a is src else a
    shape, n = tuple(other.type.shape), src.type.shape[-1] if src.type.shape else 0
    if not shape or len(shape) > len(src.type.shape) or any(d != 1 for d in shape[:-1]) or shape[-1] != n:
        return None
    views: list[Node] = []
    node = producers.get(other)
    while node is not None and node.op in (Op.RESHAPE, Op.EXPAND):
        views.append(node)
        node = producers.get(node.inputs[0])
    if node is None or node.op is not Op.PARAM:
        return None
    arr = np.asarray(ctx.graph.parameters[node.attrs["name"]])
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    for v in reversed(views):  # replay the views on the values
        shp = tuple(v.attrs["shape"])
        arr = arr.reshape(shp) if v.op is Op.RESHAPE else np.broadcast_to(arr, shp)
    if arr.shape != shape:
        return None
    return np.ascontiguousarray(arr.reshape(n).astype(np.float32))


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
        v = _view_op(ctx, node)
        if v is not None:
            ctx.views[node.output] = v
            return
    last = final.get(node)
    for i, value in enumerate(node.outputs):
        if last is not None:  # the result of the fused epilogue ops is this op's result
            value = last
        kind = TensorKind.OUTPUT if value in outputs else TensorKind.SCRATCH
        name = ctx.graph.output_names[ctx.graph.outputs.index(value)] if value in outputs else value.name
        if kind is TensorKind.OUTPUT and any(t.name == name for t in ctx.tensors):
            kind, name = TensorKind.SCRATCH, f"{name}_{i}"
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
    for c in b.ids:
        core, load = b.cores[c], ctx.load[c]
        load.emit("barrier", id=LOAD_BARRIER, count=b.participants)
        shift = len(load.code)
        core.code[:0] = load.code
        core.debug = load.debug + [(pc + shift, op, src) for pc, op, src in core.debug]
