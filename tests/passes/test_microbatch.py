"""The micro-batch cut (passes/microbatch.py): replicas compute what the graph computes, and a graph whose
ops mix the items of its batch is refused with the op and the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dojoc.codegen.builder import LANE_IDS, ProgramBuilder
from dojoc.errors import ShapeError
from dojoc.frontend import from_module
from dojoc.ir import Interpreter, Op, verify
from dojoc.passes.microbatch import batch_problem, split_batch
from dojoc.pipeline import run_passes
from isa.presets import load_machine


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(torch.relu(self.c(x)), 2)
        return torch.log_softmax(self.fc(y.flatten(1)), -1)


@pytest.mark.parametrize("m", [2, 4])
def test_replicas_compute_the_graph(m: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    g = run_passes(from_module(Net().eval(), (x,)))
    cut, origin = split_batch(g, m)
    verify(cut)
    np.testing.assert_array_equal(Interpreter(cut).run(x.numpy())[0], Interpreter(g).run(x.numpy())[0])
    # every op of the graph is there once per micro-batch, and knows where it comes from
    ops = [n.name for n in g.nodes if n.kind.value != "source"]
    assert sorted((r.op, r.micro_batch) for r in origin.values()) == sorted((o, i) for o in ops for i in range(m))
    assert [n.op for n in cut.nodes if n.name.endswith("_join")] == [Op.CAT]
    # parameters are shared, not copied
    assert len([n for n in cut.nodes if n.op is Op.PARAM]) == len([n for n in g.nodes if n.op is Op.PARAM])


def test_problems_name_the_op() -> None:
    class Mix(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - x.mean(0, keepdim=True)

    g = run_passes(from_module(Mix().eval(), (torch.randn(4, 8),)))
    assert "reduces over dim 0" in (batch_problem(g, 2) or "")
    assert "do not divide" in (batch_problem(g, 3) or "")
    with pytest.raises(ShapeError, match="mixes the items of the batch"):
        split_batch(g, 2)


def test_lane_barriers_count_their_own_cores() -> None:
    """A lane's barriers go to its cores only, under its own id, and after dropping idle cores they count
    the cores that remain; linear barriers still span every working core."""
    b = ProgramBuilder(load_machine("mesh2x2"), [0, 1, 2, 3])
    lane = LANE_IDS[0]
    b.bind(lane, (0, 1, 2))
    for c in (0, 1, 3):
        b.cores[c].emit("nop")
    b.set_lane(lane)
    b.barrier()
    b.set_lane(None)
    b.barrier()
    b.keep({0, 1, 3})
    assert [(i["id"], i["count"]) for i in b.cores[0].code if i.spec.mnemonic == "barrier"] == [(lane, 2), (0, 3)]
    assert [i["id"] for i in b.cores[3].code if i.spec.mnemonic == "barrier"] == [0]
    assert b.last[lane] == (lane, 0) and b.linear == [(0, 0)]
