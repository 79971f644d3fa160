"""Elementwise kernels: unary, binary, where, cast, clamp, and fill.

The output is cut into row-major boxes (one 2-D SRAM tile each) dealt to cores in contiguous runs. For
each box a core loads the matching box of every broadcast input (a DMA with stride-0 dimensions), runs
one SIMD instruction over the tile and stores the result. Scalar constants become the scalar-immediate
form of the instruction (`vadds`, ...), or a `vfill`ed tile when they are the left operand.
"""

from __future__ import annotations

from math import prod

from dojoc.codegen.builder import R_A, R_B, R_C, R_D, CoreCode
from dojoc.codegen.context import Ctx, box_view, boxes, load_view, split, store_view, tile2d
from dojoc.codegen.epilogue import emit_pointwise
from dojoc.codegen.registry import kernel
from dojoc.codegen.sems import ELTWISE
from dojoc.codegen.view import View
from dojoc.errors import CompileError
from dojoc.ir.epilogue import steps_of
from dojoc.ir.graph import Node, Value
from dojoc.ir.ops import Op
from dojoc.mapping.model import Bound
from isa.dtypes import DType

_LOAD, _STORE = ELTWISE.id("load"), ELTWISE.id("store")

TILE_BYTES = 32 * 1024  # per operand tile

UNARY = {
    Op.RELU: "vrelu", Op.SILU: "vsilu", Op.SIGMOID: "vsigmoid", Op.TANH: "vtanh", Op.EXP: "vexp",
    Op.LOG: "vlog", Op.SQRT: "vsqrt", Op.RSQRT: "vrsqrt", Op.ABS: "vabs", Op.NEG: "vneg", Op.ERF: "verf",
    Op.LOGICAL_NOT: "vnot",
}
BINARY = {
    Op.ADD: "add", Op.SUB: "sub", Op.MUL: "mul", Op.DIV: "div", Op.POW: "pow", Op.MAXIMUM: "max",
    Op.MINIMUM: "min", Op.EQ: "eq", Op.NE: "ne", Op.LT: "lt", Op.LE: "le", Op.GT: "gt", Op.GE: "ge",
    Op.LOGICAL_AND: "and", Op.LOGICAL_OR: "or", Op.LOGICAL_XOR: "xor",
}
# a constant on the left: swap the operands of these (with the mirrored comparison)
SWAP = {"add": "add", "mul": "mul", "max": "max", "min": "min", "eq": "eq", "ne": "ne", "and": "and",
        "or": "or", "xor": "xor", "lt": "gt", "gt": "lt", "le": "ge", "ge": "le"}


def _tile(rows: int, cols: int, dt: DType, out: DType) -> dict[str, object]:
    return {"rows": rows, "cols": cols, "sd": cols * out.itemsize, "sa": cols * dt.itemsize}


def _emit(cc: CoreCode, ctx: Ctx, node: Node, addrs: dict[Value, int], consts: dict[Value, float],
          out: int, rows: int, cols: int) -> None:
    """The SIMD instruction(s) of `node` over one tile."""
    ins = node.inputs
    dt = ctx.storage(ins[0].type.dtype)
    t = _tile(rows, cols, dt, ctx.storage(node.output.type.dtype))
    op = node.op
    if op in UNARY or op is Op.GELU:
        m = UNARY.get(op) or ("vgelut" if node.attrs["approximate"] == "tanh" else "vgelu")
        cc.emit(m, rd=cc.reg(R_D, out), ra=cc.reg(R_A, addrs[ins[0]]), dt=dt, **t)
    elif op is Op.CLAMP:
        src = addrs[ins[0]]
        lo, hi = node.attrs["min"], node.attrs["max"]
        if lo is None and hi is None:
            cc.emit("vmov", rd=cc.reg(R_D, out), ra=cc.reg(R_A, src), dt=dt, **t)
        for m, bound in (("vmaxs", lo), ("vmins", hi)):
            if bound is not None:
                cc.emit(m, rd=cc.reg(R_D, out), ra=cc.reg(R_A, src), imm=float(bound), dt=dt, **t)
                src = out
    elif op is Op.CAST:
        cc.emit("vcvt", rd=cc.reg(R_D, out), ra=cc.reg(R_A, addrs[ins[0]]), rows=rows, cols=cols,
                sd=cols * ctx.storage(node.output.type.dtype).itemsize, sa=cols * dt.itemsize,
                dtd=ctx.storage(node.output.type.dtype), dts=dt)
    elif op in BINARY:
        name = BINARY[op]
        x, y = ins
        mode = node.attrs["rounding_mode"] if op is Op.DIV else None
        # vdiv truncates integer quotients; floats floor with vfloor after it
        if mode not in (None, "floor" if dt.is_float else "trunc"):
            raise node.error(f"div with rounding_mode={mode!r} on {dt.asm} is not supported yet", CompileError)
        if x in consts and y not in consts and name in SWAP:
            x, y, name = y, x, SWAP[name]
        if y in consts and x not in consts:
            cc.emit(f"v{name}s", rd=cc.reg(R_D, out), ra=cc.reg(R_A, addrs[x]), imm=float(consts[y]), dt=dt, **t)
        else:
            cc.emit(f"v{name}", rd=cc.reg(R_D, out), ra=cc.reg(R_A, addrs[x]), rb=cc.reg(R_B, addrs[y]),
                    sb=cols * dt.itemsize, dt=dt, **t)
        if mode == "floor":
            cc.emit("vfloor", rd=cc.reg(R_D, out), ra=cc.reg(R_A, out), dt=dt, **t)
    elif op is Op.WHERE:
        c, x, y = ins
        dt = ctx.storage(x.type.dtype)
        s = cols * dt.itemsize
        cc.emit("vsel", rd=cc.reg(R_D, out), rc=cc.reg(R_C, addrs[c]), ra=cc.reg(R_A, addrs[x]),
                rb=cc.reg(R_B, addrs[y]), rows=rows, cols=cols, sd=s, sc=cols, sa=s, sb=s, dt=dt)
    else:
        raise AssertionError(op)


