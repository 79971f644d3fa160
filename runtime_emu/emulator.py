"""The emulator: a MIMD discrete-event engine over the cores of one machine.

    emu = Emulator(image, timing_only=False, max_cycles=10**11, trace=False, seed=0)
    emu.set_inputs({"a": a, "b": b})          # or a sequence in signature order
    result = emu.run()                        # RunResult(cycles, stats, outputs, trace)

Each core has a local clock and runs its code section's pre-decoded instructions. The engine repeatedly
runs the core with the smallest (time, core id); an instruction occupies its core for `isa.costs.cycles`.
Asynchronous operations (DMA, puts, signals) compute their completion times at issue and schedule events
(a heap keyed by (time, sequence)); an event at time T is applied before any core executes at time >= T.
A core keeps running without going back to the scheduler while its clock stays below the next event
and the next core's (time, id). See docs/emulator.md for the full rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import compress
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from isa.costs import cycles as instr_cycles
from isa.errors import DojocError
from isa.program import Image
from isa.table import INSTRUCTIONS, Cast, Instr, Kind
from isa.text import format_instr
from runtime_emu import semantics
from runtime_emu.blas import single_threaded_blas
from runtime_emu.core import BARRIER, HALTED, IDLE, READY, SYNC_UNIT, UNIT_INDEX, WAIT, Core, Step
from runtime_emu.dram import Dram, DramMemory
from runtime_emu.errors import ImageError
from runtime_emu.hostgc import frozen_heap
from runtime_emu.memory import Fault, Pending, Region, span_of
from runtime_emu.noc import RC, Network
from runtime_emu.semantics.common import skip
from runtime_emu.semantics.move import DMA, NET
from runtime_emu.stats import LOAD_PHASE_BARRIER, CoreStats, PhaseCounters, RunStats
from runtime_emu.tally import flops, op_cycles
from runtime_emu.tensors import check_tensors, encode_inputs, read_outputs, write_weights
from runtime_emu.trace import Trace
from runtime_emu.traps import Trap, TrapKind

__all__ = ["Emulator", "RunResult", "run"]

# instructions whose decode depends on the length of their stream (a branch target is checked against it)
_BRANCHES = frozenset(s.mnemonic for s in INSTRUCTIONS if any(f.kind is Kind.TARGET for f in s.fields))

_DEADLOCK_LIST = 16  # waiting cores named in a deadlock message
# Instructions that touch only the core's own registers: a core may run them past other cores' clocks
# (they can neither observe nor change anything another core or an event could), which keeps cores in
# lockstep from returning to the scheduler at every scalar instruction.
_PURE = frozenset({"nop", "halt", "li", "rdsr", "alu", "alui", "branch", "jmp", "loop", "dmadim"})
# fields of instructions and of predecoded entries (step, pure, mma flops), for map() in _predecode
_SPEC, _ARGS = attrgetter("spec"), attrgetter("args")
_STEP, _PURE_OF, _FLOPS = itemgetter(0), itemgetter(1), itemgetter(2)


@dataclass
class RunResult:
    """What one run produced: total cycles, statistics, decoded outputs by name, and the trace if asked.

    `outputs` is empty in timing-only mode (no data moves)."""

    cycles: int
    stats: RunStats
    outputs: dict[str, np.ndarray]
    trace: Trace | None = None


def _off_end(n: int) -> Any:
    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        raise Fault(TrapKind.ILLEGAL, f"the core ran off the end of its code section ({n} instructions) "
                                      "without a halt")

    return h


class Emulator:
    """Runs one program image on its machine (see the module docstring)."""

    def __init__(self, image: Image, *, timing_only: bool = False, max_cycles: int = 10**11,
                 trace: bool = False, seed: int = 0) -> None:
        self.image = image
        self.machine = m = image.machine
        self.timing_only = timing_only
        self.max_cycles = max_cycles
        self.seed = seed
        self._trace_on = trace
        owner: dict[int, int] = {}
        for si, sec in enumerate(image.sections):
            for cid in sec.cores:
                if not 0 <= cid < m.num_cores:
                    raise ImageError(f"section {sec.name!r} names core {cid}, but machine {m.name!r} has cores "
                                     f"0..{m.num_cores - 1}")
                if cid in owner:
                    raise ImageError(f"core {cid} is in two code sections: "
                                     f"{image.sections[owner[cid]].name!r} and {sec.name!r}")
                owner[cid] = si
        check_tensors(image)
        self.dram_mem = DramMemory(m)
        if not timing_only:
            write_weights(self.dram_mem, image)
        self._costs: dict[Instr, int] = {}
        self.scratch: dict[Any, Any] = {}  # handlers' working arrays, by their own keys (see semantics.matmul)
        # predecoded instructions (step, pure), shared by every core
        self._steps: dict[tuple[Any, ...], tuple[Step, bool, int]] = {}  # (step, pure, mma flops)
        self._bases = [m.dram_base(i) for i in range(len(m.dram_ports))]
        self._ranges = [self.port_range(i) for i in range(len(m.dram_ports))]  # [base, end) of each port
        self._lines: dict[tuple[int, int], list[int]] = {}
        for cid, (r, c) in enumerate(m.coords):
            self._lines.setdefault((Cast.ROW.value, r), []).append(cid)
            self._lines.setdefault((Cast.COL.value, c), []).append(cid)
        self._programs: list[list[Step]] = []
        self._pure: list[list[bool]] = []  # per pc: the instruction touches nothing another core sees
        # per section, (pc, flops per execution) of its mma instructions (for the flop count)
        self._mmas: list[list[tuple[int, int]]] = []
        with frozen_heap():
            for sec in image.sections:
                steps, pure, mmas = self._predecode(sec.code)
                self._programs.append(steps)
                self._pure.append(pure)
                self._mmas.append(mmas)
        self._names: dict[int, list[str]] = {}  # mnemonics per section, made for a trace (see _mnemonics)
        self._ran = False
        self._cores: dict[int, Core] = {}
        self._casts: dict[tuple[int, int, tuple[int, int, int]], tuple[list[Core], list[RC]]] = {}
        self._pkey = 0
        self.limit = 0

    # -- setup ------------------------------------------------------------------------------------
    def cost_of(self, ins: Instr) -> int:
        """Cycles of `ins` from `isa.costs.cycles` (cached: costs depend only on the fields)."""
        c = self._costs.get(ins)
        if c is None:
            c = self._costs[ins] = instr_cycles(ins, self.machine)
        return c

    def _predecode(self, code: tuple[Instr, ...]) -> tuple[list[Step], list[bool], list[tuple[int, int]]]:
        """The steps of a code section (with a trap past its end), whether each is pure, and the pcs of its
        mma instructions with their flops per execution.

        A step depends only on the instruction, and for a branch on the stream's length (its target is
        checked against it); handlers keep no core's state, so cores whose streams repeat each other's
        instructions share their decode (ResNet-50 b1: 71,000 distinct of 2.1 million). Keyed by the spec
        (an identity) and the argument tuple, looked up for the whole section by map() so that the keys
        are built, hashed and compared in C; only misses and branches take the loop below."""
        n = len(code)
        seen = self._steps
        # (step, pure, flops), None for a miss (zip hands each key tuple to dict.get and reuses it)
        entries: list[Any] = list(map(seen.get, zip(map(_SPEC, code), map(_ARGS, code), strict=True)))
        for pc in [pc for pc, e in enumerate(entries) if e is None]:
            ins = code[pc]
            spec = ins.spec
            branch = spec.mnemonic in _BRANCHES
            key = (spec, ins.args, n) if branch else (spec, ins.args)  # a branch's never under (spec, args)
            entry = seen.get(key)
            if entry is None:
                handler, ops = semantics.prepare(ins, self, n)
                flops = 2 * ins["m"] * ins["n"] * ins["k"] if spec.semantics == "mma" else 0
                entry = seen[key] = ((handler, ops, self.cost_of(ins), UNIT_INDEX[spec.unit]),
                                     handler is skip or spec.semantics in _PURE, flops)
            entries[pc] = entry
        steps: list[Step] = list(map(_STEP, entries))
        pure: list[bool] = list(map(_PURE_OF, entries))
        mmas = [(pc, e[2]) for pc, e in compress(enumerate(entries), map(_FLOPS, entries))]
        steps.append((_off_end(n), None, 0, 0))
        pure.append(False)
        return steps, pure, mmas

    def set_inputs(self, arrays: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> None:
        """Check host arrays against the signature (count, names, shapes) and write them into DRAM.

        Raises runtime_emu.errors.InputError on a mismatch."""
        encoded = encode_inputs(self.image, arrays)
        if not self.timing_only:
            for t, bits in encoded:
                self.dram_mem.write(t.address, bits)

    # -- engine services for handlers ---------------------------------------------------------------
    def core(self, cid: int) -> Core:
        """Core `cid`, created idle on first use (a put may target a core that runs no code)."""
        c = self._cores.get(cid)
        if c is None:
            m = self.machine
            r, col = m.coords[cid]
            special = (cid, r, col, m.num_cores, m.mesh[0], m.mesh[1])
            c = self._cores[cid] = Core(cid, (r, col), self, special)
        return c

    def cast_targets(self, core: Core, target: int, cast: Cast, first: int = 0,
                     span: int = 0) -> tuple[list[Core], list[RC]]:
        """Destination cores of a put or signal, and their routers: `target` itself, or its row or column
        except the sender; with a `span`, only that line's cores at positions first .. first + span - 1
        (cached per sender, target, cast and segment: puts and signals repeat them)."""
        # keyed by ints only (an Enum hashes in Python); handlers look the key up themselves first
        key = (core.id, target, (cast.value, first, span))
        hit = self._casts.get(key)
        if hit is not None:
            return hit
        m = self.machine
        n = m.num_cores
        if not 0 <= target < n:
            raise Fault(TrapKind.BAD_OPERAND, f"core id {target} is not on the machine (cores 0..{n - 1})")
        if span == 0 and first:
            raise Fault(TrapKind.BAD_OPERAND, f"first={first} without a span: give the segment's span, or "
                                              "first=0 for the whole line")
        if cast is Cast.ONE:
            if span:
                raise Fault(TrapKind.BAD_OPERAND, f"span={span} on a put or signal to one core: a segment "
                                                  "applies to row and col multicasts only")
            out = [self.core(target)]
        else:
            r, c = m.coords[target]
            length = m.mesh[1] if cast is Cast.ROW else m.mesh[0]
            if first + span > length:
                raise Fault(TrapKind.BAD_OPERAND, f"{cast.name.lower()} multicast to positions {first}.."
                                                  f"{first + span - 1} runs past the mesh edge ({length} "
                                                  "positions)")
            line = self._lines[(cast.value, r if cast is Cast.ROW else c)]
            lo, hi = (first, first + span) if span else (0, length)
            pos = 1 if cast is Cast.ROW else 0
            out = [self.core(i) for i in line if i != core.id and lo <= m.coords[i][pos] < hi]
            if not out:
                raise Fault(TrapKind.BAD_OPERAND, f"{cast.name.lower()} multicast to core {target}'s "
                                                  f"{cast.name.lower()} reaches no core but the sender")
        hit = self._casts[key] = (out, [(d.rc[0], d.rc[1]) for d in out])
        return hit

    def dram_port(self, addr: int, counts: tuple[int, ...], strides: tuple[int, ...], esize: int,
                  what: str) -> int:
        """The DRAM port holding every byte of a strided access; OOB_DRAM when none does."""
        lo, hi = span_of(counts, strides, esize)
        return self.dram_span(addr + lo, addr + hi, what)

    def dram_span(self, lo: int, hi: int, what: str) -> int:
        """The DRAM port holding every byte of [lo, hi); OOB_DRAM when none does."""
        port = -1
        for i, (b, e) in enumerate(self._ranges):
            if b <= lo < e:
                port = i
                break
        if port < 0:
            raise Fault(TrapKind.OOB_DRAM, f"{what} [{lo:#x}, {hi:#x}) is outside DRAM "
                                           f"[0, {self.machine.dram_bytes:#x})")
        base, end = self._ranges[port]
        if hi > end:
            beyond = "DRAM" if port == len(self._bases) - 1 else f"port {self.port_name(port)}"
            raise Fault(TrapKind.OOB_DRAM, f"{what} [{lo:#x}, {hi:#x}) runs past the end of {beyond} "
                                           f"(port {self.port_name(port)} serves [{base:#x}, {end:#x}))")
        return port

    def port_range(self, port: int) -> tuple[int, int]:
        """[first, end) DRAM addresses of a port."""
        base = self._bases[port]
        return base, base + self.machine.dram_ports[port].capacity

    def port_name(self, port: int) -> str:
        return self.machine.dram_ports[port].name

    def pend_in(self, core: Core, region: Region, until: int, what: str) -> int:
        """Mark `region` of core's SRAM as being written by a transfer until `until`; returns its key."""
        key = self._pkey = self._pkey + 1
        core.sram.incoming[key] = Pending(region, until, what)
        return key

    def pend_out(self, core: Core, region: Region, until: int, what: str) -> int:
        """Mark `region` of core's SRAM as the source of a transfer that leaves at `until`."""
        key = self._pkey = self._pkey + 1
        core.sram.outgoing[key] = Pending(region, until, what)
        return key

    def complete(self, t: int, core: Core, sem: int | None, kind: int, apply: Any = None,
                 pin: int | None = None, pout: int | None = None, issued: int = -1) -> None:
        """Schedule an event at cycle t: run `apply`, settle pending regions, add 1 to core's `sem`.

        A transfer `issued` at some cycle towards a core already blocked on `sem` with nothing in flight
        turns the rest of that core's stall from 'semaphore' into 'network' (or 'dma')."""
        if sem is not None:
            if kind == DMA:
                core.dma_pending[sem] += 1
            elif kind == NET:
                core.net_pending[sem] += 1
            if issued >= 0 and core.state == WAIT and core.wait_sem == sem and core.wait_cause == "semaphore":
                self._stall_segment(core, issued, "dma" if kind == DMA else "network")
        heappush(self._events, (t, self._seq, core, sem, kind, apply, pin, pout))
        self._seq += 1
        if t < self.limit:
            self.limit = t

    def trace_transfer(self, kind: str, src: int | str, dst: int | str, t: int, end: int, nbytes: int) -> None:
        tr = self.trace
        if tr is not None:
            tr.transfer(kind, f"core {src}" if isinstance(src, int) else src,
                        f"core {dst}" if isinstance(dst, int) else dst, t, end - t, nbytes)

    def block_wait(self, core: Core, sem: int, count: int, pc: int, t: int, cost: int) -> None:
        """Block `core` in a wait at pc until its semaphore reaches `count`."""
        core.state = WAIT
        core.pc = pc
        core.time = core.wait_start = core.wait_mark = t
        core.wait_sem = sem
        core.wait_count = count
        core.wait_cost = cost
        core.wait_cause = "dma" if core.dma_pending[sem] else "network" if core.net_pending[sem] else "semaphore"

    def barrier_arrive(self, core: Core, bid: int, count: int, pc: int, t: int, cost: int) -> None:
        """`core` arrives at barrier `bid`; the last of `count` arrivals releases them all."""
        entry = self._barriers.get(bid)
        if entry is None:
            entry = self._barriers[bid] = (count, [])
        elif entry[0] != count:
            raise Fault(TrapKind.BAD_OPERAND, f"barrier {bid} expects {count} cores here but {entry[0]} where "
                                              f"core {entry[1][0].id} arrived")
        core.state = BARRIER
        core.pc = pc
        core.time = core.wait_start = core.wait_mark = t
        core.wait_cause = "barrier"
        core.wait_sem = bid
        core.wait_count = count
        core.wait_cost = cost
        entry[1].append(core)
        if len(entry[1]) == count:
            del self._barriers[bid]
            release = max(c.wait_start for c in entry[1]) + self.network.barrier_cycles([c.rc for c in entry[1]])
            self.barrier_releases.append((bid, release))
            if bid in self.snapshot_barriers and bid not in self.snapshots:
                self.snapshots[bid] = self._counters()
            for c in entry[1]:
                self._resume(c, release, "barrier")

    def on_halt(self, core: Core, pc: int, t: int, cost: int) -> None:
        if self.trace is not None:
            self.trace.instr(core.id, "halt", t, cost)

    def _stall_segment(self, core: Core, t: int, cause: str) -> None:
        """Charge the blocked core's stall from its mark to t to its current cause; continue with `cause`."""
        start = core.wait_mark
        if t > start:
            core.stall[core.wait_cause] += t - start
            if self.trace is not None:
                self.trace.stall(core.id, core.wait_cause, start, t - start)
        core.wait_mark = t
        core.wait_cause = cause

    def _resume(self, core: Core, t: int, cause: str) -> None:
        """Finish a blocked wait or barrier released at t: charge the stall, then its cost."""
        cost = core.wait_cost
        self._stall_segment(core, t, cause)
        core.busy[SYNC_UNIT] += cost
        core.instructions += 1
        core.counts[core.pc] += 1
        if self.trace is not None:
            self.trace.instr(core.id, self._mnemonics(core.section)[core.pc], t, cost)
        core.pc += 1
        core.time = t + cost
        core.state = READY
        heappush(self._ready, (core.time, core.id, core))

    # -- the run -------------------------------------------------------------------------------------
    def _reset(self) -> None:
        m = self.machine
        self.network = Network(m)
        self.dram = Dram(m, self.network)
        self.trace: Trace | None = Trace(m) if self._trace_on else None
        self._cores = {}
        self._casts = {}
        self._events: list[tuple[Any, ...]] = []
        self._ready: list[tuple[int, int, Core]] = []  # (time, id, core): a core is there at most once
        self._barriers: dict[int, tuple[int, list[Core]]] = {}
        self.barrier_releases: list[tuple[int, int]] = []  # (id, release cycle), for load/call phases
        # barrier ids whose first release snapshots the traffic counters (the load/call split of a report)
        self.snapshot_barriers: frozenset[int] = frozenset({LOAD_PHASE_BARRIER})
        self.snapshots: dict[int, PhaseCounters] = {}
        self._seq = 0
        self._pkey = 0
        self._now = 0
        self.limit = 0
        self._counts = [[0] * len(sec.code) for sec in self.image.sections]
        for si, sec in enumerate(self.image.sections):
            for cid in sec.cores:
                c = self.core(cid)
                c.code = self._programs[si]
                c.section = si
                c.counts = self._counts[si]
                c.state = READY
                heappush(self._ready, (0, cid, c))

    def run(self) -> RunResult:
        """Run the program to completion; raises runtime_emu.traps.Trap on a fault."""
        if self._ran:
            raise DojocError("an Emulator runs once: create a new one for another run")
        self._ran = True
        self._reset()
        with frozen_heap():
            with np.errstate(all="ignore"), single_threaded_blas():
                self._loop()
            self._check_deadlock()
            stats = self._stats()
        outputs = {} if self.timing_only else read_outputs(self.dram_mem, self.image)
        return RunResult(stats.cycles, stats, outputs, self.trace)

    def _loop(self) -> None:
        """The scheduler: apply the next event when it is due, else run the ready core of smallest (time, id)
        until it stops or its clock reaches the limit (the next event, or the next core's turn).

        The core's instruction loop is inlined here (a scheduling turn costs no call): ResNet-50 b1 takes
        about a million turns for two million instructions, its cores in near lockstep; a traced run takes
        each turn in `_run_traced` instead."""
        ready, events, pures, apply = self._ready, self._events, self._pure, self._apply
        traced = self.trace is not None
        maxc = self.max_cycles
        top = maxc + 1
        core: Core | None = None
        pc = t = 0
        try:
            while True:
                if events:
                    te = events[0][0]
                    if not ready or te <= ready[0][0]:
                        if te > maxc:
                            raise self._watchdog(None, te)
                        core = None  # a fault while applying an event is not an instruction's
                        apply(heappop(events))
                        continue
                elif not ready:
                    return
                t, cid, core = heappop(ready)
                if t > maxc:
                    raise self._watchdog(core, t)
                lim = events[0][0] if events else top
                if ready:
                    rt, rid, _ = ready[0]
                    if cid < rid:
                        rt += 1
                    if rt < lim:
                        lim = rt
                self.limit = lim if lim <= maxc else top
                if traced:
                    self._run_traced(core, t)
                    continue
                code, pc, busy, counts, pure = core.code, core.pc, core.busy, core.counts, pures[core.section]
                while True:
                    h, ops, cost, unit = code[pc]
                    npc = h(core, ops, pc, t)
                    if npc < 0:
                        break
                    busy[unit] += cost
                    counts[pc] += 1
                    core.instructions += 1
                    t += cost
                    pc = npc
                    # handlers that schedule an event may lower self.limit
                    if t >= self.limit and not (pure[pc] and t <= maxc):
                        core.pc, core.time = pc, t
                        heappush(ready, (t, cid, core))
                        break
        except Fault as f:
            if core is None:
                raise
            raise self._trap(core, pc, t, f) from None

    def _run_traced(self, core: Core, t: int) -> None:
        """One scheduling turn of `_loop`'s instruction loop that also records every instruction in the
        trace (its faults are trapped here, with their pc)."""
        code, pc, busy, counts = core.code, core.pc, core.busy, core.counts
        names, tr, cid = self._mnemonics(core.section), self.trace, core.id
        pure, maxc = self._pure[core.section], self.max_cycles
        assert tr is not None
        try:
            while True:
                h, ops, cost, unit = code[pc]
                npc = h(core, ops, pc, t)
                if npc < 0:
                    return
                tr.instr(cid, names[pc], t, cost)
                busy[unit] += cost
                counts[pc] += 1
                core.instructions += 1
                t += cost
                pc = npc
                if t >= self.limit and not (pure[pc] and t <= maxc):
                    core.pc, core.time = pc, t
                    heappush(self._ready, (t, cid, core))
                    return
        except Fault as f:
            raise self._trap(core, pc, t, f) from None

    def _apply(self, ev: tuple[Any, ...]) -> None:
        t, _, core, sem, kind, apply, pin, pout = ev
        self._now = t
        if apply is not None:
            apply()
        if pin is not None:
            core.sram.incoming.pop(pin, None)
        if pout is not None:
            core.sram.outgoing.pop(pout, None)
        if sem is not None:
            if kind == DMA:
                core.dma_pending[sem] -= 1
            elif kind == NET:
                core.net_pending[sem] -= 1
            sems = core.sems
            sems[sem] += 1
            if core.state == WAIT and core.wait_sem == sem and sems[sem] >= core.wait_count:
                sems[sem] -= core.wait_count
                self._resume(core, t, core.wait_cause)

    # -- traps -----------------------------------------------------------------------------------------
    def _instr_text(self, core: Core, pc: int) -> str:
        sec = self.image.sections[core.section]
        if not 0 <= pc < len(sec.code):
            return ""
        return format_instr(sec.code[pc], {i: name for name, i in sec.labels})

    def _mnemonics(self, si: int) -> list[str]:
        """The mnemonic of each pc of section `si` and "(end)" past it (for the trace; made on first use)."""
        names = self._names.get(si)
        if names is None:
            names = self._names[si] = [i.spec.mnemonic for i in self.image.sections[si].code] + ["(end)"]
        return names

    def _trap(self, core: Core, pc: int, t: int, f: Fault) -> Trap:
        return Trap(f.kind, f.message, core=core.id, pc=pc, instr=self._instr_text(core, pc), cycle=t)

    def _watchdog(self, core: Core | None, t: int) -> Trap:
        what = "a core still running" if core is not None else "a transfer still in flight"
        msg = f"the run passed max_cycles={self.max_cycles} with {what} at cycle {t}"
        if core is None:
            return Trap(TrapKind.WATCHDOG, msg, cycle=t)
        return Trap(TrapKind.WATCHDOG, msg, core=core.id, pc=core.pc, instr=self._instr_text(core, core.pc),
                    cycle=t)

    def _check_deadlock(self) -> None:
        waiting = sorted((c for c in self._cores.values() if c.state in (WAIT, BARRIER)), key=lambda c: c.id)
        if not waiting:
            return
        parts = []
        for c in waiting[:_DEADLOCK_LIST]:
            if c.state == WAIT:
                parts.append(f"core {c.id} waits on sem {c.wait_sem} (has {c.sems[c.wait_sem]}, "
                             f"needs {c.wait_count})")
            else:
                entry = self._barriers.get(c.wait_sem)
                n = len(entry[1]) if entry else 0
                parts.append(f"core {c.id} waits at barrier {c.wait_sem} ({n} of {c.wait_count} arrived)")
        if len(waiting) > _DEADLOCK_LIST:
            parts.append(f"and {len(waiting) - _DEADLOCK_LIST} more")
        first = waiting[0]
        t = max([self._now, *(c.wait_start for c in waiting)])
        raise Trap(TrapKind.DEADLOCK, "every running core is blocked and nothing is in flight: "
                   + "; ".join(parts), core=first.id, pc=first.pc, instr=self._instr_text(first, first.pc),
                   cycle=t)

    # -- statistics ------------------------------------------------------------------------------------
    def _stats(self) -> RunStats:
        units = list(UNIT_INDEX)
        cores: dict[int, CoreStats] = {}
        end = self._now
        for cid in sorted(self._cores):
            c = self._cores[cid]
            if c.state == IDLE:
                continue
            end = max(end, c.halted_at if c.state == HALTED else c.time)
            cores[cid] = CoreStats(instructions=c.instructions,
                                   busy={u.value: c.busy[i] for i, u in enumerate(units)},
                                   stall=dict(c.stall), sram_high_water=c.sram.high,
                                   halted_at=c.halted_at)
        stats = RunStats(cycles=end, cores=cores, links=self.network.link_stats(),
                         ports=self.dram.port_stats(), router_ports=self.network.port_stats(),
                         op_cycles=op_cycles(self.image.debug, self._counts, self._programs),
                         flops=flops(self._counts, self._mmas),
                         barrier_releases=list(self.barrier_releases), snapshots=dict(self.snapshots))
        return stats

    def _counters(self) -> PhaseCounters:
        """Traffic and instruction counters so far (all requests issued before now are counted)."""
        return PhaseCounters(
            instructions=sum(c.instructions for c in self._cores.values()),
            dram_bytes=sum(p.bytes_read + p.bytes_written for p in self.dram.port_stats().values()),
            noc_bytes=self.network.link_bytes())


def run(image: Image, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
        **kw: Any) -> RunResult:
    """Run `image` on `inputs` (a sequence in signature order or a mapping by name); keywords go to Emulator."""
    emu = Emulator(image, **kw)
    if inputs is not None:
        emu.set_inputs(inputs)
    return emu.run()

