"""The memory plan: one static SRAM allocation per core over the whole program, with liveness.

A core's SRAM holds three kinds of bytes, as on the real machine (docs/compiler.md, "plan memory"):

- the *scratch* of the op that runs now, growing up from address 0 (ops are separated by synchronisation,
  so each op starts from 0 again); `floor` is the highest scratch top of any op so far;
- the *blocks* that outlive an op, growing down from the top: resident weights (loaded before the first
  call, live for the whole program) and held activations (from their producer to their last reader,
  kernels/held.py and band.py); `low` is the lowest address any block ever took;
- the *code*: the core's instruction stream, 16 bytes an instruction (`isa.table.WORD_BYTES`), in the gap
  [floor, low) that neither side ever reaches. Its size is known once every stream is emitted
  (`place_code`); while compiling, both sides keep the gap at least `code_reserve` wide. The reserve is the
  core's own: a core whose code outgrew the default (the one beside a disabled core computes its neighbour's
  slices too, twice the code of the others) compiles again with a wider gap, and only it.

There is no fixed boundary between resident and scratch bytes. A resident block is placed at `low` (never in
a gap a held value left: the resident is live during that value's ops too); a held value takes the highest
gap between live blocks that fits. One policy bound remains: an op's working set (its scratch and the values
held across it) stays within `scratch_limit`, so that an early op's large tiles cannot take the room that
later ops' weights need; residents may use everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dojoc.errors import SramOverflowError

ALIGN = 64
# Of a core's SRAM, the part an op's working set may take (the budget the kernels' tilings are tuned to):
# half. The rest is for resident weights and code, which share it with the working sets that stay smaller.
SCRATCH_SHARE = 2
# Of a core's SRAM, the part resident weights always leave to the working sets of later ops (an eighth:
# 163,840 bytes on d1; ResNet-50's largest is 114,304): residents placed before an op that needs more scratch
# than any op before it would otherwise leave it none, and the kernels fit their tiles to what is left.
MIN_SCRATCH_SHARE = 8
# The code gap kept free while compiling, as a share of SRAM (a fifth: 262,144 bytes on d1, whose largest
# stream, a 3 x 3 convolution core of ResNet-50 b1, takes 174,256). A stream that outgrows its gap compiles
# again with the gap its code took (lower.lower_graph).
CODE_SHARE = 5
# A compile that a core's code overflowed runs again with a wider gap on that core and on every core whose
# code came within a sixteenth of its gap: its code's bytes and a sixteenth more. Less room for residents
# streams a little more (streaming takes instructions), and the loaders and regions, chosen by free room,
# move about, so the cores near their limit need room to grow too; more slack costs residents (BERT-base b8:
# an eighth more, 1,922,061 cycles; a sixteenth, 1,918,055).
CODE_SLACK = 16


def aligned(nbytes: int) -> int:
    """`nbytes` rounded up to the SRAM allocator's alignment."""
    return -(-nbytes // ALIGN) * ALIGN


# the kinds of bytes a core's SRAM holds (CoreSram's fields but the core and what is free)
SRAM_PARTS = ("code", "resident", "scratch", "held")


@dataclass(frozen=True)
class CoreSram:
    """What one core's SRAM holds over the program (`SramPlan.usage`; the report's `sram` section), bytes."""

    core: int
    code: int  # the instruction stream
    resident: int  # resident weights and vectors, live for the whole program
    scratch: int  # the highest scratch top of any op
    held: int  # the extent of the activations held across ops (below the residents, gaps included)
    free: int  # what no part of the plan ever reached

    @property
    def peak(self) -> int:
        """The bytes the plan reaches (the SRAM's size less `free`)."""
        return sum(getattr(self, k) for k in SRAM_PARTS)


class CodeOverflow(Exception):  # noqa: N818 - internal: lower_graph compiles again with wider code gaps
    """Some cores' code outgrew the gap their data left (`SramPlan.code_gap`): `over` is {core: (code bytes,
    gap bytes)} of every such core, `near` {core: code bytes} of those and the cores that came within
    `CODE_SLACK` of theirs."""

    def __init__(self, over: dict[int, tuple[int, int]], near: dict[int, int] | None = None) -> None:
        core, (code, gap) = max(over.items(), key=lambda t: t[1][0] - t[1][1])
        super().__init__(f"{len(over)} core(s) short of code room; core {core}: {code:,} bytes of code, "
                         f"{gap:,} free")
        self.over, self.core, self.code, self.gap = over, core, code, gap  # core: the one shortest of room
        self.near = near if near is not None else {c: n for c, (n, _) in over.items()}


_ROOM_FIELDS = frozenset(("low", "held", "code_reserve", "scratch_limit"))  # what `SramPlan._top` reads


@dataclass
class SramPlan:
    """One core's SRAM over the program (module docstring): scratch from 0 up, blocks from the top down,
    code between."""

    size: int
    code_reserve: int = -1  # -1: size // CODE_SHARE
    scratch_limit: int = -1  # -1: size // SCRATCH_SHARE
    scratch_min: int = -1  # -1: size // MIN_SCRATCH_SHARE
    scratch: int = 0  # the current op's scratch top
    floor: int = 0  # the highest scratch top of any op
    low: int = -1  # the lowest address a block ever took (-1: size)
    resident: int = 0  # resident bytes
    blocks: list[tuple[int, int, bool]] = field(default_factory=list)  # live blocks: (address, bytes, resident)
    code: int = 0  # the code's bytes, once known (place_code)
    held: int = 0  # bytes of the activations held across ops now (the live blocks but the residents)

    # bumped whenever a field that `scratch_room` reads changes on any plan, so that a caller may keep the
    # room of many plans until it does (`Ctx.scratch_bytes`: a search asks it tens of thousands of times)
    epoch = 0  # (a class attribute, not a field)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in _ROOM_FIELDS:
            SramPlan.epoch += 1

    def __post_init__(self) -> None:
        if self.code_reserve < 0:
            self.code_reserve = aligned(self.size // CODE_SHARE)
        if self.scratch_limit < 0:
            self.scratch_limit = self.size // SCRATCH_SHARE // ALIGN * ALIGN
        if self.scratch_min < 0:
            self.scratch_min = self.size // MIN_SCRATCH_SHARE // ALIGN * ALIGN
        if self.low < 0:
            self.low = self.size

    # -- what is free -----------------------------------------------------------------------------------

    @property
    def _top(self) -> int:
        """The highest address the current op's scratch may reach: below every block and the code gap."""
        return min(self.low - self.code_reserve, self.scratch_limit - self.held)

    def scratch_free(self) -> int:
        """Bytes the current op may still take as scratch."""
        return max(self._top - self.scratch, 0)

    def scratch_room(self) -> int:
        """Bytes of scratch an op starting now could take (what `scratch_free` is at the start of an op)."""
        return max(self._top, 0)

    def resident_free(self, scratch: int = 0) -> int:
        """Bytes that resident weights may still take: down to the highest scratch so far (or `scratch`, the
        bytes the current op is about to take first, or the working set kept for later ops) and the code gap."""
        return max(self.low - max(self.floor, self.scratch, scratch, self.scratch_min) - self.code_reserve, 0)

    @property
    def peak(self) -> int:
        """The plan's bytes: the highest scratch, every block ever placed, and the code."""
        return self.floor + self.size - self.low + self.code

    def usage(self, core: int) -> CoreSram:
        """The core's bytes by kind; what the blocks took beyond the residents (held values, and the gaps
        between them) counts as held."""
        return CoreSram(core, self.code, self.resident, self.floor, self.size - self.low - self.resident,
                        self.size - self.peak)

    # -- allocation ---------------------------------------------------------------------------------------

    def alloc_resident(self, nbytes: int) -> int | None:
        """An address for resident bytes, or None when they do not fit (then the kernel streams)."""
        n = aligned(nbytes)
        if n > self.resident_free():
            return None
        self.low -= n
        self.resident += n
        self.blocks.append((self.low, n, True))
        return self.low

    def alloc(self, nbytes: int, what: str) -> int:
        """Scratch for the current op; SramOverflowError names the tensor when it cannot fit."""
        n = aligned(nbytes)
        if n > self.scratch_free():
            raise SramOverflowError(f"{what} needs {nbytes:,} bytes of SRAM scratch but only "
                                    f"{self.scratch_free():,} of {self.scratch_limit:,} are free; "
                                    "use a machine with more SRAM (--set sram_bytes=...) or smaller inputs")
        addr = self.scratch
        self.scratch += n
        self.floor = max(self.floor, self.scratch)
        return addr

    def release(self, addr: int) -> None:
        """Free the value held at `addr`."""
        self.held -= sum(n for a, n, res in self.blocks if a == addr and not res)
        self.blocks = [b for b in self.blocks if b[0] != addr or b[2]]

    def begin_op(self) -> None:
        """A new op: its scratch starts at 0."""
        self.scratch = 0

    @property
    def code_gap(self) -> int:
        """The bytes neither the scratch nor the blocks ever reached: where the code goes."""
        return self.low - self.floor

    def place_code(self, nbytes: int) -> None:
        """Place the core's `nbytes` of code in the gap (the caller checked `code_gap`)."""
        assert nbytes <= self.code_gap, (nbytes, self.code_gap)
        self.code = nbytes


def hold(plans: Sequence[SramPlan], nbytes: int, what: str) -> int:
    """The one address, the same on every core of `plans`, of `nbytes` that stay live after this op (until
    each core's `release`): the highest gap that the live blocks of all those cores leave (their residents
    differ, so the value lies below the union of their blocks). SramOverflowError when it does not fit."""
    n = aligned(nbytes)
    for p in plans:
        if p.scratch + p.held + n > p.scratch_limit:
            raise SramOverflowError(f"{what} needs {nbytes:,} bytes of SRAM held across ops but only "
                                    f"{max(p.scratch_limit - p.held - p.scratch, 0):,} are free; give its op "
                                    "hold=0 in the mapping, or use a machine with more SRAM")
    # the highest gap that takes it: a value released above a live one leaves a gap that the next value
    # fills, so a chain of values each released after its successor is held (a transformer's residual kept
    # from layer to layer) does not walk down the SRAM
    merged: list[list[int]] = []  # the union of the live blocks, as [start, end) from the bottom up
    for a, size in sorted({(a, size) for p in plans for a, size, _ in p.blocks}):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], a + size)
        else:
            merged.append([a, a + size])
    top, addr = min(p.size for p in plans), None
    for a, end in reversed(merged):
        if top - end >= n:
            addr = top - n
            break
        top = a
    if addr is None:  # below the lowest live block: space no block took yet, unless one left it
        addr = top - n
    for p in plans:
        if addr < p.low and addr < max(p.floor, p.scratch) + p.code_reserve:
            raise SramOverflowError(f"{what} needs {nbytes:,} bytes of SRAM held across ops, below the "
                                    f"{p.size - top:,} bytes of resident weights and values held; give its op "
                                    "hold=0 in the mapping, or use a machine with more SRAM")
    for p in plans:
        p.low = min(p.low, addr)
        p.blocks.append((addr, n, False))
        p.held += n
    return addr
