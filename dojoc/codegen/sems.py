"""The semaphore plan of the sync pass: every semaphore a kernel counts on, declared once, with its ids.

A core has `machine.semaphores` counting semaphores (32 on every preset; the instruction fields encode ids
0-31). A DMA, a put or a signal raises one (on the issuing core, or on the cores it reaches); a `wait`
takes a count off it. Kernels do not pick ids: each kernel family declares the *groups* it counts on (a
group is one semaphore per buffer it cycles through), in a `Layout`, and the layout gives every group its
ids, packed from 0 in declaration order. A layout may extend another whose groups are live beside its own
(a convolution chain member runs the matrix pipeline and its halo puts at once); a group may reuse the ids
of another that is never live at the same time (`alias`, with the reason in its doc).

Lifetimes (`Life`): almost every group is issued and waited for inside one op, between two barriers, so
every op's layout starts again at 0 and the generated code leaves every semaphore at zero when an op ends
(tests/e2e/test_sync_invariant.py). Two exceptions:
- the band's halo arrivals stay pending from a chain member into the next op, its halo reader (band.py
  takes care that the reader runs next), which runs the same layout and waits on them;
- the load phase (resident weights loaded once, before the first call) has its own groups, each waited for
  at once;
- in a pipeline (codegen/lanes.py) a stage's cores count the micro-batches the stage before has finished on
  the `handoff` semaphore: its signals arrive while the stage runs other ops. It takes the id of SUMMA's
  third `free_b` buffer, which no SUMMA in a pipeline uses (it takes 2 chunk buffers there), and which no
  other layout reaches (checked below).

The layouts are built when this module is imported, and every id must fit the instruction fields; ids
overlap only through a declared alias. A machine with fewer semaphores than a layout takes is a compile
error that names the op (`builder.CoreCode.emit`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from isa.table import BY_MNEMONIC

SEM_BITS = next(f.bits for f in BY_MNEMONIC["wait"].fields if f.name == "sem")


class Life(enum.Enum):
    """How long a group's counts stay pending."""

    OP = "op"  # issued and waited for inside one op
    INTO_NEXT = "into next op"  # still pending at the op's barrier; the next op waits for it
    LOAD = "load phase"  # the one-time loading of resident weights, waited for at once
    PIPELINE = "pipeline stage"  # signalled by the stage before, pending across the stage's ops


@dataclass(frozen=True)
class Group:
    """`size` semaphores that count one kind of event, one per buffer a kernel cycles through."""

    name: str
    size: int
    doc: str
    life: Life = Life.OP
    alias: tuple[str, int] | None = None  # (group, offset): reuse its ids from the offset on (never live at once)


@dataclass(frozen=True)
class Layout:
    """A kernel family's groups, live together, with their ids: packed from the end of `after` (the layout
    that runs beside it) in declaration order; an aliased group takes the ids of the one it names."""

    family: str
    groups: tuple[Group, ...]
    after: Layout | None = None
    _ids: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids: dict[str, tuple[int, ...]] = dict(self.after._ids) if self.after is not None else {}
        nxt = self.after.width if self.after is not None else 0
        for g in self.groups:
            if g.name in ids:
                raise ValueError(f"semaphore layout {self.family}: group {g.name} declared twice")
            if g.alias is not None:
                other, offset = g.alias
                base = ids[other][0] + offset
                ids[g.name] = tuple(range(base, base + g.size))
                continue
            ids[g.name] = tuple(range(nxt, nxt + g.size))
            nxt += g.size
        object.__setattr__(self, "_ids", ids)
        self._check()

    def _check(self) -> None:
        for name, ids in self._ids.items():
            if max(ids, default=0) >= 1 << SEM_BITS:
                raise ValueError(f"semaphore layout {self.family}: group {name} takes id {max(ids)}, beyond the "
                                 f"{1 << SEM_BITS} the instruction fields encode")

    @property
    def all_groups(self) -> tuple[Group, ...]:
        """This layout's groups and those of the layouts it extends."""
        return (*(self.after.all_groups if self.after is not None else ()), *self.groups)

    @property
    def width(self) -> int:
        """How many semaphores the layout takes (its highest id + 1)."""
        return max((i + 1 for ids in self._ids.values() for i in ids), default=0)

    def ids(self, name: str) -> tuple[int, ...]:
        """The ids of group `name`, one per buffer."""
        return self._ids[name]

    def id(self, name: str) -> int:
        """The id of a group of one semaphore."""
        ids = self._ids[name]
        assert len(ids) == 1, f"{self.family}.{name} has {len(ids)} semaphores"
        return ids[0]


# -- the load phase -----------------------------------------------------------------------------------
LOAD = Layout("load phase", (
    Group("weights", 1, "a matrix op's resident tiles (mxu.load_resident)", life=Life.LOAD),
    Group("vectors", 1, "a row op's resident vectors (rows.resident_or_scratch)", life=Life.LOAD),
))

# -- the matrix pipeline (mxu.Pipeline): tiled matmul and convolution, chain members ---------------------
MXU = Layout("matrix pipeline", (
    Group("staged", 2, "the staged operands of a step, by the parity of the step"),
    Group("stores", 2, "the stores of a result buffer, by item parity"),
    Group("epilogue", 2, "an item's epilogue operands (biases, residual, norm weights), by item parity"),
))
SHARED_A = Layout("shared A", (
    Group("dma", 1, "the A panel's chunk DMAs"),
    Group("arrive", 1, "chunks arrived by multicast"),
    Group("sent", 1, "this core's multicast sources free"),
), after=MXU)
BAND = Layout("convolution chain", (
    Group("halo", 2, "halo rows arrived in this core's slot, alternating along the chain: pending into the next "
                  "op, the halo reader, which waits for them before its first mma", life=Life.INTO_NEXT),
    Group("sent", 1, "this core's halo puts whose source has left"),
), after=MXU)

