"""SUMMA's port and link costs: the cycles that one step's streamed DMA requests take the DRAM port (each
rounded up to whole cycles, as the port serves it) and the busiest first link out of the port's entry
routers. summa.estimate combines them with the compute, ejection and multicast terms.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from dojoc.codegen.context import Ctx
from dojoc.codegen.kernels.im2col import Im2col, Shifted
from dojoc.codegen.kernels.summa_chunks import a_chunk, b_chunk, b_source, x_dram, x_windows
from dojoc.codegen.kernels.summa_grid import Grid, loader, wave_split
from dojoc.codegen.view import View
from isa.costs import dram_cycles

if TYPE_CHECKING:
    from dojoc.codegen.kernels.held import Held
    from dojoc.codegen.kernels.matmul import Problem
    from dojoc.codegen.kernels.mxu import Spec
    from dojoc.codegen.kernels.summa_relay import Relay


def link_cycles(ctx: Ctx, p: Problem, g: Grid, kc: int, e: int, resident: str | None = None,
                 a_held: bool = False, missing: tuple[tuple[int, float], ...] = (), rl: Relay | None = None) -> float:
    """Cycles of one chunk on the busiest first link out of a DRAM entry router: every mesh row carries its
    A chunk and the B chunks (and slices) its cores load for chunk 0 (the load is the same every chunk);
    a resident operand's chunks come from SRAM, not from the port, but those `missing` from it, (loader,
    bytes), which found no resident room. A shifted convolution's A chunks are taps x kc wide, and its B
    chunks carry its halo, for each of its phases (a slice's only when no relay brings it: summa_relay.py)."""
    taps, halo = p.taps, p.halo
    mach = ctx.machine
    port = mach.dram_ports[0]
    load: dict[tuple[int, int], float] = {}

    def add(core: int, nbytes: float) -> None:
        r, c = mach.coords[core]
        entry = port.entry_router(mach, r, c)
        if entry != (r, c):
            load[entry] = load.get(entry, 0.0) + nbytes

    for i, row in enumerate(g.rows):
        if row and resident != "a" and not a_held:
            add(loader(row, i, 0), g.mblocks[i][1] * taps * kc * e)
    kept = p.b_kept
    for j, col in enumerate(g.cols):
        if col and resident != "b" and (kept is None or kept.owner(0, j) is None):
            add(loader(col, j, 0), p.phases * kc * (g.nblocks[j][1] + halo) * e)
    for core, (_, n) in g.extra.items():
        if resident != "b":
            add(core, kc * x_dram(p, core, n, x_windows(p, g.x_max, rl), rl) * e)
    for core, nbytes in missing:
        add(core, nbytes)
    return max(load.values(), default=0.0) / mach.link_bytes_per_cycle


def request_cycles(ctx: Ctx, p: Problem, spec: Spec, g: Grid, bounds: tuple[tuple[int, int], ...],
                    resident: str | None, held: Held | None, waves: int, b_share: float = 1.0,
                    rl: Relay | None = None) -> float:
    """Port cycles of one step's streamed DMA requests, each rounded up to whole cycles as the port serves
    it (`isa.costs.dram_cycles`), for a middle chunk (a border tap's windows are fewer): every row's A chunk
    (but a resident or held A's), every column's B chunk and the slices beside disabled cores (but a
    resident B's), with the rows or columns of one wave (waves cut the streamed operand only)."""
    bpc = ctx.machine.dram_ports[0].bytes_per_cycle
    k0, kl = bounds[len(bounds) // 2]
    e = spec.op.itemsize
    total = 0.0
    if resident != "a" and held is None:
        total += sum(_a_cycles(p.a[0], e, k0, kl, m0, wave_split(rows, waves)[0][1], bpc, p.taps, p.k)
                     for m0, rows in g.mblocks)
    if resident != "b":
        src, h = b_source(p), p.halo
        total += b_share * sum(_b_cycles(src, e, k0, kl, n0, wave_split(n, waves)[0][1] + h, bpc)
                               for n0, n in g.nblocks)
        # the slices: in every step with one wave, in the first wave's with more
        # (a slice whose halo a relay brings loads its own columns only)
        win = x_windows(p, g.x_max, rl)
        total += sum(_b_cycles(src, e, k0, kl, x0, nx, bpc) if rl is not None and core in rl.relayed
                     else _x_cycles(p, e, k0, kl, x0, nx, bpc, win) for core, (x0, nx) in g.extra.items()) / waves
    return total


# (cached: the search asks for the same chunks of every candidate)
@lru_cache(maxsize=1 << 14)
def _a_cycles(a: View, e: int, k0: int, kl: int, m0: int, m: int, bpc: int, taps: int = 1, k: int = 0) -> int:
    """Port cycles of the DMA requests of A's rows m0 .. m0 + m - 1, K elements k0 .. k0 + kl - 1 (of
    every tap of a shifted convolution)."""
    return sum(dram_cycles(tr.nbytes, bpc) for tr in a_chunk(a, e, kl, k0, kl, m0, m, 0, taps, k))


@lru_cache(maxsize=1 << 14)
def _b_cycles(src: View | Im2col | Shifted, e: int, k0: int, kl: int, n0: int, n: int, bpc: int) -> int:
    """Port cycles of the DMA requests of B's rows k0 .. k0 + kl - 1, columns n0 .. n0 + n - 1."""
    return sum(dram_cycles(ld.t.nbytes, bpc) for ld in b_chunk(src, e, k0, kl, n0, n, 0)[0])


def _x_cycles(p: Problem, e: int, k0: int, kl: int, x0: int, nx: int, bpc: int, windows: bool) -> int:
    """Port cycles of the DMA requests of a slice beside a disabled core (with `windows`, a shifted
    convolution's window per tap)."""
    if not windows or p.shift is None:
        return _b_cycles(b_source(p), e, k0, kl, x0, nx + p.halo, bpc)
    return sum(_b_cycles(p.shift.win, e, t * p.k + k0, kl, x0, nx, bpc) for t in range(p.taps))
