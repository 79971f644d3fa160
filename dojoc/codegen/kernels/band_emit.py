"""The code of a chain's member (band.py): its decision, its items on the tiled convolution's pipeline with the
input and the residual taken from the slots of the members before it, and its own output written into its
slots, padded, with the halo rows put into the neighbouring items' slots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dojoc.codegen.builder import R_A, R_C, R_D, CoreCode
from dojoc.codegen.context import Ctx, split
from dojoc.codegen.kernels.band import SENT, Band, Member, head_steps, items_of, pieces_of, slot_bytes
from dojoc.codegen.kernels.conv import _TILE, Conv, Plan, _axes, _resident, item_steps, residual_operand
from dojoc.codegen.kernels.mxu import F32, Item, Operand, Part, Pipeline, Spec, Step
from dojoc.codegen.sram import hold
from dojoc.codegen.view import Transfer, transfers
from dojoc.errors import MappingError, SramOverflowError
from dojoc.ir.graph import Node
from dojoc.mapping.model import Bound, OpMapping, Shard


def _decide(ctx: Ctx, node: Node, cv: Conv, spec: Spec, m: Member) -> tuple[int, int, int]:
    """The member's decision (its chain's cores and rows, all output channels and columns, its steps:
    a head's from DRAM by the cost model or the mapping, a reader's every tap and channel from its slot);
    returns (taps, channels, window) of its steps."""
    heads = head_steps(ctx, cv, spec, m) if m.source is None else {(cv.taps, cv.c, 0): (m.predicted, m.bound)}
    best = min(heads, key=lambda k: heads[k][0])

    def om_for(steps: tuple[int, int, int], cycles: int, bound: Bound) -> OpMapping:
        tn, cl, win = steps
        tile = tuple(zip(_TILE, (cv.o, m.rt, cv.ow, tn, cl), strict=True)) + ((("window", win),) if win else ()) \
            + (("band", 1),)
        return OpMapping("", "conv2d", m.cores, _axes(cv, cv.o, m.rt, cv.ow), tile, True, predicted_cycles=cycles,
                         bound=bound)

    def predicted(steps: tuple[int, int, int]) -> tuple[int, Bound]:
        return (m.predicted, m.bound) if steps == best else heads[steps]

    def default() -> OpMapping:
        return om_for(best, *predicted(best))

    def check(om: OpMapping) -> OpMapping:
        want = {"out_channels": cv.o, "rows": m.rt, "cols": cv.ow}
        for k, v in want.items():
            if om.tile_of(k) != v:
                raise MappingError(f"op {om.key}: tile {k}={om.tile_of(k)}, but in a chain (band=1) an item has "
                                   f"all {cv.o} output channels, all {cv.ow} columns and the chain's rows: "
                                   f"give {k}={v}")
        steps = (int(om.tile_of("taps") or 0), int(om.tile_of("channels") or 0), int(om.tile_of("window", 0) or 0))
        if steps not in heads:
            legal = "; ".join(f"taps={t}, channels={c}, window={w}" for t, c, w in heads)
            raise MappingError(f"op {om.key}: tile taps/channels/window {steps} is not a step of this chain member "
                               f"(band=1); give one of: {legal}")
        if tuple(om.cores) != m.cores or not om.resident:
            raise MappingError(f"op {om.key}: a chain member (band=1) runs on its chain's cores with its weights "
                               "resident; give it the same cores as the other members and resident true")
        return replace(om_for(steps, *predicted(steps)), op=om.op, part=om.part)

    om = ctx.decide("conv2d", default, check)
    return int(om.tile_of("taps") or 0), int(om.tile_of("channels") or 0), int(om.tile_of("window", 0) or 0)


def _slots(ctx: Ctx, node: Node, cv: Conv, spec: Spec, m: Member, items: list[tuple[int, int]],
           runs: list[tuple[int, int]]) -> Band:
    """Hold the member's slots at one address on every core of its chain."""
    per = max(n for _, n in runs)
    hr, hc = m.rt + 2 * m.hp, cv.ow + 2 * m.wp
    nbytes = per * slot_bytes(cv.o, hr, hc, spec.out)
    cores = m.cores[:len(runs)]
    addr = hold([ctx.sram[c] for c in cores], nbytes, f"{node.name}'s rows kept for {', '.join(m.readers)}")
    where = {items[first + k]: (core, k) for core, (first, count) in zip(cores, runs, strict=False)
             for k in range(count)}
    band = Band(m, cv.o, cv.oh, cv.ow, spec.out, addr, tuple(items), where)
    ctx.band_live[node.name] = band
    shards = tuple(Shard(core, band.addr + k * band.size, band.size) for core, k in sorted(where.values()))
    sub = f"; its DRAM copy has one row and column in {m.step}, all that its other readers read" if m.step > 1 else ""
    ctx.band_shards[cv.out.base] = (f"rows of its chain's items on {len(cores)} cores, kept for "
                                    f"{', '.join(m.readers)}{sub}", shards, m.dram)
    return band


