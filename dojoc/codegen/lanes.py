"""Pipelined lowering: micro-batches through stages that run side by side on their own rectangles.

Given a `Pipeline` (mapping/stages.py), `prepare` cuts the graph into micro-batch replicas
(passes/microbatch.py) and orders their ops as a wavefront: at step t, stage s runs micro-batch t - s, the
last stage first. Code generation then lowers each op on its stage's rectangle (`Ctx.home`, the offered
cores) and `Lanes.enter` switches the program builder between lanes:

- an op's phases end at its *lane's* barriers (the stage's cores only, a barrier id of the stage's own);
- when stage s has finished micro-batch i (its cores have met at a lane barrier, so its stores are done),
  one of its cores signals every core of stage s + 1 (`ProgramBuilder.handoff`: row multicasts of a
  signal to the `handoff` semaphore), and stage s goes on with i + 1 at once. Stage s + 1 waits for that
  signal before it starts micro-batch i, then reads its values from DRAM. Producer and consumer are tied
  by semaphores only, so a stage runs ahead of the next as far as the micro-batches allow. Each replica's
  values have buffers of their own (DRAM is never reused), so nothing is overwritten while a later stage
  reads it, and a stage's SRAM is its own;
- the pipeline ends at a barrier of every core, and the replicas' outputs are joined after it.

Values never cross stages in SRAM (`Ctx.apart` stops holds and kept copies; convolution chains are off in
a pipeline), and every stage lays its grids on its own rectangle. `predict` is the cost model of the whole:
per stage and micro-batch, the sum of its ops' predictions, run through the wavefront's dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dojoc.codegen.builder import LANE_IDS
from dojoc.errors import MappingError, ShapeError
from dojoc.ir.graph import Graph
from dojoc.ir.ops import Op, OpKind
from dojoc.mapping.model import OpMapping
from dojoc.mapping.place import Rect, usable_cores
from dojoc.mapping.stages import Pipeline, Stage
from dojoc.passes.microbatch import batch_problem, batch_size, split_batch
from isa.machine import Machine
from isa.program import TensorKind

if TYPE_CHECKING:
    from dojoc.codegen.context import Ctx

MAX_STAGES = (len(LANE_IDS) + 1) // 2  # a lane barrier id per stage and a handoff id between two


@dataclass
class Lanes:
    """A pipeline being lowered: its plan, each stage's rectangle and cores, each replica op's (stage,
    micro-batch), and the group (stage, micro-batch) whose ops are being lowered."""

    plan: Pipeline
    rects: tuple[Rect, ...]
    cores: tuple[tuple[int, ...], ...]
    where: dict[str, tuple[int, int]]
    all_cores: tuple[int, ...] = ()  # every core of the machine, in offer order (after the pipeline)
    probe: bool = False  # only micro-batch 0 is lowered, to price the pipeline (`prepare(..., probe=True)`)
    replicas: dict[str, tuple[str, ...]] = field(default_factory=dict)  # micro-batch 0's op -> every replica's
    current: tuple[int, int] | None = None  # the group (stage, micro-batch) being lowered
    started: bool = False  # whether the pipeline is open: a group has been lowered and `close` has not run

    @property
    def stages(self) -> int:
        return len(self.rects)

    def lane_id(self, s: int) -> int:
        return LANE_IDS[2 * s]

    def handoff_id(self, s: int) -> int:
        """The barrier between stage s and stage s + 1."""
        return LANE_IDS[2 * s + 1]

    def bind(self, ctx: Ctx) -> None:
        """Start lowering the pipeline in `ctx`: each op's stage, the joins' outputs, the barrier ids."""
        self.current, self.started = None, False  # (a compile may run twice: lower.py)
        ctx.stage_of = {name: s for name, (s, _) in self.where.items()}
        self._join_in_place(ctx)
        for s, cores in enumerate(self.cores):
            ctx.builder.bind(self.lane_id(s), cores)
            if s + 1 < self.stages:
                ctx.builder.bind_handoff(self.handoff_id(s), cores, self.cores[s + 1])

    def _join_in_place(self, ctx: Ctx) -> None:
        """Declare each output that joins the replicas' results before they are lowered, and have each
        replica write its slice of it (`Ctx.preplaced`), so the join copies nothing. A result that a view op
        gives (it has no buffer of its own) is copied by the join instead."""
        from dojoc.codegen.lower import VIEW_OPS

        graph, producers = ctx.graph, ctx.graph.producers()
        for value, name in zip(graph.outputs, graph.output_names, strict=True):
            join = producers.get(value)
            if join is None or join.op is not Op.CAT or join.name in self.where:
                continue
            makers = [producers.get(v) for v in join.inputs]
            if any(m is None or m.name not in self.where or m.op in VIEW_OPS or len(m.outputs) != 1
                   or m.output in graph.outputs for m in makers) or len(set(join.inputs)) != len(join.inputs):
                continue
            t = value.type
            whole = ctx.dram(name, TensorKind.OUTPUT, t.shape, ctx.storage(t.dtype))
            ctx.views[value] = whole
            at = 0
            for v in join.inputs:
                n = v.type.shape[0]
                ctx.preplaced[v] = whole.slice(0, at, at + n)
                at += n
            ctx.joined.add(join.name)

    def enter(self, ctx: Ctx, name: str) -> None:
        """Before lowering op `name`: end the group before it (its handoff), and lower it in its lane (or,
        for an op of no stage after the pipeline, end the pipeline)."""
        group = self.where.get(name)
        if group == self.current or (group is None and not self.started):
            return  # the same group, or before the pipeline (the inputs' slices, parameters)
        self._end_group(ctx)
        if group is None:
            self.close(ctx)
            return
        b = ctx.builder
        self.started, self.current = True, group
        s, i = group
        # the group starts after the stage's barrier that ended its previous group (or the barrier before the
        # pipeline); a later stage's first op also counts its wait for the stage before's signal
        b.last.setdefault(self.lane_id(s), b.last[None])
        b.set_lane(self.lane_id(s))
        b.ids = list(self.cores[s])
        ctx.lane_rect = self.rects[s]

    def follow(self, ctx: Ctx, name: str, taken: list[OpMapping]) -> None:
        """After micro-batch 0's op `name` took decisions `taken`: give them to its replicas in the other
        micro-batches (unless the mapping gives theirs), so every micro-batch of a stage runs the same
        program, shares its resident weights (`Ctx.resident_copy`) and is not searched again."""
        for other in self.replicas.get(name, ())[1:]:
            for om in taken:
                if om.fused_into is None and om.op == name:
                    mine = replace(om, op=other)
                    ctx.given.setdefault(mine.key, mine)

    def _end_group(self, ctx: Ctx) -> None:
        """Leave the group being lowered: once its stage's cores have met (its stores are done), it hands
        the micro-batch to the next stage."""
        if self.current is None:
            return
        s, _ = self.current
        self.current = None
        b = ctx.builder
        if s + 1 < self.stages and not b.ends_phase(self.lane_id(s)):
            b.barrier()
        b.set_lane(None)
        if s + 1 < self.stages:
            b.handoff(self.handoff_id(s))

    def close(self, ctx: Ctx) -> None:
        """End the pipeline: every core meets at a barrier, and later ops run on every core."""
        if not self.started:
            return
        self._end_group(ctx)
        self.started = False
        ctx.builder.ids = list(self.all_cores)
        ctx.lane_rect = None
        ctx.builder.barrier()

    def predict(self, decisions: list[OpMapping], handoff: list[int], dram: Mapping[str, int] | None = None,
                port_bytes_per_cycle: float = 0.0) -> int:
        """The pipeline's predicted cycles: group (s, i) starts once (s, i - 1) is done and (s - 1, i)'s
        handoff has arrived (`handoff[s]` cycles after stage s is done: its signals to stage s + 1).

        The ops' predictions price each op alone, but concurrent stages share the DRAM port. With `dram`
        (the bytes each op's code moves to and from DRAM, `ProgramBuilder.dram_bytes`), the prediction is
        at least the wavefront's run in lockstep, each step taking its slowest group or the port's time for
        every group's bytes of that step, whichever is longer."""
        per: dict[tuple[int, int], int] = {}
        moved: dict[tuple[int, int], int] = {}
        for om in decisions:
            g = self.where.get(om.op)
            if g is not None and om.fused_into is None:
                per[g] = per.get(g, 0) + om.predicted_cycles
        for op, (s, i) in self.where.items():
            moved[(s, i)] = moved.get((s, i), 0) + (dram or {}).get(op, 0)
        groups = [(s, i) for s in range(self.stages) for i in range(self.plan.micro_batches)]
        if self.probe:  # one micro-batch was lowered: every micro-batch of a stage takes as long
            per = {(s, i): per.get((s, 0), 0) for s, i in groups}
            moved = {(s, i): moved.get((s, 0), 0) for s, i in groups}
        done: dict[tuple[int, int], int] = {}
        for i in range(self.plan.micro_batches):
            for s in range(self.stages):
                start = max(done.get((s, i - 1), 0), done.get((s - 1, i), 0) + (handoff[s - 1] if s else 0))
                done[(s, i)] = start + per.get((s, i), 0)
        free = max(done.values(), default=0)
        if not port_bytes_per_cycle:
            return free
        lockstep = 0.0
        for step in wavefront(self.plan.micro_batches, self.stages):
            lockstep += max(max(per.get(g, 0) for g in step),
                            sum(moved.get(g, 0) for g in step) / port_bytes_per_cycle)
        lockstep += sum(handoff)
        return max(free, round(lockstep))


def wavefront(micro_batches: int, stages: int) -> list[list[tuple[int, int]]]:
    """The pipeline's steps: at step t, stage s runs micro-batch t - s; each step's groups (stage,
    micro-batch), stage 0 first."""
    return [[(s, t - s) for s in range(stages) if 0 <= t - s < micro_batches]
            for t in range(micro_batches + stages - 1)]


def _rect_cores(machine: Machine, rect: Rect) -> tuple[int, ...]:
    """The enabled cores of `rect`, in the order a compile offers them (`place.usable_cores`)."""
    inside = {machine.core_at[rect.mesh(i, j)] for i in range(rect.rows) for j in range(rect.cols)
              if rect.mesh(i, j) in machine.core_at}
    return tuple(c for c in usable_cores(machine) if c in inside)


def prepare(graph: Graph, plan: Pipeline, machine: Machine, probe: bool = False) -> tuple[Graph, Lanes]:
    """The micro-batched graph in wavefront order, and its lanes; MappingError for an illegal plan. With
    `probe`, only micro-batch 0's ops, whose results are the outputs: its lowering prices every stage's time
    per micro-batch at 1/M of the whole pipeline's compile (`Lanes.predict`)."""
    S = len(plan.stages)
    if S > MAX_STAGES:
        raise MappingError(f"pipeline: {S} stages; a pipeline takes at most {MAX_STAGES} (the barrier ids of "
                           "its lanes and handoffs)")
    ops = [n.name for n in graph.nodes if n.kind is not OpKind.SOURCE]
    index = {name: i for i, name in enumerate(ops)}
    firsts = []
    for k, st in enumerate(plan.stages):
        if st.first not in index:
            raise MappingError(f"pipeline stage {k}: the graph has no op {st.first!r} (stages name the ops of the "
                               "graph before the cut, as the mapping's ops without their _mb suffix)")
        firsts.append(index[st.first])
    if firsts[0] != 0 or any(b <= a for a, b in zip(firsts, firsts[1:], strict=False)):
        raise MappingError(f"pipeline: stage 0 must start at the first op ({ops[0]}) and each stage after the "
                           "one before it, in graph order")
    rows, cols = machine.mesh
    rects, cores, taken = [], [], set[int]()
    for k, st in enumerate(plan.stages):
        r0, c0, nr, nc = st.rect
        if nr < 1 or nc < 1 or r0 < 0 or c0 < 0 or r0 + nr > rows or c0 + nc > cols:
            raise MappingError(f"pipeline stage {k}: rect {list(st.rect)} is off the {rows} x {cols} mesh; give "
                               "[first row, first column, rows, columns] within it")
        rect = Rect(r0, c0, nr, nc)
        cs = _rect_cores(machine, rect)
        if not cs or taken & set(cs):
            raise MappingError(f"pipeline stage {k}: rect {list(st.rect)} "
                               f"{'overlaps an earlier stage' if cs else 'has no enabled core'}; give stages "
                               "rectangles of their own")
        taken |= set(cs)
        rects.append(rect)
        cores.append(cs)
    stage = [max(k for k, f in enumerate(firsts) if f <= i) for i in range(len(ops))]
    try:
        gm, origin = split_batch(graph, plan.micro_batches)
    except ShapeError as e:  # (the graph mixes the items of its batch, or they do not divide)
        raise MappingError(f"pipeline: {e}") from None
    where = {name: (stage[index[r.op]], r.micro_batch) for name, r in origin.items()}
    M = plan.micro_batches
    by_group: dict[tuple[int, int], list] = {}
    lead, tail = [], []
    for n in gm.nodes:
        if n.name in where:
            by_group.setdefault(where[n.name], []).append(n)
        elif n.kind is OpKind.SOURCE or not by_group:
            lead.append(n)  # inputs, parameters and the inputs' micro-batch slices
        else:
            tail.append(n)  # the joins of the outputs
    order = list(lead)
    for step in wavefront(M, S):
        for group in reversed(step):  # the last stage first
            order += by_group.get(group, [])
    order += tail
    gm.nodes = order
    if probe:
        producers = gm.producers()
        gm.outputs = [producers[v].inputs[0] for v in gm.outputs]  # (each a join of the replicas)
        gm.nodes = [n for n in order if n.name not in where or where[n.name][1] == 0]
        gm.eliminate_dead_code()
        where = {k: v for k, v in where.items() if v[1] == 0}
    replicas: dict[str, list[str]] = {}
    for name, r in sorted(origin.items(), key=lambda kv: kv[1].micro_batch):
        if name in where:  # (a probe keeps micro-batch 0 only)
            replicas.setdefault(r.op, []).append(name)
    return gm, Lanes(plan, tuple(rects), tuple(cores), where, tuple(usable_cores(machine)), probe=probe,
                     replicas={names[0]: tuple(names) for names in replicas.values()})


# A pipeline is lowered only when the screen's optimistic estimate beats the one-op-at-a-time program by
# this share: the estimate assumes an op's time scales with its micro-batch, which small ones do not.
SCREEN_MARGIN = 0.9
MAX_MICRO_BATCHES = 8
# A pipeline is taken only when predicted this much faster than one op at a time: its stages' predictions
# are each their own, and the traffic of stages that run at once over the mesh links near the DRAM port
# is not priced (the port itself is: `Lanes.predict`). A 2-die pipeline of an MLP on `tile` (1024 rows) was
# predicted 16 % faster than one die (106,603 against 127,527 cycles) and ran 4 % slower (133,564 against
# 128,028), before the port was priced.
TAKE_SHARE = 0.8
PROBES = 2  # the screened pipelines whose first micro-batch is lowered to price them (each 1/M of a compile)


def _bands(machine: Machine, home: Rect, stages: int) -> list[Rect] | None:
    """`stages` rectangles for as many stages: on a machine of several dies, the dies nearest DRAM port 0's
    (each a stage); on one die, bands of its mesh rows, as equal as the rows allow."""
    dr, dc = machine.die
    dies_r, dies_c = machine.mesh[0] // dr, machine.mesh[1] // dc
    if dies_r * dies_c > 1:
        hr, hc = home.r0 // dr, home.c0 // dc
        dies = sorted(((r, c) for r in range(dies_r) for c in range(dies_c)),
                      key=lambda d: (abs(d[0] - hr) + abs(d[1] - hc), d))
        if len(dies) < stages:
            return None
        return [Rect(r * dr, c * dc, dr, dc) for r, c in dies[:stages]]
    if home.rows < stages:
        return None
    q, extra = divmod(home.rows, stages)
    out, r = [], home.r0
    for s in range(stages):
        n = q + (1 if s < extra else 0)
        out.append(Rect(r, home.c0, n, home.cols))
        r += n
    return out


def _cuts(work: list[float], stages: int) -> list[int] | None:
    """The first op of each of `stages` runs of `work`, cut so the largest run is as small as it can be (a
    linear partition, by dynamic programming over the prefix sums); None when there are fewer ops."""
    n = len(work)
    if n < stages:
        return None
    pre = [0.0]
    for w in work:
        pre.append(pre[-1] + w)
    # best[k][i]: the smallest largest run of ops[:i] in k runs; first[k][i]: where its last run starts
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    first = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                v = max(best[k - 1][j], pre[i] - pre[j])
                if v < best[k][i]:
                    best[k][i], first[k][i] = v, j
    cuts, i = [], n
    for k in range(stages, 0, -1):
        i = first[k][i]
        cuts.append(i)
    return cuts[::-1]


def propose(graph: Graph, decisions: list[OpMapping], machine: Machine, home: Rect) -> list[tuple[Pipeline, int]]:
    """The pipelines for `graph` (after the passes) that could beat its one-op-at-a-time program (given by
    its decisions), most promising first (at most PROBES), each with its screen estimate. The screen:
    an op that ran on n cores in T cycles runs a micro-batch on a stage of N cores in T * max(1, n / N) / M
    or more, a stage takes the sum of its ops, and the pipeline (M + S - 1) stage times."""
    batch = batch_size(graph)
    ops = [n.name for n in graph.nodes if n.kind is not OpKind.SOURCE]
    known = set(ops)
    micro = [m for m in range(2, min(batch, MAX_MICRO_BATCHES) + 1)
             if batch % m == 0 and batch_problem(graph, m) is None]
    time: dict[str, float] = {}
    width: dict[str, int] = {}
    for om in decisions:
        if om.fused_into is None and om.op in known:
            time[om.op] = time.get(om.op, 0) + om.predicted_cycles
            width[om.op] = max(width.get(om.op, 1), len(om.cores))
    default = sum(om.predicted_cycles for om in decisions if om.fused_into is None)
    found: list[tuple[float, Pipeline]] = []
    for stages in range(2, MAX_STAGES + 1):
        rects = _bands(machine, home, stages)
        if rects is None:
            break
        size = min(len(_rect_cores(machine, r)) for r in rects)
        work = [time.get(o, 0) * max(1.0, width.get(o, 1) / size) for o in ops]  # one micro-batch's, times M
        cuts = _cuts(work, stages)
        if cuts is None:
            continue
        bounds = [*cuts, len(ops)]
        slowest = max(sum(work[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
        for m in (m for m in micro if m >= stages):
            estimate = (m + stages - 1) * slowest / m
            if estimate < SCREEN_MARGIN * default:
                found.append((estimate, Pipeline(m, tuple(Stage(ops[c], (r.r0, r.c0, r.rows, r.cols))
                                                          for c, r in zip(cuts, rects, strict=True)))))
    found.sort(key=lambda f: (f[0], len(f[1].stages), f[1].micro_batches))
    return [(plan, int(est)) for est, plan in found[:PROBES]]
