"""The halos of a shifted convolution's slices beside a disabled core, put by the cores that have them.

SUMMA cuts a disabled core's block into slices of its columns, one per core of its row (summa_grid.grid,
`Grid.extra`), and each of those cores loads its slice of every B chunk itself. A shifted convolution's B
(im2col.Shifted) carries a halo past every block of columns, the grid pixels its last taps read (two padded
rows and two pixels for a 3 x 3): a slice of 18 columns loads 30 more per phase for a stride-2 convolution
of ResNet-50's stage 1, so the slices of the six disabled cores of d1 read from DRAM about as much as all
the blocks of the mesh (stage 1's entry: 18,500 columns against 29,200 per chunk).

Here each slice's core DMAs only its own columns, into a buffer with room for the halo, and the halo comes
from the cores that have those columns already: the cores of the later slices of the same block, from their
slice buffers, and for the columns past the block, the core right of the disabled one, from the first
columns of its own B chunk (the next column block's). Every piece is one put of the chunk's rows (all
phases), counted on the receiver's RELAY semaphore of the step's parity; the receiver waits for its pieces
before it multiplies its slice.

Order without new handshakes: a core puts step s's pieces after step s's A chunk has reached it (or, as
that chunk's loader, after it multicast it); the A loader multicast it only once every core of the row had
signalled it free after step s - 2, so the receiver is done with its buffer of step s - 2, which these
pieces overwrite. A sender waits for its puts to leave (RELAY_SRC) before its step ends, so its own buffers
are free for step s + 2. The relay needs two chunk buffers (RELAY_SRC is the third buffer's slice
semaphore, unused then) and neither a held output (held.ARRIVE) nor a layer norm (NORM_SEMS): a shifted
convolution has neither. A slice whose halo runs past the last column block, or would come in more than
MAX_PIECES pieces, loads it from DRAM itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dojoc.codegen.builder import R_A, R_C, R_D, CoreCode
from dojoc.codegen.sems import SUMMA

if TYPE_CHECKING:
    from dojoc.codegen.kernels.matmul import Problem
    from dojoc.codegen.kernels.mxu import Spec
    from dojoc.codegen.kernels.summa_grid import Grid

RELAY = SUMMA.ids("relay")  # a slice's halo pieces arrived, by step parity
RELAY_SRC = SUMMA.id("relay_src")  # the sources of this core's halo puts have left (unused slice DMAs at depth 2)
# a slice takes its halo from at most this many pieces, else it loads it with its columns: narrow slices
# (ResNet-50 at batch 1: 2 columns, a 62-column halo from 30 cores) wait on too many small puts (a 3 x 3
# at 28 x 28 took 8,577 cycles against 6,779 loading its halos)
MAX_PIECES = 4


@dataclass(frozen=True)
class Piece:
    """Columns of a slice's halo: `count` columns put from `sender`'s slice buffer (or, `from_b`, its B
    chunk buffer) from column `src_col`, into `receiver`'s slice buffer from column `dst_col`."""

    sender: int
    receiver: int
    from_b: bool
    src_col: int
    dst_col: int
    count: int


@dataclass(frozen=True)
class Relay:
    """The halo pieces of a grid's slices, and the cores whose slices take their halo from them."""

    pieces: tuple[Piece, ...]
    relayed: frozenset[int]

    def sends(self, core: int) -> tuple[Piece, ...]:
        return tuple(pc for pc in self.pieces if pc.sender == core)

    def gets(self, core: int) -> int:
        return sum(1 for pc in self.pieces if pc.receiver == core)


def relay(p: Problem, g: Grid, depth: int, spec: Spec, resident: str | None, held: object = None,
          hold: object = None) -> Relay | None:
    """The relay of a shifted convolution's slice halos on grid `g` (the module docstring), or None: not a
    shifted convolution, not two chunk buffers, a `held` A, a `hold` output or a layer norm (they use the
    semaphores), waves that cut rows (a resident B), no slices, or a row with more than one disabled core."""
    if p.shift is None or depth != 2 or held is not None or hold is not None or spec.norm is not None \
            or resident == "b" or not g.extra:
        return None
    halo, cols = p.halo, len(g.nblocks)
    pieces: list[Piece] = []
    relayed: set[int] = set()
    for r, row in enumerate(g.rows):
        gone = [c for c in range(cols) if (r, c) not in g.at]
        if len(gone) > 1:
            return None
        if not gone:
            continue
        c = gone[0]
        end = sum(g.nblocks[c])  # the first column past the disabled block
        right = g.at.get((r, c + 1)) if c + 1 < cols else None
        slices = sorted((g.extra[core][0], g.extra[core][1], core) for core in row if core in g.extra)
        for i, (a, n, core) in enumerate(slices):
            lo, hi = a + n, a + n + halo
            if hi > end and right is None:
                continue  # (its halo runs past the last column block: it loads it from DRAM)
            mine = [Piece(other, core, False, max(lo, a2) - a2, max(lo, a2) - a, min(hi, a2 + n2) - max(lo, a2))
                    for a2, n2, other in slices[i + 1:] if max(lo, a2) < min(hi, a2 + n2)]
            if hi > end and right is not None:
                s0 = max(lo, end)
                mine.append(Piece(right, core, True, s0 - end, s0 - a, hi - s0))
            if len(mine) <= MAX_PIECES:
                pieces += mine
                relayed.add(core)
    return Relay(tuple(pieces), frozenset(relayed)) if relayed else None


def emit_step(cc: CoreCode, rl: Relay, g: Grid, core: int, s: int, rows: int, e: int, halo: int,
              slice_buf: int, b_buf: int, b_cols: int) -> int:
    """Put this core's pieces of step s (`rows` rows: the chunk's, every phase) from its slice buffer or its
    B chunk buffer (`b_cols` columns and the halo a row) into the receivers' slice buffers (the same
    address on every core), then wait for its own; returns how many it put."""
    sent = rl.sends(core)
    nx = g.extra[core][1] if core in g.extra else 0
    for pc in sent:
        src, ss = (b_buf, b_cols + halo) if pc.from_b else (slice_buf, nx + halo)
        cc.emit("put", rc=cc.reg(R_C, pc.receiver), rd=cc.reg(R_D, slice_buf + pc.dst_col * e),
                rs=cc.reg(R_A, src + pc.src_col * e), rows=rows, bytes=pc.count * e, ss=ss * e,
                ds=(g.extra[pc.receiver][1] + halo) * e, seml=RELAY_SRC, semr=RELAY[s % 2])
    if rl.gets(core):
        cc.wait(RELAY[s % 2], rl.gets(core))
    return len(sent)
