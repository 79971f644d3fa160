"""Copies between DRAM views through SRAM: materialised views, cat, constant padding."""

from __future__ import annotations

from math import prod

from dojoc.codegen.context import Ctx, box_view, boxes, load_view, split, store_view
from dojoc.codegen.kernels.eltwise import fill
from dojoc.codegen.registry import kernel
from dojoc.codegen.sems import COPY
from dojoc.codegen.view import View
from dojoc.ir.graph import Node
from dojoc.ir.ops import Op
from dojoc.mapping.model import Bound

_LOAD, _STORE = COPY.id("load"), COPY.ids("store")

COPY_TILE_BYTES = 64 * 1024


def copy_view(ctx: Ctx, src: View, dst: View, what: str, source: str | None) -> None:
    """Copy view `src` into view `dst` (same shape and type), spread over cores, through SRAM tiles."""
    assert src.shape == dst.shape and src.dtype == dst.dtype, (src, dst)
    esize = src.dtype.itemsize
    tiles = boxes(src.shape, max(1, COPY_TILE_BYTES // esize), max_rows=1 << 30, max_cols=1 << 30)
    cycles = prod(src.shape) * esize / ctx.machine.link_bytes_per_cycle
    cores = ctx.region("copy", cycles, len(tiles), axis="tiles", bound=Bound.LINK,
                       dram_bytes=2 * prod(src.shape) * esize)
    for core, (first, count) in zip(cores, split(len(tiles), len(cores)), strict=False):
        cc = ctx.core(core)
        buf = [ctx.sram[core].alloc(COPY_TILE_BYTES, f"{what} copy tile") for _ in range(2)]
        with cc.op(what, source):
            pending_store = [0, 0]
            for i, (starts, sizes) in enumerate(tiles[first:first + count]):
                b = i % 2
                cc.wait(_STORE[b], pending_store[b])  # the buffer's previous store has left
                n = load_view(cc, box_view(src, starts, sizes), buf[b], _LOAD)
                cc.wait(_LOAD, n)
                pending_store[b] = store_view(cc, buf[b], box_view(dst, starts, sizes), _STORE[b])
            cc.wait(_STORE[0], pending_store[0])
            cc.wait(_STORE[1], pending_store[1])


@kernel(Op.CAT)
def cat(ctx: Ctx, node: Node) -> None:
    """Each input is copied into its slice of the output."""
    out = ctx.views[node.output]
    dim = node.attrs["dim"]
    at = 0
    for i, x in enumerate(node.inputs):
        n = x.type.shape[dim]
        if n:
            copy_view(ctx, ctx.views[x], out.slice(dim, at, at + n), f"{node.name}[{i}]", node.source)
        at += n


@kernel(Op.PAD)
def pad(ctx: Ctx, node: Node) -> None:
    """Fill the output with the padding value, then copy the input into its interior."""
    out = ctx.views[node.output]
    fill(ctx, out, float(node.attrs["value"]), node.name, node.source)
    ctx.builder.barrier()
    ctx.begin_op()
    pads = node.attrs["pads"]
    inner = out
    for d in range(len(out.shape)):
        lo = pads[2 * d]
        inner = inner.slice(d, lo, lo + node.inputs[0].type.shape[d])
    copy_view(ctx, ctx.views[node.inputs[0]], inner, node.name, node.source)
