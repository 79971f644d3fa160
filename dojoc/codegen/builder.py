"""Building per-core instruction streams, and merging identical streams into shared sections.

`CoreCode` is one core's straight-line stream. It remembers what each scalar register holds, so
loading an address that a register already holds emits nothing. `ProgramBuilder` holds the streams of
all cores, emits barriers over the participating cores, and builds the `isa.program.Image`: cores whose
streams are identical share one code section.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dojoc.codegen.paths import signal_cycles
from dojoc.codegen.sems import HANDOFF, MOST, SEM_BITS
from dojoc.codegen.view import Transfer
from dojoc.errors import CompileError
from isa.dtypes import DType
from isa.encoding import encode_code, make
from isa.machine import Machine
from isa.program import CodeSection, DebugEntry, Image, Signature, Tensor
from isa.table import BY_MNEMONIC, Cast, Instr
from runtime_emu.stats import LOAD_PHASE_BARRIER

# Register roles. Tile operands: the instruction's d, a, b, c operands. DMA: SRAM and DRAM sides.
R_D, R_A, R_B, R_C, R_BIAS, R_SRAM, R_DRAM, R_IDX = 1, 2, 3, 4, 5, 6, 7, 8
# a pipeline handoff's signal target: set where `keep` writes the handoff, so no register cache may hold it
R_SYNC = 10
# the largest count one wait takes, from the instruction table's field width
MAX_WAIT = (1 << next(f.bits for f in BY_MNEMONIC["wait"].fields if f.name == "count")) - 1
# the fields of the instruction table that name a semaphore (sem, seml, semr)
SEM_FIELDS = tuple(sorted({f.name for spec in BY_MNEMONIC.values() for f in spec.fields if f.name.startswith("sem")}))


class CoreCode:
    """The instruction stream of one core."""

    def __init__(self, core: int, semaphores: int = 1 << SEM_BITS) -> None:
        self.core = core
        self.semaphores = semaphores  # the machine's per core: a kernel's id beyond them is a compile error
        # (checked per instruction only when the machine has fewer than the field encodes)
        self._check_sems = semaphores < 1 << SEM_BITS
        self.code: list[Instr] = []
        self.debug: list[tuple[int, str, str]] = []  # (pc, op, source)
        self._regs: dict[int, int] = {}
        self._op: tuple[str, str] | None = None
        self._dims: dict[int, tuple[int, int, int, int, int]] = {}  # DMA shape registers as set
        self.dram: dict[str, int] = {}  # per IR op, the bytes its DMA loads and stores move (not gathers)

    def emit(self, mnemonic: str, **fields: Any) -> None:
        """Append one instruction (fields as for `isa.encoding.make`)."""
        if self._op is not None:
            self.debug.append((len(self.code), *self._op))
        top = max((fields[k] for k in SEM_FIELDS if k in fields), default=-1) if self._check_sems else -1
        if top >= self.semaphores:
            name, source = self._op or (None, None)
            raise CompileError(f"{f'op {name}' if name else 'the program'} uses semaphore {top} on core {self.core} "
                               f"({mnemonic}), but the machine has {self.semaphores} per core; the kernels' semaphore "
                               f"layouts (dojoc/codegen/sems.py) take up to {MOST}: give the machine semaphores={MOST}",
                               node=name, source=source or None)
        self.code.append(make(mnemonic, **fields))

    @contextmanager
    def op(self, name: str, source: str | None) -> Iterator[None]:
        """Attribute the instructions emitted inside to an IR op (the object file's debug section)."""
        old, self._op = self._op, (name, source or "")
        try:
            yield
        finally:
            self._op = old

    def reg(self, r: int, value: int) -> int:
        """Make register r hold `value` (emitting `li` only when it does not already) and return r."""
        if self._regs.get(r) != value:
            self.emit("li", rd=r, imm=value)
            self._regs[r] = value
        return r

    # -- DMA ------------------------------------------------------------------------------------------

    def _set_dims(self, t: Transfer, pads: tuple[tuple[int, int], ...] | None) -> None:
        # dims are outermost first; the hardware numbers them from the innermost (0)
        n = len(t.dims)
        for i, (count, s, d) in enumerate(t.dims):
            dim = n - 1 - i
            lo, hi = pads[i] if pads else (0, 0)
            want = (count, s, d, lo, hi)
            if self._dims.get(dim) != want:
                self.emit("dmadim", dim=dim, count=count, sstride=s, dstride=d, padlo=lo, padhi=hi)
                self._dims[dim] = want

    def dma_load(self, t: Transfer, sem: int, pads: tuple[tuple[int, int], ...] | None = None,
                 pad: float = 0.0, dt: DType | None = None) -> None:
        """DRAM -> SRAM. `t.src` is a DRAM address, `t.dst` an SRAM one. With `pads` (before, after) per
        dim of `t.dims`, the destination is padded with `pad` encoded as `dt` (whose size is `t.esize`)."""
        self._set_dims(t, pads)
        if pads:
            assert dt is not None and dt.itemsize == t.esize, "padding needs its element type"
        self._moved(t)
        self.emit("dmald", rs=self.reg(R_SRAM, t.dst), rm=self.reg(R_DRAM, t.src), esize=t.esize,
                  ndim=len(t.dims), sem=sem, pad=pad if pads else 0.0, dt=dt or DType.U8)

    def _moved(self, t: Transfer) -> None:
        if self._op is not None:
            self.dram[self._op[0]] = self.dram.get(self._op[0], 0) + t.nbytes

    def dma_store(self, t: Transfer, sem: int) -> None:
        """SRAM -> DRAM. `t.src` is an SRAM address, `t.dst` a DRAM one."""
        self._set_dims(t, None)
        self._moved(t)
        self.emit("dmast", rm=self.reg(R_DRAM, t.dst), rs=self.reg(R_SRAM, t.src), esize=t.esize,
                  ndim=len(t.dims), sem=sem)

    def wait(self, sem: int, count: int) -> None:
        """Wait for `count` on `sem`, in as many waits as the instruction's count field needs."""
        for i in range(0, count, MAX_WAIT):
            self.emit("wait", sem=sem, count=min(MAX_WAIT, count - i))


ID_TURN = 21  # barrier ids a program's linear phases rotate through
# barrier ids of the lanes of a pipeline and of their handoffs (codegen/lanes.py): each is bound to one set
# of cores, which join every barrier of that id, so concurrent lanes never share an id (31 ends the load phase)
LANE_IDS = tuple(range(ID_TURN, LOAD_PHASE_BARRIER))
Ref = tuple[int, int]  # a barrier of the program: (its id, how many of that id came before it)
LOAD_REF: Ref = (LOAD_PHASE_BARRIER, 0)


@dataclass(frozen=True)
class Span:
    """Where one op's code lies: after barrier `start`, up to barrier `end` of its lane (or of the linear
    phases), ending the phases `barriers` (its own). Its emulated cycles: end's release - start's."""

    op: str
    start: Ref
    end: Ref
    barriers: tuple[Ref, ...]


class ProgramBuilder:
    """The streams of every core of one program.

    Its phases are linear by default: `barrier` ends a phase on every core. In a lane (`set_lane`: the ops of one
    pipeline stage, codegen/lanes.py) `barrier` ends a phase on the lane's cores only, under the lane's own
    id, and `handoff` tells the next lane's cores that this one has finished a micro-batch (semaphores, not a
    barrier: the producer goes on at once): lanes run side by side between two linear barriers."""

    def __init__(self, machine: Machine, cores: list[int]) -> None:
        self.machine = machine
        self.ids = list(cores)  # the cores (machine ids) that run code and join every barrier
        self.cores = {c: CoreCode(c, machine.semaphores) for c in self.ids}
        self._barrier = 0
        self.barriers = 0  # linear barriers emitted so far (after the load barrier, which is prepended)
        self.scopes: list[tuple[int, ...]] = []  # per linear barrier, the cores that join it (set by `keep`)
        self.linear: list[Ref] = []  # per linear barrier, its ref
        self._index: dict[Ref, int] = {}  # a linear barrier's ref -> its index in `linear` and `scopes`
        self.lane_cores: dict[int, tuple[int, ...]] = {}  # lane barrier id -> the cores that join it
        self.handoffs: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # handoff id -> (producers, consumers)
        self._count: dict[int, int] = {}  # barrier id -> barriers of that id emitted so far
        self._lane: int | None = None  # the lane barrier id while `set_lane` has one
        self.last: dict[int | None, Ref] = {None: LOAD_REF}  # per lane id (None: linear), its latest barrier
        self.emitted: list[Ref] = []  # every barrier, in emission order

    @property
    def participants(self) -> int:
        """How many cores join every barrier."""
        return len(self.ids)

    def _ref(self, bid: int) -> Ref:
        n = self._count.get(bid, 0)
        self._count[bid] = n + 1
        ref = (bid, n)
        self.emitted.append(ref)
        return ref

    def barrier(self, bid: int | None = None) -> None:
        """The cores wait for each other between two phases (ids rotate so consecutive barriers differ).
        Emitted on every core (inside a lane: on the lane's cores); `keep` scopes it to the cores of the
        phases on its two sides."""
        if self._lane is not None:
            self._private(self._lane)
            return
        if bid is None:
            bid = self._barrier
            self._barrier = (self._barrier + 1) % ID_TURN
        self.barriers += 1
        ref = self._ref(bid)
        self._index[ref] = len(self.linear)
        self.linear.append(ref)
        self.last[None] = ref
        for c in self.cores.values():
            c.emit("barrier", id=bid, count=self.participants)

    def bind(self, bid: int, cores: tuple[int, ...]) -> None:
        """Bind lane barrier id `bid` to `cores` (before its first barrier)."""
        if bid not in LANE_IDS:
            raise CompileError(f"barrier id {bid} is not a lane id ({LANE_IDS[0]}-{LANE_IDS[-1]})")
        self.lane_cores[bid] = tuple(cores)

    def bind_handoff(self, hid: int, producers: tuple[int, ...], consumers: tuple[int, ...]) -> None:
        """Bind handoff `hid` (an id of LANE_IDS that no lane takes) to a producer lane's cores and the
        consumer lane's."""
        if hid not in LANE_IDS or hid in self.lane_cores:
            raise CompileError(f"handoff id {hid} is not a free lane id ({LANE_IDS[0]}-{LANE_IDS[-1]})")
        self.handoffs[hid] = (tuple(producers), tuple(consumers))

    def _private(self, bid: int) -> None:
        cores = self.lane_cores[bid]
        ref = self._ref(bid)
        self.last[bid] = ref
        for c in cores:
            self.cores[c].emit("barrier", id=bid, count=len(cores))

    def set_lane(self, bid: int | None) -> None:
        """From now on, `barrier` ends a phase of lane `bid`'s cores only (`bind` them first); None: of every
        core again."""
        self._lane = bid

    def ends_phase(self, lane: int) -> bool:
        """Whether every core of lane `lane` has ended its code with one of the lane's barriers."""
        return all((code := self.cores[c].code) and code[-1].spec.mnemonic == "barrier" and code[-1]["id"] == lane
                   for c in self.lane_cores[lane])

    def handoff(self, hid: int) -> None:
        """The producer lane of handoff `hid`, right after a barrier of its own (its micro-batch's stores are
        done), tells the consumer lane's cores, which take it before their next micro-batch: one core of the
        producers signals the `HANDOFF` semaphore of each consumer (row multicasts over runs of them), and
        each consumer waits for it. Placed now as a marker on both sides, and written by `keep` once the
        cores that remain are known (a signal must reach only cores that wait for it)."""
        producers, consumers = self.handoffs[hid]
        for c in (*producers, *consumers):
            self.cores[c].code.append(make("barrier", id=hid, count=0))

    def _leader(self, hid: int) -> int | None:
        """The producer core that signals handoff `hid` (after `keep`), or None when nothing is signalled."""
        producers, consumers = self.handoffs[hid]
        return producers[0] if producers and consumers else None

    def handoff_cycles(self, hid: int) -> int:
        """Cycles from handoff `hid`'s leader issuing its signals to the last consumer taking one (after `keep`)."""
        leader, consumers = self._leader(hid), self.handoffs[hid][1]
        if leader is None:
            return 0
        return signal_cycles(self.machine, leader, consumers, len(self.signal_runs(consumers)))

    def _handoff_code(self, core: int, hid: int) -> list[Instr]:
        """What handoff `hid`'s marker becomes on `core` (after `keep`)."""
        consumers = self.handoffs[hid][1]
        if core in consumers:
            return [make("wait", sem=HANDOFF, count=1)]
        if core != self._leader(hid):
            return []
        code: list[Instr] = []
        for target, first, span in self.signal_runs(consumers):
            code.append(make("li", rd=R_SYNC, imm=target))
            code.append(make("signal", rc=R_SYNC, sem=HANDOFF, cast=Cast.ONE if span == 1 else Cast.ROW,
                             first=first if span > 1 else 0, span=span if span > 1 else 0))
        return code

    def signal_runs(self, cores: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """(a core, first column, columns) per row multicast that reaches exactly `cores`: runs of columns of
        one mesh row whose enabled cores are all in `cores` (disabled positions inside a run are skipped by
        the multicast itself)."""
        m = self.machine
        rows: dict[int, list[int]] = {}
        for c in cores:
            rows.setdefault(m.coords[c][0], []).append(m.coords[c][1])
        runs: list[list[int]] = []
        for r, cols in sorted(rows.items()):
            cols.sort()
            runs.append([r, cols[0]])
            for col in cols[1:]:
                if all((r, x) not in m.core_at for x in range(runs[-1][-1] + 1, col)):
                    runs[-1].append(col)
                else:
                    runs.append([r, col])
        return [(m.core_at[(r, run[0])], run[0], run[-1] - run[0] + 1) for r, *run in runs]

    def keep(self, cores: set[int]) -> None:
        """Drop the cores outside `cores` (they got no work, so they only ran barriers), and scope every
        linear barrier to the cores that work in the phase before it or the phase after it (`scopes`).

        Scoped so, barriers still order every phase after every earlier one on every core: each barrier's
        cores include the next phase's, which arrive at the next barrier only once released from this one,
        so a barrier releases only after the one before it. A core that sits out some phases arrives early
        at its next barrier; one idle for a full turn of the ids could be counted at an earlier barrier of
        the same id, so a core joins at least every `ID_TURN - 1`-th barrier. A barrier's combining tree
        spans only its cores' bounding box (docs/timing.md). A lane's barriers (ids in LANE_IDS) stay on
        the lane's cores that remain, and count them; they are work of the phase they lie in."""
        self.ids = [c for c in self.ids if c in cores] or self.ids[:1]
        self.cores = {c: self.cores[c] for c in self.ids}
        kept = set(self.ids)
        self.lane_cores = {b: tuple(c for c in cs if c in kept) for b, cs in self.lane_cores.items()}
        self.handoffs = {h: (tuple(c for c in p if c in kept), tuple(c for c in q if c in kept))
                         for h, (p, q) in self.handoffs.items()}
        # per core, per phase (the code before each barrier, and after the last): whether it does work
        work: dict[int, list[bool]] = {}
        for c, cc in self.cores.items():
            flags, busy = [], False
            for ins in cc.code:
                if ins.spec.mnemonic == "barrier" and ins["id"] not in LANE_IDS:
                    flags.append(busy)
                    busy = False
                else:
                    busy = True
            work[c] = [*flags, busy]
        n = self.barriers
        members: list[set[int]] = [{c for c in self.ids if work[c][k] or work[c][k + 1]} for k in range(n)]
        since = dict.fromkeys(self.ids, 0)  # barriers since the core's last
        for k in range(n):
            for c in self.ids:
                if c in members[k] or since[c] + 1 >= ID_TURN - 1:
                    members[k].add(c)
                    since[c] = 0
                else:
                    since[c] += 1
            if not members[k]:
                members[k] = set(self.ids)
        self.scopes = [tuple(sorted(m)) for m in members]
        for c, cc in self.cores.items():
            code: list[Instr] = []
            pcs: list[int | None] = []  # old pc -> new pc (None: dropped), for the debug section's entries
            k = 0
            for ins in cc.code:
                pcs.append(len(code))
                if ins.spec.mnemonic != "barrier":
                    code.append(ins)
                    continue
                bid = ins["id"]
                if bid in self.handoffs:
                    written = self._handoff_code(c, bid)
                elif bid in self.lane_cores:
                    written = [make("barrier", id=bid, count=len(self.lane_cores[bid]))]
                else:
                    written = [make("barrier", id=bid, count=len(members[k]))] if c in members[k] else []
                    k += 1
                code += written
                if not written:
                    pcs[-1] = None
            pcs.append(len(code))
            cc.code = code
            cc.debug = [(new, op, src) for pc, op, src in cc.debug if (new := pcs[pc]) is not None]

    def mark(self) -> tuple[Ref, int]:
        """Where the program stands now, for `span`: the latest barrier of the current lane (or linear)."""
        return self.last[self._lane], len(self.emitted)

    def span(self, op: str, mark: tuple[Ref, int]) -> Span | None:
        """The span of op `op`, whose code was emitted since `mark` (None when it ended no phase)."""
        start, first = mark
        if len(self.emitted) == first:
            return None
        return Span(op, start, self.last[self._lane], tuple(self.emitted[first:]))

    def dram_bytes(self) -> dict[str, int]:
        """Per IR op, the bytes its code moves to and from DRAM on every core (the code is straight-line,
        so this is what a run moves; the load phase's streams are not the builder's)."""
        out: dict[str, int] = {}
        for cc in self.cores.values():
            for op, n in cc.dram.items():
                out[op] = out.get(op, 0) + n
        return out

    def cores_of(self, ref: Ref) -> tuple[int, ...]:
        """The cores that join barrier `ref` (after `keep`)."""
        if ref[0] in self.lane_cores:
            return self.lane_cores[ref[0]]
        return self.scopes[self._index[ref]]

    def build(self, tensors: tuple[Tensor, ...], signature: Signature) -> Image:
        """Halt every stream and merge identical streams into shared sections."""
        by_value: dict[tuple[tuple[Instr, ...], tuple[tuple[int, str, str], ...]], list[int]] = {}
        for c in self.cores.values():
            c.emit("halt")
            by_value.setdefault((tuple(c.code), tuple(c.debug)), []).append(c.core)
        # equal values are equal streams but for F32 fields (0.0 == -0.0): cores merged by value are split
        # again by their encoded words, which only such groups pay for
        groups: list[list[int]] = []
        for cores in by_value.values():
            if len(cores) == 1:
                groups.append(cores)
                continue
            words: dict[bytes, list[int]] = {}
            for cid in cores:
                words.setdefault(encode_code(self.cores[cid].code), []).append(cid)
            groups += words.values()
        sections: list[CodeSection] = []
        debug: list[DebugEntry] = []
        for i, cores in enumerate(groups):
            cc = self.cores[cores[0]]
            sections.append(CodeSection(f"s{i}" if len(cores) > 1 else f"core{cores[0]}", tuple(cores),
                                        tuple(cc.code)))
            debug += map(DebugEntry._make, ((i, *entry) for entry in cc.debug))
        return Image(self.machine, tuple(sections), tensors, signature, tuple(debug))