# -- SUMMA (summa_emit.py): one group per chunk buffer (summa.DEPTHS up to 3) ----------------------------
DEPTH = 3
SUMMA = Layout("summa", (
    Group("dma_a", DEPTH, "the row loader's DMAs of an A chunk"),
    Group("dma_b", DEPTH, "the column loader's DMAs of a B chunk"),
    Group("arr_a", DEPTH, "an A chunk arrived by row multicast"),
    Group("arr_b", DEPTH, "a B chunk arrived by column multicast"),
    Group("src_a", DEPTH, "the A loader's multicast source free"),
    Group("src_b", DEPTH, "the B loader's multicast source free"),
    Group("dma_x", DEPTH, "the slice DMAs of a core beside a disabled core"),
    Group("free_a", DEPTH, "done with an A buffer: to the loader that refills it"),
    Group("free_b", DEPTH, "done with a B buffer: to the loader that refills it"),
    Group("store", 2, "the stores of an output buffer (and the sources of its held slices' puts)"),
    Group("aux", 1, "the epilogue's bias and residual loads; a layer norm's second exchange, once they are all in"),
    Group("arrive", 1, "slices put into a holder's assembled block (held.py)"),
    Group("norm", 1, "a layer norm's first row-sum exchange (arrivals and sources)"),
    Group("relay", 2, "a shifted convolution's slice halos arrived, by step parity: the relay runs with neither a "
                   "held output (arrive) nor a layer norm (norm)", alias=("arrive", 0)),
    Group("relay_src", 1, "the sources of the relay's halo puts free: the third buffer's slice DMAs, unused at the "
                       "relay's depth of 2", alias=("dma_x", 2)),
))

# -- row ops (rows.py: softmax, norms, reductions) ------------------------------------------------------
ROWS = Layout("row ops", (
    Group("load", 2, "the tile loads of a streaming slot"),
    Group("store", 4, "the stores leaving from one buffer"),
))

# -- the other kernels ----------------------------------------------------------------------------------
ATTENTION = Layout("attention", (
    Group("load0", 1, "buffer set 0's loads (Q, K/V chunk, mask)"),
    Group("store0", 1, "buffer set 0's output stores"),
    Group("kv", 1, "K and V pieces arrived from the head's other cores, or Q, K and V pieces from the cores "
                   "that hold them (held_read.py)"),
    Group("sent", 1, "the sources of this core's K/V puts (or held pieces' puts) free"),
    Group("mine", 1, "this core's share of a head's K and V"),
    Group("load1", 1, "buffer set 1's loads"),
    Group("store1", 1, "buffer set 1's output stores"),
    Group("held_out", 1, "pieces of the output put into this core's blocks, held for the next matmul "
                         "(held_read.py)"),
))
POOL = Layout("pool", (
    Group("load", 1, "window and index loads"),
    Group("store", 1, "value and index stores"),
    Group("tap", 2, "a tap's staged rows, by buffer"),
    Group("staged_stores", 2, "a staged max pool's stores, by output buffer: it loads only through its taps",
          alias=("load", 0)),
))
INDEX = Layout("index", (
    Group("load", 1, "index tiles and gathers"),
    Group("store", 2, "the stores of a row buffer"),
))
DEPTHWISE = Layout("depthwise", (
    Group("load", 2, "the loads of a staging parity"),
    Group("store", 2, "the stores of a result buffer"),
))
COPY = Layout("copy", (
    Group("load", 1, "a tile's load"),
    Group("store", 2, "the stores of a buffer"),
))
ELTWISE = Layout("eltwise", (
    Group("load", 1, "a tile's operand loads"),
    Group("store", 1, "a tile's stores"),
))

# -- a pipeline's handoffs (lanes.py) ----------------------------------------------------------------
PIPELINE_DEPTH = DEPTH - 1  # SUMMA's chunk buffers in a pipeline: its last buffer's free_b id counts handoffs
PIPELINE = Layout("pipeline", (
    Group("handoff", 1, "micro-batches the stage before has finished (its leader's signal after its last "
                        "barrier of one): pending across this stage's ops, taken as the stage starts the next",
          life=Life.PIPELINE, alias=("free_b", PIPELINE_DEPTH)),
), after=SUMMA)

LAYOUTS = (LOAD, MXU, SHARED_A, BAND, SUMMA, ROWS, ATTENTION, POOL, INDEX, DEPTHWISE, COPY, ELTWISE)
MOST = max(layout.width for layout in LAYOUTS)  # the semaphores a core needs for every kernel
HANDOFF = PIPELINE.id("handoff")


def check_handoff(layouts: tuple[Layout, ...] = LAYOUTS) -> None:
    """The handoff id is live beside every kernel of a stage: only SUMMA's unused third buffer may take it."""
    spare = (SUMMA.family, "free_b", PIPELINE_DEPTH)  # the one place the id may appear
    for layout in layouts:
        for g in layout.all_groups:
            ids = layout.ids(g.name)
            if HANDOFF in ids and (layout.family, g.name, ids.index(HANDOFF)) != spare:
                raise ValueError(f"semaphore layout {layout.family}: group {g.name} takes id {HANDOFF}, the "
                                 "pipeline's handoff semaphore, live beside every kernel of a stage")


check_handoff()