@kernel(*UNARY, *BINARY, Op.GELU, Op.CLAMP, Op.CAST, Op.WHERE)
def elementwise(ctx: Ctx, node: Node) -> None:
    out_v = ctx.views[node.output]
    shape = node.output.type.shape
    if not shape:  # a rank-0 result: one 1-element box (inputs broadcast to it by expand below)
        shape = (1,)
        out_v = out_v.expand(shape)
    consts = {v: ctx.consts[v] for v in node.inputs if v in ctx.consts}
    # a constant that is not the scalar operand of a binary op is materialised with vfill
    fill_consts = set(consts) if node.op not in BINARY or len(consts) > 1 else set()
    if node.op in BINARY and len(consts) == 1:
        (cv,) = consts
        if cv is node.inputs[0] and BINARY[node.op] not in SWAP:
            fill_consts = {cv}
    loaded = [v for v in dict.fromkeys(node.inputs) if v not in consts]
    widths = [ctx.storage(v.type.dtype).itemsize for v in node.inputs] + [out_v.dtype.itemsize]
    moved = prod(shape) * sum(widths)
    cycles = moved / ctx.machine.link_bytes_per_cycle + prod(shape) * max(widths) / ctx.machine.simd_bytes
    # tiles small enough that every core the work asks for gets one (a [128, 768] add in 32 KiB tiles
    # would run on 7 cores, each moving 96 KiB through its one link)
    per_core = -(-prod(shape) // ctx.cores_for(cycles, prod(shape)))
    tiles = boxes(shape, max(1, min(TILE_BYTES // max(widths), per_core)))
    cores = ctx.region("eltwise", cycles, len(tiles), axis="tiles", bound=Bound.LINK, dram_bytes=moved)
    for core, (first, count) in zip(cores, split(len(tiles), len(cores)), strict=False):
        cc = ctx.core(core)
        sram = ctx.sram[core]
        addrs = {v: sram.alloc(TILE_BYTES, f"{node.name} input {v}") for v in loaded + sorted(
            fill_consts, key=str)}
        out = sram.alloc(TILE_BYTES, f"{node.name} output")
        with cc.op(node.name, node.source):
            for v in fill_consts:
                dt = ctx.storage(v.type.dtype)
                r, c = tile2d(tiles[first][1])
                cc.emit("vfill", rd=cc.reg(R_D, addrs[v]), imm=float(consts[v]), rows=r, cols=c,
                        sd=c * dt.itemsize, dt=dt)
            pending = 0
            for starts, sizes in tiles[first:first + count]:
                rows, cols = tile2d(sizes)
                n = 0
                for v in loaded:
                    src = ctx.views[v].expand(shape) if ctx.views[v].shape != shape else ctx.views[v]
                    n += load_view(cc, box_view(src, starts, sizes), addrs[v], _LOAD)
                cc.wait(_STORE, pending)  # the previous tile's store has left the output buffer
                cc.wait(_LOAD, n)
                _emit(cc, ctx, node, addrs, consts, out, rows, cols)
                for step in steps_of(node.attrs):  # fused scale and activation steps (the fuse pass)
                    emit_pointwise(cc, step, out, rows, cols, cols * out_v.dtype.itemsize, out_v.dtype)
                pending = store_view(cc, out, box_view(out_v, starts, sizes), _STORE)
            cc.wait(_STORE, pending)


def fill(ctx: Ctx, dst: View, value: float, what: str, source: str | None) -> None:
    """Fill a DRAM view with one value."""
    tiles = boxes(dst.shape, max(1, TILE_BYTES // dst.dtype.itemsize))
    cycles = dst.nbytes / ctx.machine.link_bytes_per_cycle
    cores = ctx.region("fill", cycles, len(tiles), axis="tiles", bound=Bound.LINK, dram_bytes=dst.nbytes)
    for core, (first, count) in zip(cores, split(len(tiles), len(cores)), strict=False):
        cc = ctx.core(core)
        buf = ctx.sram[core].alloc(TILE_BYTES, f"{what} fill tile")
        with cc.op(what, source):
            rows, cols = tile2d(tiles[first][1])
            cc.emit("vfill", rd=cc.reg(R_D, buf), imm=value, rows=rows, cols=cols, sd=cols * dst.dtype.itemsize,
                    dt=dst.dtype)
            n = 0
            for starts, sizes in tiles[first:first + count]:
                n += store_view(cc, buf, box_view(dst, starts, sizes), _STORE)
            cc.wait(_STORE, n)
