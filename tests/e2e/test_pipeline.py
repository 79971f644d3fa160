"""Pipelines (issue 6): micro-batches through stages side by side, given by a mapping or chosen by the cost
model, against eager PyTorch on the emulator."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import dojoc
from dojoc.mapping import Mapping, Pipeline, Stage

MESH = "mesh4x4"
HALVES = ((0, 0, 2, 4), (2, 0, 2, 4))


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(64, 128), torch.nn.Linear(128, 64), torch.nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(F.gelu(self.a(x)))))


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.c2, self.c3 = torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.c1(x)))
        y = F.max_pool2d(torch.relu(self.c3(torch.relu(self.c2(y))) + y), 2)
        return self.fc(y.mean((2, 3)))


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(64, 192), torch.nn.Linear(64, 64)
        self.ln, self.fc = torch.nn.LayerNorm(64), torch.nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (h.view(b, t, 4, 16).transpose(1, 2) for h in self.qkv(x).split(64, -1))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, 64)
        y = self.ln(x + self.out(a))
        return y + F.gelu(self.fc(y))


def _ops(prog: dojoc.Program) -> list[str]:
    assert prog.mapping is not None
    return [o.op for o in prog.mapping.ops if o.fused_into is None and not o.op.startswith("output")]


def _pipelined(model: torch.nn.Module, x: torch.Tensor, m: int, cut: int) -> tuple[dojoc.Program, dojoc.Program]:
    plain = dojoc.compile(model, (x,), machine=MESH, precision="fp32")
    ops = _ops(plain)
    plan = Pipeline(m, (Stage(ops[0], HALVES[0]), Stage(ops[cut], HALVES[1])))
    piped = dojoc.compile(model, (x,), machine=MESH, precision="fp32", mapping=Mapping("", "", "fp32", pipeline=plan))
    return plain, piped


@pytest.mark.parametrize(("model", "shape", "m", "cut"), [
    (MLP, (32, 64), 4, 1),
    (CNN, (4, 3, 8, 8), 2, 2),
    (Block, (4, 16, 64), 2, 3),
])
def test_given_pipeline_matches_eager(model: type[torch.nn.Module], shape: tuple[int, ...], m: int, cut: int) -> None:
    torch.manual_seed(0)
    net, x = model().eval(), torch.randn(*shape)
    plain, piped = _pipelined(net, x, m, cut)
    want = net(x)
    torch.testing.assert_close(piped(x), want, atol=1e-4, rtol=1e-4)
    assert piped.mapping is not None and piped.mapping.pipeline is not None
    rows = {r["op"]: r for r in piped.report.ops if "fused_into" not in r}
    # every replica runs on its stage's cores, and the emulator times it between its lane's barriers
    stage0 = {c for c in range(8)}
    for i in range(m):
        first = rows[f"{_ops(plain)[0]}_mb{i}"]
        assert first["emulated_cycles"] and first["emulated_cycles"] > 0
        cores = dojoc.mapping.parse_cores(first["region"], "test")
        assert set(cores) <= stage0
    last = rows[f"{_ops(plain)[-1]}_mb{m - 1}"]
    assert set(dojoc.mapping.parse_cores(last["region"], "test")) <= set(range(8, 16))
    assert piped.mapping.pipeline.predicted_cycles > 0


def test_stages_overlap_in_time() -> None:
    """Stage 0 runs micro-batch i + 1 while stage 1 runs micro-batch i: the call takes less than its
    replicas' cycles end to end."""
    torch.manual_seed(0)
    net, x = MLP().eval(), torch.randn(32, 64)
    _, piped = _pipelined(net, x, 4, 1)
    piped(x)
    timed = [r["emulated_cycles"] for r in piped.report.ops if "fused_into" not in r and "_mb" in r["op"]]
    assert piped.report.cycles < 0.8 * sum(timed)


