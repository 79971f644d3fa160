"""The state shared by the kernels of one compile: buffers, SRAM plans (sram.py), the program being built."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from math import ceil, prod
from typing import Any

import numpy as np

from dojoc.codegen.builder import CoreCode, ProgramBuilder
from dojoc.codegen.paths import port_path
from dojoc.codegen.sram import ALIGN, SramPlan
from dojoc.codegen.view import Transfer, View, transfers
from dojoc.errors import MappingError, SramOverflowError
from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.types import IRDType
from dojoc.mapping.model import Bound, OpMapping
from dojoc.mapping.place import Rect, home_die
from isa import formats
from isa.dtypes import DType
from isa.machine import Machine
from isa.program import Tensor, TensorKind
from isa.table import COLS, ROWS, STRIDE

MAX_ROWS = (1 << ROWS) - 1  # tile extents, from the instruction table's field widths
MAX_COLS = (1 << COLS) - 1
MAX_STRIDE = (1 << STRIDE) - 1  # tile row strides in bytes
# A core should have at least this many cycles of work in an op before the op spreads to another core:
# below it, the barrier and DMA latency of one more core (a few hundred cycles on d1) would be a large
# share of its time. Measured on ResNet-50 at 224 on d1: 4096 -> 1.06 M cycles, 1024 -> 0.93 M,
# 256 -> 0.92 M; 1024 keeps synchronisation under about a quarter of a core's time.
MIN_CYCLES_PER_CORE = 1024
# The most candidates the cost model prices for one op (`Ctx.costed`); the kernels enumerate theirs in a
# fixed order, so a search cut short is still deterministic. The largest op of ResNet-50 or BERT-base
# prices 1,700 (a 3 x 3 convolution of ResNet-50 b1); a user may lower it (`search_budget`) to compile
# faster, or raise it.
SEARCH_BUDGET = 2048


@dataclass
class Ctx:
    """Everything a kernel needs: the graph, the machine, buffers and the code of every core."""

    graph: Graph
    machine: Machine
    precision: str
    builder: ProgramBuilder
    views: dict[Value, View] = field(default_factory=dict)
    consts: dict[Value, float | int | bool] = field(default_factory=dict)
    tensors: list[Tensor] = field(default_factory=list)
    sram: dict[int, SramPlan] = field(default_factory=dict)  # by core id
    load: dict[int, CoreCode] = field(default_factory=dict)  # resident-weight loading, before the first call
    used: set[int] = field(default_factory=set)
    ranges: dict[str, float] = field(default_factory=dict)  # value name -> max |x| on calibration inputs
    # the mapping: decisions given by the user (by key), the decisions taken, resident weight shards
    given: dict[str, OpMapping] = field(default_factory=dict)
    search_budget: int = SEARCH_BUDGET
    search_notes: list[str] = field(default_factory=list)  # ops whose search stopped early (`costed`)
    _priced: dict[str, list[int]] = field(default_factory=dict)  # op -> [candidates priced, skipped]
    decisions: list[OpMapping] = field(default_factory=list)
    # resident copies loaded before the call: (core, DRAM source, SRAM address, bytes); mapping/build.py
    # names their tensors
    resident_loads: list[tuple[int, int, int, int]] = field(default_factory=list)
    scope: tuple[str, str] = ("", "")  # (op name, source) of the kernel running now
    users: dict[Value, list[Node]] = field(default_factory=dict)  # the graph's readers of each value
    # values kept in SRAM between their producer and their consumer (kernels/held.py), by DRAM view base
    held: dict[int, Any] = field(default_factory=dict)
    held_shards: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # DRAM base -> its SRAM shards
    # SUMMA outputs also kept in SRAM for a later op's epilogue residual (kernels/held.py), by reader name
    kept: dict[str, Any] = field(default_factory=dict)
    kept_used: set[str] = field(default_factory=set)  # readers whose code takes their kept residual
    # convolution outputs kept in SRAM as a later 1 x 1 convolution's B (kernels/held.py), by reader name
    kept_b: dict[str, Any] = field(default_factory=dict)
    # chains kept in SRAM by rows (kernels/band.py): the members by op name, the live bands by producer, and
    # each band's DRAM base -> (layout, its SRAM shards, whether a DRAM copy is written)
    bands: dict[str, Any] = field(default_factory=dict)
    band_live: dict[str, Any] = field(default_factory=dict)
    band_shards: dict[int, tuple[str, tuple[Any, ...], bool]] = field(default_factory=dict)
    kept_shards: dict[int, tuple[str, tuple[Any, ...]]] = field(default_factory=dict)  # DRAM base -> (reader, shards)
    # a pipeline (codegen/lanes.py): each op's stage by name, and the rectangle of the stage lowering now
    stage_of: dict[str, int] = field(default_factory=dict)
    lane_rect: Rect | None = None
    _room: tuple[object, int] = field(default=((), 0), repr=False)  # scratch_bytes's (key, value)
    preplaced: dict[Value, View] = field(default_factory=dict)  # a replica's result, in its slice of the join
    joined: set[str] = field(default_factory=set)  # joins whose replicas wrote their slices (no code)
    _parts: dict[str, int] = field(default_factory=dict)
    _dram_top: int = 0
    _resident: dict[tuple[int, int, tuple[Transfer, ...]], int] = field(default_factory=dict)  # `resident_copy`
    _constants: dict[tuple[DType, tuple[int, ...], bytes], View] = field(default_factory=dict)  # `weight`

    @property
    def home(self) -> Rect:
        """The rectangle an op may lay its grid of blocks on: the home die (`place.home_die`), or in a
        pipeline its stage's rectangle."""
        return self.lane_rect or home_die(self.machine)

    def apart(self, a: str, b: str) -> bool:
        """Whether ops `a` and `b` run in different pipeline stages (then a value between them goes
        through DRAM: the stages run side by side, on their own cores)."""
        return bool(self.stage_of) and self.stage_of.get(a, -1) != self.stage_of.get(b, -1)

    # -- types ----------------------------------------------------------------------------------------

    def storage(self, t: IRDType) -> DType:
        """The DRAM/SRAM type of an IR type at this precision (floats: FP32 or BF16; i64 narrows to i32)."""
        if t.is_float:
            return DType.F32 if self.precision == "fp32" else DType.BF16
        if t is IRDType.BOOL:
            return DType.BOOL
        return DType.I32

    @property
    def mxu_dtype(self) -> DType:
        return DType.F32 if self.precision == "fp32" else DType.BF16

    # -- DRAM -----------------------------------------------------------------------------------------

    def dram(self, name: str, kind: TensorKind, shape: tuple[int, ...], dtype: DType,
             data: bytes | None = None) -> View:
        """Allocate a dense DRAM tensor and declare it in the program."""
        addr = self._dram_top
        nbytes = prod(shape) * dtype.itemsize
        self._dram_top += -(-max(nbytes, 1) // ALIGN) * ALIGN
        if self._dram_top > self.machine.dram_bytes:
            raise SramOverflowError(f"tensor {name} does not fit in the machine's DRAM")
        self.tensors.append(Tensor(name, kind, addr, tuple(shape), dtype, data,
                                   f"{name}.bin" if data is not None else None))
        return View.dense(addr, tuple(shape), dtype)

    def weight(self, name: str, array: np.ndarray, dtype: DType) -> View:
        """A constant in DRAM, converted to `dtype` (RNE). A constant of the same type, shape and bytes as
        one already in DRAM is that one (a bias's FP32 copy made for each replica of an op in a pipeline, a
        causal mask that every attention layer makes): one copy, so resident copies of it are shared too."""
        data = np.ascontiguousarray(formats.encode(np.asarray(array), dtype)).tobytes()
        key = (dtype, tuple(array.shape), data)
        if key not in self._constants:
            self._constants[key] = self.dram(name, TensorKind.WEIGHT, tuple(array.shape), dtype, data)
        return self._constants[key]

    # -- cores ----------------------------------------------------------------------------------------

    def cores_for(self, cycles: float, items: int) -> int:
        """How many cores an op of `cycles` total work over `items` independent pieces should use."""
        n = max(1, int(cycles // MIN_CYCLES_PER_CORE))
        return max(1, min(n, items, self.builder.participants))

    # -- the mapping ----------------------------------------------------------------------------------

    @contextmanager
    def op_scope(self, name: str, source: str | None = None) -> Iterator[None]:
        """Attribute the decisions taken inside to op `name`."""
        old, self.scope = self.scope, (name, source or "")
        try:
            yield
        finally:
            self.scope = old

    def costed(self) -> bool:
        """Whether the op in scope may price one more candidate with its cost model: True within the search
        budget (counting it), else False (counting the candidate skipped; `search_report` says so)."""
        count = self._priced.setdefault(self.scope[0], [0, 0])
        if count[0] >= self.search_budget:
            count[1] += 1
            return False
        count[0] += 1
        return True

    def search_report(self, op: str) -> None:
        """After op `op`: note that its search stopped early, if it did."""
        priced, skipped = self._priced.get(op, (0, 0))
        if skipped:
            self.search_notes.append(f"op {op}: the search stopped early: it priced {priced} of {priced + skipped} "
                                     f"candidates (search budget {self.search_budget}); raise it with "
                                     "--search-budget (or search_budget=) for a fuller search")

    def decide(self, kernel: str, default: Callable[[], OpMapping],
               check: Callable[[OpMapping], OpMapping] | None = None) -> OpMapping:
        """The next decision of the op in scope: the user's (from `given`, checked by the kernel's
        `check`, which may fill in the prediction) or else the kernel's `default()`; it is recorded in
        `decisions`, so the compile's mapping lists it."""
        op = self.scope[0]
        part = self._parts.get(op, 0)
        self._parts[op] = part + 1
        key = op if part == 0 else f"{op}#{part}"
        mine = self.given.get(key)
        if mine is None:
            om = replace(default(), op=op, part=part)
        else:
            if mine.kernel != kernel:
                raise MappingError(f"op {key}: the mapping says kernel {mine.kernel!r}, but this op runs the "
                                   f"{kernel!r} kernel; dump the mapping again (--dump-mapping) and edit that")
            if mine.fused_into is not None:
                raise MappingError(f"op {key}: the mapping fuses it into {mine.fused_into}, but it is not "
                                   "fused in this compile; remove its fused_into")
            # (build.check_given has checked that its cores are on the mesh; every core is in the compile)
            assert all(c in self.sram for c in mine.cores), (key, mine.cores)
            stage = set(self.builder.ids) if self.lane_rect is not None else set(mine.cores)
            off = [c for c in mine.cores if c not in stage]
            if off:
                raise MappingError(f"op {key}: core {off[0]} of its region is outside its pipeline stage's "
                                   f"rectangle {self.lane_rect}; give cores of that rectangle")
            om = replace(mine, op=op, part=part)
            if check is not None:
                om = check(om)
        self.decisions.append(om)
        return om

    def region(self, kernel: str, cycles: float, items: int, *, axis: str = "rows",
               bound: Bound = Bound.COMPUTE, dram_bytes: float = 0.0, count: int | None = None,
               overlap: bool = True, extra: float = 0.0, hidden: float = 0.0) -> list[int]:
        """The cores of an op whose work (`cycles` in all) is `items` pieces cut along `axis` into one run
        per core: by default the first `cores_for` cores; a given decision may name any cores, at most one
        per piece, with split {axis: its number of cores}. Its prediction: the larger of a core's share of
        the work and the time `dram_bytes` take on the way from DRAM (codegen/paths.py), plus the latency
        of a load and of a store (each core's first load and last store overlap nothing). A kernel
        whose own cost model sizes the region passes its `count` of cores; one that loads its operands
        before computing on them says `overlap=False`, and its work and DRAM time add up, but for the
        `hidden` cycles of them that overlap (a kernel that pipelines its items); `extra` cycles (an exchange
        between its cores) add to either."""

        def predict(cores: tuple[int, ...]) -> tuple[int, Bound]:
            way = port_path(self.machine, cores)
            work, dram = cycles / len(cores), dram_bytes * way.cycles_per_byte
            busy = max(work, dram) if overlap else max(work, dram, work + dram - hidden)
            return ceil(busy + extra + 2 * way.latency), (Bound.DRAM if dram > work else bound)

        def default() -> OpMapping:
            n = self.cores_for(cycles, items) if count is None else max(1, min(count, items, self.builder.participants))
            cores = tuple(self.builder.ids[:n])
            predicted, why = predict(cores)
            return OpMapping("", kernel, cores, ((axis, n),), predicted_cycles=predicted, bound=why)

        def check(om: OpMapping) -> OpMapping:
            n = len(om.cores)
            if n > items:
                raise MappingError(f"op {om.key}: a region of {n} cores for {items} pieces of work along {axis}; "
                                   f"give at most {items} cores")
            if om.split_of(axis, n) != n or any(a != axis for a, _ in om.split):
                raise MappingError(f"op {om.key}: split {json.dumps(dict(om.split))} does not match its region: "
                                   f"this kernel splits along {axis} into one piece per core, so write split "
                                   f"{{\"{axis}\": {n}}}")
            predicted, why = predict(om.cores)
            return replace(om, split=((axis, n),), predicted_cycles=predicted, bound=why)

        return list(self.decide(kernel, default, check).cores)

    def resident_copy(self, core: int, nbytes: int, loads: list[Transfer]) -> tuple[int | None, list[Transfer]]:
        """An SRAM address on `core` for `nbytes` of resident weights that `loads` bring in (their destinations
        relative to the copy's start), and those loads at that address, for the load phase; None when they do
        not fit (the kernel streams them). A copy of the same bytes already resident on the core (an op's
        replica in another micro-batch of a pipeline, a weight two ops share) is shared: its address, and
        nothing to load again."""
        key = (core, nbytes, tuple(loads))
        if key in self._resident:
            return self._resident[key], []
        addr = self.sram[core].alloc_resident(nbytes)
        if addr is None:
            return None, []
        self._resident[key] = addr
        return addr, [replace(t, dst=t.dst + addr) for t in loads]

    def shrink_region(self, n: int) -> None:
        """The last decision's kernel found work for only its first n cores: record just those."""
        om = self.decisions[-1]
        if n < len(om.cores):
            axis = om.split[0][0] if om.split else "rows"
            self.decisions[-1] = replace(om, cores=om.cores[:n], split=((axis, n),) + om.split[1:])

    def core(self, c: int) -> CoreCode:
        self.used.add(c)
        return self.builder.cores[c]

    @cached_property
    def ops_by_name(self) -> dict[str, Node]:
        """The graph's nodes by name (lowering does not change the graph)."""
        return {n.name: n for n in self.graph.nodes}

    @property
    def scratch_bytes(self) -> int:
        """The scratch an op starting now may take on every core (sram.SramPlan.scratch_room: its working-set
        budget less the values held for a reader or kept for a residual, below the blocks and the code)."""
        key = (SramPlan.epoch, id(self.sram), len(self.sram))
        if self._room[0] != key:
            self._room = (key, min((s.scratch_room() for s in self.sram.values()), default=0))
        return self._room[1]

    def begin_op(self) -> None:
        for s in self.sram.values():
            s.begin_op()


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """`n` items in `parts` contiguous (start, count) ranges, as even as possible (no empty ranges)."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, s = [], 0
    for i in range(parts):
        c = q + (1 if i < r else 0)
        out.append((s, c))
        s += c
    return out


def boxes(shape: tuple[int, ...], max_elems: int, max_rows: int = MAX_ROWS,
          max_cols: int = MAX_COLS) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Cover `shape` with row-major boxes (starts, sizes): inner dims whole, one dim partial, outer dims 1,
    each box at most `max_elems` elements, its last dim at most `max_cols` and the product of the others
    at most `max_rows`, so a box is one 2-D tile (rows x cols) in SRAM."""
    shape = tuple(shape) or (1,)
    nd = len(shape)
    # the split dim k: dims after k are whole
    k, inner = nd - 1, 1
    while k >= 0:
        whole = inner * shape[k]
        rows = whole // shape[-1] if k < nd - 1 else 1
        if shape[-1] > max_cols or whole > max_elems or rows > max_rows:
            break
        inner = whole
        k -= 1
    out: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    if k < 0:
        return [((0,) * nd, shape)]
    if k == nd - 1:  # even the last dim does not fit: chunk it
        chunk = max(1, min(max_elems, max_cols))
    else:
        chunk = max(1, min(max_elems // inner, max_rows * shape[-1] // inner if k < nd - 1 else max_rows))
    outer = shape[:k]
    for idx in np.ndindex(*outer) if outer else [()]:
        for s in range(0, shape[k], chunk):
            n = min(chunk, shape[k] - s)
            out.append((tuple(idx) + (s,) + (0,) * (nd - k - 1), (1,) * k + (n,) + shape[k + 1:]))
    return out


def box_view(v: View, starts: tuple[int, ...], sizes: tuple[int, ...]) -> View:
    base = v.base + sum(s * st for s, st in zip(starts, v.strides, strict=True))
    return View(base, tuple(sizes), v.strides, v.dtype)


def load_view(cc: CoreCode, v: View, sram: int, sem: int) -> int:
    """DMA all of view `v` into a dense SRAM tile at `sram`; returns the number of DMAs (to wait for)."""
    dense = View.dense(sram, v.shape, v.dtype)
    ts = transfers(v.base, sram, [(n, s, d) for n, s, d in zip(v.shape, v.strides, dense.strides, strict=True)],
                   v.dtype.itemsize)
    for t in ts:
        cc.dma_load(t, sem)
    return len(ts)


def store_view(cc: CoreCode, sram: int, v: View, sem: int) -> int:
    """DMA a dense SRAM tile at `sram` to all of view `v`; returns the number of DMAs."""
    dense = View.dense(sram, v.shape, v.dtype)
    ts = transfers(sram, v.base, [(n, d, s) for n, s, d in zip(v.shape, v.strides, dense.strides, strict=True)],
                   v.dtype.itemsize)
    for t in ts:
        cc.dma_store(t, sem)
    return len(ts)


def tile2d(sizes: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of a dense box."""
    return (prod(sizes[:-1]) if len(sizes) > 1 else 1), (sizes[-1] if sizes else 1)

