"""A convolution step that builds its im2col tile in SRAM (conv.py's tile field `window` = 2).

A tap-per-DMA step reads every input pixel once per tap (ResNet's 7 x 7 stem: 49 times, 3.7 MB through
the one DRAM port for a 0.3 MB input), and a window step (`window` = 1) multiplies each tap alone, with K
= the group's channels (3 for the stem: the matrix unit's 8-deep steps mostly idle). A gathered step does
neither: it DMAs the input rows that its output rows read once, and copies each tap's window out of them
with the SIMD unit into a dense [taps x channels, pixels] tile, which one mma multiplies with K = taps x
channels.

A column stride s_w > 1 would make a tap's window every s_w-th staged column, which no SIMD or mma operand
can read; so the rows are staged in s_w column phases (one 3-D DMA per phase: phase f holds the input
columns c * s_w + f - padding of the output columns c of the item, zeros outside the image), and a tap
(kh, kw) reads phase (kw * d_w) % s_w from column (kw * d_w) // s_w on: a dense run. Its rows are every
s_h-th staged row, one copy per output row of the item.

Staged tile: [channels, phases, rows, columns] (rows `hr` = the item's output rows' input rows, columns
`hc` = the item's output columns and the taps' reach). Gathered tile: [(tap, channel), pixels], tap-major
as the weights' compile-time layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dojoc.codegen.kernels.mxu import Move, Operand, Step
from dojoc.codegen.kernels.window import Phases

if TYPE_CHECKING:
    from dojoc.codegen.kernels.conv import Conv


def staged(cv: Conv, rl: int, wl: int) -> Phases:
    """The staged input of rl output rows of wl columns."""
    return Phases.of((cv.kh, cv.kw), cv.stride, cv.dil, rl, wl)


def moves(cv: Conv, rl: int, wl: int) -> tuple[Move, ...]:
    """The copies that build the gathered tile out of the staged one: one per output row and tap, each the
    tap's window of every channel."""
    ph, pt = staged(cv, rl, wl), rl * wl
    return tuple(Move(ph.tap(r, *divmod(t, cv.kw)), cv.cg, ph.size, t * cv.cg * pt + r * wl, wl)
                 for r in range(rl) for t in range(cv.taps))


def gathered_step(cv: Conv, b: int, gi: int, r0: int, rl: int, c0: int, wl: int, aop: Operand) -> Step:
    """The one step of an item (image b, group gi, output rows r0.., columns c0..): its staged input rows,
    the copies of every tap's window, and A = `aop`, the weights of every tap and channel."""
    ph = staged(cv, rl, wl)
    bop = Operand(cv.cg * ph.size // ph.cols, ph.cols, gathered=(cv.taps * cv.cg, rl * wl), moves=moves(cv, rl, wl))
    for f, lds in enumerate(ph.loads(cv.x, b, gi * cv.cg, cv.cg, cv.kh, r0, rl, c0, cv.pad, 0, "conv2d")):
        if lds is None:  # the phase lies wholly in the padding: its rows of every channel are zeros
            bop.zero.extend(((c * ph.stride[1] + f) * ph.rows, ph.rows) for c in range(cv.cg))
        else:
            bop.loads += lds
    return Step(aop, bop)