def test_stages_hand_off_by_semaphores() -> None:
    """No barrier joins two stages: one core of stage 0 signals stage 1's cores after each micro-batch (row
    multicasts of the handoff semaphore), each of them waits once per micro-batch, and stage 0 runs ahead."""
    from dojoc.codegen.sems import HANDOFF
    from isa.table import Cast

    torch.manual_seed(0)
    net, x = MLP().eval(), torch.randn(32, 64)
    m = 4
    _, piped = _pipelined(net, x, m, 1)
    code = {c: sec.code for sec in piped.image.sections for c in sec.cores}
    waits = {c: sum(1 for i in ins if i.spec.mnemonic == "wait" and i["sem"] == HANDOFF) for c, ins in code.items()}
    signals = {c: [i for i in ins if i.spec.mnemonic == "signal" and i["sem"] == HANDOFF] for c, ins in code.items()}
    stage1 = {c for c in code if c >= 8}
    assert {c for c, n in waits.items() if n} == stage1 and set(waits[c] for c in stage1) == {m}
    senders = [c for c, s in signals.items() if s]
    assert len(senders) == 1 and senders[0] < 8
    assert len(signals[senders[0]]) == m * 2 and all(s["cast"] is Cast.ROW for s in signals[senders[0]])
    lanes = set(range(21, 31))
    joined = {i["count"] for ins in code.values() for i in ins if i.spec.mnemonic == "barrier" and i["id"] in lanes}
    assert joined == {8}  # lane barriers only: a stage's 8 cores
    torch.testing.assert_close(piped(x), net(x), atol=1e-4, rtol=1e-4)
    given = json.loads(piped.mapping.to_json())
    op = next(o for o in given["ops"] if o["kernel"] == "summa")
    op["tile"]["buffers"] = 3
    with pytest.raises(dojoc.MappingError, match="buffers=3: give 2 chunk buffers .in a pipeline stage"):
        dojoc.compile(net, (x,), machine=MESH, precision="fp32", mapping=Mapping.from_json(json.dumps(given)))


def test_pipeline_round_trips_through_json() -> None:
    torch.manual_seed(0)
    net, x = MLP().eval(), torch.randn(32, 64)
    _, piped = _pipelined(net, x, 4, 1)
    piped(x)
    assert piped.mapping is not None
    text = piped.mapping.to_json()
    assert json.loads(text)["pipeline"]["micro_batches"] == 4
    again = dojoc.compile(net, (x,), machine=MESH, precision="fp32", mapping=Mapping.from_json(text))
    assert again.mapping is not None and again.mapping.pipeline is not None
    assert again.mapping.pipeline.stages == piped.mapping.pipeline.stages
    again(x)
    assert again.report.cycles == piped.report.cycles
    # editing the plan changes the program
    edited = json.loads(text)
    edited["ops"] = []
    edited["pipeline"]["micro_batches"] = 2
    two = dojoc.compile(net, (x,), machine=MESH, precision="fp32", mapping=edited)
    assert two.mapping is not None and two.mapping.pipeline is not None and two.mapping.pipeline.micro_batches == 2
    names = [o.op for o in two.mapping.ops]
    assert any(n.endswith("_mb1") for n in names) and not any(n.endswith("_mb2") for n in names)


@pytest.mark.parametrize(("plan", "message"), [
    ({"micro_batches": 3, "stages": [{"first": "linear_matmul", "rect": [0, 0, 2, 4]}]}, "do not divide"),
    ({"micro_batches": 2, "stages": [{"first": "nope", "rect": [0, 0, 2, 4]}]}, "no op 'nope'"),
    ({"micro_batches": 2, "stages": [{"first": "linear_matmul", "rect": [0, 0, 2, 4]},
                                     {"first": "linear_1_matmul", "rect": [1, 0, 2, 4]}]}, "overlaps"),
    ({"micro_batches": 2, "stages": [{"first": "linear_matmul", "rect": [3, 0, 2, 4]}]}, "off the 4 x 4 mesh"),
    ({"micro_batches": 2, "stages": [{"first": "linear_1_matmul", "rect": [0, 0, 2, 4]}]}, "stage 0 must start"),
    ({"micro_batches": 2}, "non-empty list of stages"),
])
def test_illegal_pipeline_is_one_mapping_error(plan: dict, message: str) -> None:
    torch.manual_seed(0)
    net, x = MLP().eval(), torch.randn(32, 64)
    with pytest.raises(dojoc.MappingError, match=message):
        dojoc.compile(net, (x,), machine=MESH, precision="fp32", mapping={"ops": [], "pipeline": plan})


def test_a_batch_that_mixes_items_cannot_be_pipelined() -> None:
    class Mix(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x, dim=0) * 2

    plan = {"micro_batches": 2, "stages": [{"first": "softmax", "rect": [0, 0, 4, 4]}]}
    with pytest.raises(dojoc.MappingError, match="mixes the items of the batch"):
        dojoc.compile(Mix().eval(), (torch.randn(4, 8),), machine=MESH, mapping={"ops": [], "pipeline": plan})