def _from_slot(cv: Conv, src: Band, item: tuple[int, int], a: Operand, first: int, rows: int) -> list[Step]:
    """A reader's one step: its input multiplied in place from the source's slot of the same item (its rows
    first .. first + rows - 1)."""
    slot, e = src.slot(item)[1], src.dtype.itemsize
    hp, wp, rt = src.member.hp, src.member.wp, src.member.rt
    if cv.taps == 1 and (hp, wp) == (0, 0):  # a dense [C, rows x W] tile
        return [Step(a, Operand(cv.c, rows * cv.ow, addr=slot + first * cv.ow * e, stride=rt * cv.ow * e))]
    ph, pw = cv.pad
    parts = tuple(Part(t * cv.c, cv.c, (hp - ph + r + kh) * src.hc + (wp - pw + kw), src.chan, (r - first) * cv.ow,
                       cv.ow)
                  for r in range(first, first + rows) for t, (kh, kw) in enumerate(divmod(t, cv.kw)
                                                                                  for t in range(cv.taps)))
    return [Step(a, Operand(cv.c * src.hr, src.hc, addr=slot), parts)]


def _keep(cc: CoreCode, ob: Band, item: tuple[int, int], pt: int) -> tuple[Callable[[int], None], int]:
    """The item's keep hook (the FP32 tile into its slot, pads zeroed, halo rows put to its neighbours) and
    the number of puts it issues."""
    m, e, dt = ob.member, ob.dtype.itemsize, ob.dtype
    hp, wp, hr, hc, chan = m.hp, m.wp, ob.hr, ob.hc, ob.chan
    b, r0 = item
    slot = ob.slot(item)[1]
    above = (b, r0 - m.rt) if r0 > 0 and hp else None
    below = (b, r0 + m.rt) if r0 + m.rt < ob.h and hp else None
    move = "vmov" if dt is F32 else "vcvt"

    def conv_rows(acc: int, dst: int, cols: int, sd: int) -> None:
        kw = {"dt": F32} if dt is F32 else {"dtd": dt, "dts": F32}
        cc.emit(move, rd=cc.reg(R_D, dst), ra=cc.reg(R_A, acc), rows=ob.c, cols=cols, sd=sd, sa=pt * 4, **kw)

    if (hp, wp) == (0, 0):
        return _keep_rows(cc, ob, item, 0, m.rt), 0

    def keep(acc: int) -> None:
        for r in range(m.rt):
            conv_rows(acc + r * ob.w * 4, ob.row(item, hp + r), ob.w, chan * e)
        if wp:
            for col in (0, wp + ob.w):
                cc.emit("vfill", rd=cc.reg(R_D, slot + col * e), imm=0.0, rows=ob.c * hr, cols=wp, sd=hc * e, dt=dt)
        edge = ([range(hp)] if above is None else []) + ([range(hp + m.rt, hr)] if below is None else [])
        for rows in edge:
            for r in rows:
                cc.emit("vfill", rd=cc.reg(R_D, slot + r * hc * e), imm=0.0, rows=ob.c, cols=hc, sd=chan * e, dt=dt)
        for other, mine, theirs in ((above, range(hp, 2 * hp), range(hp + m.rt, hr)),
                                    (below, range(m.rt, m.rt + hp), range(hp))):
            if other is None:
                continue
            core = ob.slot(other)[0]
            for r, r2 in zip(mine, theirs, strict=True):
                cc.emit("put", rc=cc.reg(R_C, core), rd=cc.reg(R_D, ob.row(other, r2)), rs=cc.reg(R_A, ob.row(item, r)),
                        rows=ob.c, bytes=ob.w * e, ss=chan * e, ds=chan * e, seml=SENT, semr=m.sem)

    return keep, arrivals(ob, item)


