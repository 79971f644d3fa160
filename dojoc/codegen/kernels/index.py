"""Indexing: embedding, index_select and gather, all by DMA gather (`dmagat`) from DRAM.

A `dmagat` reads n rows of `rowbytes` contiguous bytes at table + index * tstride, for an SRAM tile of
i32 indices, and packs them in SRAM; the kernel then stores them to the output. So:

- embedding(weight [V, D], idx) gathers rows of the weight table: out[i, :] = weight[idx[i], :];
- index_select(x, idx, dim) views x as [A, Sd, R] (A = dims before `dim`, R = dims after, merged when
  the strides allow, else x is copied dense first) and gathers rows of R elements at the combined
  index a * Sd + idx[i]: the row offsets a * Sd come from a small constant column added with one `vadd`;
- gather(x, idx, dim) (torch.gather) gathers single elements: the flat index of out[pos] is
  idx[pos] * stride(dim) + sum over the other dims of pos_d * stride(d), the second term a compile-time
  constant tensor in DRAM.

Indices outside the table must not read other tensors' bytes silently (torch raises): before the gather,
a `vgather` through a table of `nt` = size rows, with row stride 0 (so it reads one real element), traps
on any index outside [0, size). Sizes beyond the 16-bit `nt` field fold the check into a 0/1 tile.
"""

from __future__ import annotations

from math import prod

import numpy as np

from dojoc.codegen.builder import R_A, R_B, R_C, R_D, R_IDX, R_SRAM, CoreCode
from dojoc.codegen.context import MAX_ROWS, Ctx, box_view, boxes, load_view, split, store_view, tile2d
from dojoc.codegen.kernels.copy import copy_view
from dojoc.codegen.registry import kernel
from dojoc.codegen.sems import INDEX
from dojoc.codegen.view import View
from dojoc.ir.graph import Node
from dojoc.ir.ops import Op
from dojoc.mapping.model import Bound
from isa.dtypes import DType
from isa.program import TensorKind

I32 = DType.I32
SEM_LOAD, SEM_STORE = INDEX.id("load"), INDEX.ids("store")  # the stores: one per row buffer
ROW_TILE = 128 * 1024  # bytes of gathered rows per buffer
MAX_NT = (1 << 16) - 1  # the vgather nt field


def _dense(ctx: Ctx, node: Node, v: View, what: str) -> View:
    """`v` itself when it is dense, else a dense copy in scratch DRAM (one more barrier)."""
    if v.is_dense():
        return v
    dst = ctx.dram(f"{node.name}_{what}", TensorKind.SCRATCH, v.shape, v.dtype)
    copy_view(ctx, v, dst, f"{node.name} {what}", node.source)
    ctx.builder.barrier()
    ctx.begin_op()
    return dst


def check_bounds(cc: CoreCode, idx: int, n: int, bound: int, scratch: int) -> None:
    """Trap when any of the n i32 indices at `idx` lies outside [0, bound); `scratch` holds 6n bytes."""
    if bound <= MAX_NT:  # gather through a stride-0 table of `bound` rows: the emulator checks every index
        cc.emit("vgather", rd=cc.reg(R_D, scratch), rt=cc.reg(R_A, idx), ri=cc.reg(R_IDX, idx), n=n, cols=1,
                sd=4, st=0, dt=I32, nt=bound)
        return
    bad, high, flag = scratch, scratch + n, scratch + 2 * n  # bool, bool, i32 (n * 4 bytes)
    tile = {"rows": 1, "cols": n, "sd": n, "sa": n * 4, "dt": I32}
    cc.emit("vlts", rd=cc.reg(R_D, bad), ra=cc.reg(R_A, idx), imm=0.0, **tile)
    cc.emit("vges", rd=cc.reg(R_D, high), ra=cc.reg(R_A, idx), imm=float(bound), **tile)
    cc.emit("vor", rd=cc.reg(R_D, bad), ra=cc.reg(R_A, bad), rb=cc.reg(R_B, high), rows=1, cols=n, sd=n, sa=n,
            sb=n, dt=DType.BOOL)
    cc.emit("vcvt", rd=cc.reg(R_D, flag), ra=cc.reg(R_A, bad), rows=1, cols=n, sd=n * 4, sa=n, dtd=I32,
            dts=DType.BOOL)
    cc.emit("vgather", rd=cc.reg(R_D, scratch), rt=cc.reg(R_A, flag), ri=cc.reg(R_IDX, flag), n=n, cols=1,
            sd=4, st=0, dt=I32, nt=1)