def test_cost_model_decides_and_says_why() -> None:
    """Unasked, a batch > 1 is pipelined only when predicted faster; here every op already uses the whole mesh,
    so the compile keeps one op at a time (the screen finds no pipeline that could win), and a mapping may
    switch pipelining off outright."""
    torch.manual_seed(0)
    net, x = MLP().eval(), torch.randn(32, 64)
    auto = dojoc.compile(net, (x,), machine=MESH, precision="fp32")
    assert auto.mapping is not None and auto.mapping.pipeline is None
    off = dojoc.compile(net, (x,), machine=MESH, precision="fp32",
                        mapping={"ops": [], "pipeline": {"micro_batches": 1, "stages": [
                            {"first": "linear_matmul", "rect": [0, 0, 4, 4]}]}})
    assert off.mapping is not None and off.mapping.pipeline is None
    off(x)
    auto(x)
    assert off.report.cycles == auto.report.cycles


def test_cost_model_takes_a_pipeline_it_predicts_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the policy's thresholds opened (any screened pipeline is probed, any probed one taken), the
    compile lowers the best candidate whole, says why, and the program still matches eager."""
    import dojoc.codegen.lanes as lanes
    import dojoc.pipeline as pipeline

    monkeypatch.setattr(lanes, "SCREEN_MARGIN", 100.0)
    monkeypatch.setattr(pipeline, "TAKE_SHARE", 100.0)
    torch.manual_seed(0)
    net, x = MLP().eval(), torch.randn(32, 64)
    prog = dojoc.compile(net, (x,), machine=MESH, precision="fp32")
    assert prog.mapping is not None and prog.mapping.pipeline is not None
    assert prog.mapping.pipeline.note.startswith("pipelined: a pipeline of")
    assert prog.mapping.pipeline.micro_batches >= len(prog.mapping.pipeline.stages) >= 2
    torch.testing.assert_close(prog(x), net(x), atol=1e-4, rtol=1e-4)


def test_replicas_share_their_stage_resident_weights() -> None:
    """Every micro-batch of a stage takes micro-batch 0's decisions, so the weights a stage keeps resident
    are loaded once, not once per micro-batch."""
    torch.manual_seed(0)
    net, x = MLP().eval(), torch.randn(32, 64)
    plain, piped = _pipelined(net, x, 4, 1)
    plain(x)
    piped(x)
    assert piped.mapping is not None
    by_op = {o.op: o for o in piped.mapping.ops if o.fused_into is None}
    for i in range(1, 4):
        a, b = by_op["linear_1_matmul_mb0"], by_op[f"linear_1_matmul_mb{i}"]
        assert (a.kernel, a.cores, a.split, a.tile, a.resident) == (b.kernel, b.cores, b.split, b.tile, b.resident)
    weights = sum(a.nbytes for a in net.state_dict().values())
    resident = sum(s["resident"] for s in piped.report.sram)
    assert weights <= resident < 2 * weights
    assert resident <= 1.1 * sum(s["resident"] for s in plain.report.sram)


def test_the_prediction_prices_the_shared_dram_port() -> None:
    """Each op's prediction prices it alone; stages that run at once share the DRAM port, so with the bytes
    each op's code moves the pipeline takes at least its wavefront in lockstep, each step the longer of its
    slowest group and the port's time for all of that step's bytes."""
    from dojoc.codegen.lanes import Lanes
    from dojoc.mapping.model import OpMapping
    from dojoc.mapping.place import Rect

    rects = (Rect(0, 0, 2, 4), Rect(2, 0, 2, 4))
    plan = Pipeline(2, (Stage("a", (0, 0, 2, 4)), Stage("b", (2, 0, 2, 4))))
    where = {"a_mb0": (0, 0), "a_mb1": (0, 1), "b_mb0": (1, 0), "b_mb1": (1, 1)}
    lanes = Lanes(plan, rects, (tuple(range(8)), tuple(range(8, 16))), where)
    decisions = [OpMapping(op, "matmul", predicted_cycles=100) for op in where]
    # alone: b_mb0 starts after a_mb0 and its 10-cycle handoff, b_mb1 after both a_mb1's handoff and b_mb0
    assert lanes.predict(decisions, [10]) == 310
    # 40,000 bytes a group at 400 B/cycle: the middle step's two groups need the port for 200 cycles
    assert lanes.predict(decisions, [10], dict.fromkeys(where, 40_000), 400.0) == 100 + 200 + 100 + 10
    # few bytes: the port does not bound it
    assert lanes.predict(decisions, [10], dict.fromkeys(where, 4_000), 400.0) == 310