def _stores(cv: Conv, m: Member, b: int, r0: int, src: int, row: int, chan: int, rt: int) -> list[Transfer]:
    """The DMAs of rt rows of output from r0 to DRAM from `src` (channel 0 of its first row; rows `row` and
    channels `chan` bytes apart): every row and column, or with a subsampled copy (`m.step`) only the rows
    and columns its readers read, at their places in the tensor."""
    s, eo = m.step, cv.out.dtype.itemsize
    sn, so, sh, sw = cv.out.strides
    first = -r0 % s
    rows = len(range(first, rt, s))
    if not rows:
        return []
    return transfers(src + first * row, cv.out.base + b * sn + (r0 + first) * sh,
                     [(cv.o, chan, so), (rows, s * row, s * sh), (-(-cv.ow // s), s * eo, s * sw)], eo)


def _keep_rows(cc: CoreCode, ob: Band, item: tuple[int, int], first: int, rows: int) -> Callable[[int], None]:
    """The keep hook of rows first .. first + rows - 1 of an item of an unpadded band: the FP32 tile
    [C, rows x W] into those rows of its slot."""
    e, dt, n = ob.dtype.itemsize, ob.dtype, rows * ob.w
    dst = ob.slot(item)[1] + first * ob.w * e
    kw = {"dt": F32} if dt is F32 else {"dtd": dt, "dts": F32}
    return lambda acc: cc.emit("vmov" if dt is F32 else "vcvt", rd=cc.reg(R_D, dst), ra=cc.reg(R_A, acc),
                               rows=ob.c, cols=n, sd=ob.chan * e, sa=n * 4, **kw)


def _waiter(cc: CoreCode, sem: int, count: int) -> Callable[[], None]:
    """Wait for a slot's halo arrivals (before the first mma that reads them)."""
    return lambda: cc.wait(sem, count)


def arrivals(src: Band, item: tuple[int, int]) -> int:
    """The halo puts an item's slot of `src` receives."""
    b, r0 = item
    m = src.member
    return m.hp * ((r0 > 0) + (r0 + m.rt < src.h))


def emit(ctx: Ctx, node: Node, cv: Conv, spec: Spec, m: Member) -> None:
    """Emit a chain member on its cores (band.py)."""
    tn, cl, win = _decide(ctx, node, cv, spec, m)
    items = items_of(cv.n, cv.oh, m.rt)
    runs = split(len(items), len(m.cores))
    plan = Plan(cv.o, m.rt, cv.ow, tn, cl, list(m.cores), True, win)
    out = _slots(ctx, node, cv, spec, m, items, runs) if m.readers else None
    src = ctx.band_live.get(m.source) if m.source is not None else None
    res = ctx.band_live.get(m.residual) if m.residual is not None else None
    assert (src is None) == (m.source is None) and (res is None) == (m.residual is None), node.name
    ew, eo = spec.a_src.itemsize, spec.out.itemsize
    pt = m.rt * cv.ow
    for core, (first, count) in zip(m.cores, runs, strict=False):
        mine = items[first:first + count]
        resident = _resident(ctx, node, core, cv, plan, spec, [(0, 0, b, r0, 0) for b, r0 in mine])
        if (0, 0) not in resident:
            raise SramOverflowError(f"op {node.name}: its weights do not fit the resident SRAM of core {core} beside "
                                    "the other members of its chain; give its chain band=0 in the mapping",
                                    node=node.name, shapes=node.signature(), source=node.source)
        w = resident[(0, 0)]
        cc = ctx.core(core)
        built, sent = [], 0
        bias = Operand(cv.o, 1, addr=w + -(-cv.o * cv.k * ew // 64) * 64) if cv.bias is not None else None
        rl, er = m.rt // pieces_of(m), spec.res_src.itemsize  # rows per accumulator tile
        for b, r0 in mine:
            a = Operand(cv.o, cv.k, addr=w, stride=cv.k * ew)
            for q0 in range(r0, r0 + m.rt, rl):
                steps = _from_slot(cv, src, (b, r0), a, q0 - r0, rl) if src is not None \
                    else item_steps(cv, spec, plan, tn, cl, b, 0, 0, cv.o, r0, m.rt, 0, cv.ow, w)
                rop = Operand(cv.o, rl * cv.ow, addr=res.slot((b, r0))[1] + (q0 - r0) * cv.ow * er,
                              stride=pt * er) if res is not None \
                    else residual_operand(cv, spec, b, 0, cv.o, q0, rl, 0, cv.ow)
                keep: Callable[[int], None] | None = None
                stores = []
                if out is not None and rl < m.rt:  # a row of an unpadded band, and its DRAM copy
                    keep = _keep_rows(cc, out, (b, r0), q0 - r0, rl)
                    stores = _stores(cv, m, b, q0, out.row((b, r0), q0 - r0), out.hc * eo, out.chan * eo, rl)
                elif out is not None:
                    keep, puts = _keep(cc, out, (b, r0), pt)
                    sent += puts
                    if m.dram:
                        stores = _stores(cv, m, b, r0, out.row((b, r0), m.hp), out.hc * eo, out.chan * eo, m.rt)
                else:
                    stores = _stores(cv, m, b, q0, 0, cv.ow * eo, rl * cv.ow * eo, rl)
                built.append(Item(cv.o, rl * cv.ow, steps, stores, bias, residual=rop, keep=keep))
        if m.waits and src is not None:
            built[0].steps[0] = replace(built[0].steps[0], before=_waiter(cc, src.member.sem,
                                                                          sum(arrivals(src, it) for it in mine)))
        Pipeline(ctx, core, node, spec, built).emit()
        if sent:
            with cc.op(node.name, node.source):
                cc.wait(SENT, sent)