def _dmagat(cc: CoreCode, dst: int, table: int, idx: int, n: int, rowbytes: int, tstride: int, sem: int) -> None:
    cc.emit("dmagat", rs=cc.reg(R_SRAM, dst), rm=cc.reg(R_C, table), ri=cc.reg(R_IDX, idx), n=n,
            rowbytes=rowbytes, tstride=tstride, sem=sem)


def take_rows(ctx: Ctx, node: Node, table: View, idx: View, out: View) -> None:
    """out[a, i, :] = table[a, idx[i], :] for table [A, Sd, R] whose rows (R) are contiguous and whose
    a-stride is a multiple of its row stride; idx [n] int (i32 storage); out [A, n, R]."""
    A, Sd, R = table.shape
    n = idx.shape[0]
    es = table.dtype.itemsize
    s_a, s_row = table.strides[0], table.strides[1]
    assert R == 1 or table.strides[2] == es, table
    assert A == 1 or (s_row and s_a % s_row == 0), table
    # tiles: rows of cn elements, at most ROW_TILE bytes and 4095 rows (one index tile, one bounds check)
    cn = min(R, max(1, ROW_TILE // es))
    nb = max(1, min(MAX_ROWS, ROW_TILE // (cn * es)))
    inn = min(n, nb)
    an = min(A, max(1, nb // inn))
    items = [(a0, min(an, A - a0), i0, min(inn, n - i0), c0, min(cn, R - c0))
             for a0 in range(0, A, an) for i0 in range(0, n, inn) for c0 in range(0, R, cn)]
    offsets = None
    if A > 1:  # the combined row index a * (s_a / s_row) + idx
        offsets = ctx.weight(f"{node.name}_rowoffsets", (np.arange(A) * (s_a // s_row)).reshape(A, 1), I32)
    nbytes = A * n * R * es
    cores = ctx.region("take_rows", 2 * nbytes / ctx.machine.link_bytes_per_cycle, len(items), axis="items",
                       bound=Bound.LINK, dram_bytes=2 * nbytes)
    for core, (first, count) in zip(cores, split(len(items), len(cores)), strict=False):
        cc = ctx.core(core)
        sram = ctx.sram[core]
        rows = tuple(sram.alloc(an * inn * cn * es, f"{node.name} rows") for _ in range(2))
        ids = sram.alloc(an * inn * 4, f"{node.name} indices")
        off = sram.alloc(an * 4, f"{node.name} row offsets") if offsets is not None else -1
        chk = sram.alloc(an * inn * 6, f"{node.name} bounds check")
        pending, have = [0, 0], None
        with cc.op(node.name, node.source):
            for j, (a0, na, i0, ni, c0, nc) in enumerate(items[first:first + count]):
                b = j % 2
                if have != (a0, na, i0, ni):  # the combined indices of this (a, i) block
                    loads = load_view(cc, idx.slice(0, i0, i0 + ni).expand((na, ni)), ids, SEM_LOAD)
                    if offsets is not None:
                        loads += load_view(cc, offsets.slice(0, a0, a0 + na), off, SEM_LOAD)
                    cc.wait(SEM_LOAD, loads)
                    check_bounds(cc, ids, na * ni, Sd, chk)
                    if offsets is not None:
                        cc.emit("vadd", rd=cc.reg(R_D, ids), ra=cc.reg(R_A, ids), rb=cc.reg(R_B, off), rows=na,
                                cols=ni, sd=ni * 4, sa=ni * 4, sb=4, bcb="col", dt=I32)
                    have = (a0, na, i0, ni)
                cc.wait(SEM_STORE[b], pending[b])  # this buffer's previous rows have left
                _dmagat(cc, rows[b], table.base + c0 * es, ids, na * ni, nc * es, s_row, SEM_LOAD)
                cc.wait(SEM_LOAD, 1)
                dst = out.slice(0, a0, a0 + na).slice(1, i0, i0 + ni).slice(2, c0, c0 + nc)
                pending[b] = store_view(cc, rows[b], dst, SEM_STORE[b])
            cc.wait(SEM_STORE[0], pending[0])
            cc.wait(SEM_STORE[1], pending[1])


def _rows_view(ctx: Ctx, node: Node, x: View, dim: int) -> View:
    """x as [A, Sd, R] around `dim` with contiguous rows (a dense copy when its strides do not allow)."""
    A, Sd, R = prod(x.shape[:dim]), x.shape[dim], prod(x.shape[dim + 1:])
    es = x.dtype.itemsize
    v = x.reshape((A, Sd, R))
    if v is None or not (R == 1 or v.strides[2] == es) or not (A == 1 or (v.strides[1] and
                                                                      v.strides[0] % v.strides[1] == 0)):
        v = _dense(ctx, node, x, "table").reshape((A, Sd, R))
        assert v is not None
    return v


def _flat(ctx: Ctx, node: Node, v: View, what: str) -> View:
    """A 1-D view of all of v's elements in row-major order (a dense copy when the strides forbid it)."""
    f = v.reshape((v.numel,))
    if f is None:
        f = _dense(ctx, node, v, what).reshape((v.numel,))
        assert f is not None
    return f


@kernel(Op.EMBEDDING)
def embedding(ctx: Ctx, node: Node) -> None:
    w, idx = node.inputs
    out = ctx.views[node.output]
    if out.numel == 0:
        return
    table = _rows_view(ctx, node, ctx.views[w], 0)
    flat = _flat(ctx, node, ctx.views[idx], "indices")
    dst = out.reshape((1, flat.shape[0], w.type.shape[1]))
    assert dst is not None
    take_rows(ctx, node, table, flat, dst)


@kernel(Op.INDEX_SELECT)
def index_select(ctx: Ctx, node: Node) -> None:
    x, idx = node.inputs
    dim = node.attrs["dim"]
    out = ctx.views[node.output]
    if out.numel == 0:
        return
    table = _rows_view(ctx, node, ctx.views[x], dim)
    flat = _flat(ctx, node, ctx.views[idx], "indices")
    A, _, R = table.shape
    dst = out.reshape((A, flat.shape[0], R))
    assert dst is not None
    take_rows(ctx, node, table, flat, dst)


@kernel(Op.GATHER)
def gather(ctx: Ctx, node: Node) -> None:
    """torch.gather: each output element is one gathered element of x (rows of one element)."""
    x, idx = node.inputs
    dim = node.attrs["dim"]
    out = ctx.views[node.output]
    shape = idx.type.shape
    if out.numel == 0:
        return
    xv = ctx.views[x]
    es = xv.dtype.itemsize
    if any(s % es for s in xv.strides):
        xv = _dense(ctx, node, xv, "table")
    # flat element offset of every position, without the gathered dim's term
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    offset = sum((g * (s // es) for d, (g, s) in enumerate(zip(grids, xv.strides, strict=True)) if d != dim),
                 np.zeros(shape, dtype=np.int64))
    off_v = ctx.weight(f"{node.name}_offsets", np.asarray(offset), I32)
    iv = ctx.views[idx]
    tiles = boxes(shape, MAX_ROWS)
    step = xv.strides[dim] // es
    cores = ctx.region("gather", out.numel * 16 / ctx.machine.link_bytes_per_cycle, len(tiles), axis="tiles",
                       bound=Bound.LINK)
    for core, (first, count) in zip(cores, split(len(tiles), len(cores)), strict=False):
        cc = ctx.core(core)
        sram = ctx.sram[core]
        ids = sram.alloc(MAX_ROWS * 4, f"{node.name} indices")
        off = sram.alloc(MAX_ROWS * 4, f"{node.name} offsets")
        chk = sram.alloc(MAX_ROWS * 6, f"{node.name} bounds check")
        vals = (sram.alloc(MAX_ROWS * es, f"{node.name} values"), sram.alloc(MAX_ROWS * es, f"{node.name} values"))
        pending = [0, 0]
        with cc.op(node.name, node.source):
            for j, (starts, sizes) in enumerate(tiles[first:first + count]):
                b = j % 2
                rows, cols = tile2d(sizes)
                n = rows * cols
                loads = load_view(cc, box_view(iv, starts, sizes), ids, SEM_LOAD)
                loads += load_view(cc, box_view(off_v, starts, sizes), off, SEM_LOAD)
                cc.wait(SEM_LOAD, loads)
                check_bounds(cc, ids, n, x.type.shape[dim], chk)
                tile = {"rows": 1, "cols": n, "sd": n * 4, "sa": n * 4, "dt": I32}
                if step != 1:
                    cc.emit("vmuls", rd=cc.reg(R_D, ids), ra=cc.reg(R_A, ids), imm=float(step), **tile)
                cc.emit("vadd", rd=cc.reg(R_D, ids), ra=cc.reg(R_A, ids), rb=cc.reg(R_B, off), sb=n * 4, **tile)
                cc.wait(SEM_STORE[b], pending[b])
                _dmagat(cc, vals[b], xv.base, ids, n, es, es, SEM_LOAD)
                cc.wait(SEM_LOAD, 1)
                pending[b] = store_view(cc, vals[b], box_view(out, starts, sizes), SEM_STORE[b])
            cc.wait(SEM_STORE[0], pending[0])
            cc.wait(SEM_STORE[1], pending[1])

