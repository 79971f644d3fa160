"""An execution trace in the Chrome trace-event format (opens in Perfetto and chrome://tracing).

Time: one cycle is written as one nanosecond (`ts` and `dur` are in microseconds, so a cycle is
0.001), whatever the machine's clock; the timeline therefore reads in cycles, and `displayTimeUnit`
is "ns". `otherData` records the clock so that seconds = cycles / clock_hz.

Processes and threads: one process per die ("die 0", ...; a single "cores" process without a
machine), one thread per core (tid = core id, named "core 12 (0, 12)"); instructions and stalls are
complete ("X") events on the core's thread, which never overlap since a core does one thing at a time.
Transfers (puts, DMA) overlap freely, so they are async ("b"/"e") events in a "network" process, on
one track per kind, with source, destination and bytes in their args.
"""

from __future__ import annotations

import json
import os
from typing import Any

from isa.files import atomic_path
from isa.machine import Machine

__all__ = ["Trace", "NETWORK_PID"]

NETWORK_PID = 0
"""The pid of the "network" process; dies are pids 1, 2, ..."""


def _ts(cycles: int) -> float | int:
    """Cycles as trace microseconds (1 cycle = 1 ns); integers stay integers when exact."""
    return cycles // 1000 if cycles % 1000 == 0 else cycles / 1000


class Trace:
    """Collects trace events as the emulator runs; `to_json` and `save` write them out.

    `max_events` bounds memory on long runs: later events are counted in `dropped`, not kept.
    """

    def __init__(self, machine: Machine | None = None, max_events: int | None = None) -> None:
        self.machine = machine
        self.max_events = max_events
        self.dropped = 0
        self._events: list[dict[str, Any]] = []
        self._threads: dict[int, int] = {}  # core id -> pid
        self._kinds: set[str] = set()
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._events)

    def _room(self, n: int = 1) -> bool:
        if self.max_events is not None and len(self._events) + n > self.max_events:
            self.dropped += n
            return False
        return True

    def _pid(self, core: int) -> int:
        pid = self._threads.get(core)
        if pid is None:
            pid = 1
            m = self.machine
            if m is not None and 0 <= core < m.num_cores:
                r, c = m.coords[core]
                dr, dc = m.die
                pid = 1 + (r // dr) * (m.mesh[1] // dc) + c // dc
            self._threads[core] = pid
        return pid

    # -- recording ------------------------------------------------------------------------------
    def instr(self, core: int, name: str, start: int, dur: int, args: dict[str, Any] | None = None) -> None:
        """An instruction `name` that occupied `core` for `dur` cycles from `start`."""
        if not self._room():
            return
        ev: dict[str, Any] = {"name": name, "cat": "instr", "ph": "X", "pid": self._pid(core), "tid": core,
                              "ts": _ts(start), "dur": _ts(dur)}
        if args:
            ev["args"] = args
        self._events.append(ev)

    def stall(self, core: int, cause: str, start: int, dur: int) -> None:
        """`core` waited `dur` cycles from `start` for `cause` ('dma', 'network', 'semaphore', 'barrier')."""
        if not self._room():
            return
        self._events.append({"name": f"stall {cause}", "cat": "stall", "ph": "X", "pid": self._pid(core),
                             "tid": core, "ts": _ts(start), "dur": _ts(dur)})

    def transfer(self, kind: str, src: str, dst: str, start: int, dur: int, nbytes: int) -> None:
        """A transfer of `kind` ('put', 'dma_load', ...) from `src` to `dst` (core or port names)."""
        if not self._room(2):
            return
        self._next_id += 1
        self._kinds.add(kind)
        base = {"name": kind, "cat": kind, "pid": NETWORK_PID, "tid": 0, "id": self._next_id}
        self._events.append({**base, "ph": "b", "ts": _ts(start),
                             "args": {"src": src, "dst": dst, "bytes": nbytes}})
        self._events.append({**base, "ph": "e", "ts": _ts(start + dur)})

    # -- output ---------------------------------------------------------------------------------
    def _metadata(self) -> list[dict[str, Any]]:
        meta: list[dict[str, Any]] = []

        def name(kind: str, pid: int, tid: int, value: str) -> None:
            meta.append({"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": value}})

        if self._kinds:
            name("process_name", NETWORK_PID, 0, "network")
            meta.append({"name": "process_sort_index", "ph": "M", "pid": NETWORK_PID, "tid": 0,
                         "args": {"sort_index": 1 << 20}})
        m = self.machine
        for pid in sorted(set(self._threads.values())):
            name("process_name", pid, 0, "cores" if m is None or m.die == m.mesh else f"die {pid - 1}")
            meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                         "args": {"sort_index": pid}})
        for core, pid in sorted(self._threads.items()):
            where = f" {m.coords[core]}" if m is not None and 0 <= core < m.num_cores else ""
            name("thread_name", pid, core, f"core {core}{where}")
            meta.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": core,
                         "args": {"sort_index": core}})
        return meta

    def to_json(self) -> dict[str, Any]:
        """JSON-able data: {"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}."""
        other: dict[str, Any] = {"time_unit": "1 ns in this trace is 1 cycle"}
        if self.machine is not None:
            other["machine"] = self.machine.name
            other["clock_hz"] = self.machine.clock_hz
        if self.dropped:
            other["dropped_events"] = self.dropped
        return {"traceEvents": self._metadata() + self._events, "displayTimeUnit": "ns", "otherData": other}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the trace as JSON to `path` atomically (a temporary file, then a rename)."""
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(self.to_json(), f, separators=(",", ":"))
