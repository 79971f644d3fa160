"""The bounded search: each op's cost model prices at most `search_budget` candidates, in a fixed order; an
op whose search is cut short is named in the mapping's notes (and by `dojoc compile`), and the program it
gets is still correct and the same on every compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dojoc
from dojoc.errors import CompileError


class Net(nn.Module):
    """A convolution (the conv2d and summa searches) and a linear layer (the matmul and summa searches)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(8, 16, 3, padding=1), nn.Linear(16 * 6 * 6, 40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _compile(budget: int | None) -> tuple[dojoc.Program, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(4, 8, 6, 6)
    return dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", search_budget=budget), model, x


def test_the_default_budget_searches_fully() -> None:
    prog, model, x = _compile(None)
    assert prog.mapping is not None and prog.mapping.notes == ()
    torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_small_budget_stops_early_says_so_and_stays_correct() -> None:
    prog, model, x = _compile(2)
    assert prog.mapping is not None
    notes = prog.mapping.notes
    assert notes and all("the search stopped early: it priced 2 of " in n for n in notes), notes
    assert any(n.startswith("op convolution:") for n in notes), notes
    torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)
    again, _, _ = _compile(2)  # deterministic: the same candidates, the same program
    assert [(s.cores, s.code) for s in again.image.sections] == [(s.cores, s.code) for s in prog.image.sections]
    assert dojoc.Mapping.from_json(prog.mapping.to_json()).notes == notes


def test_a_budget_below_one_is_an_error() -> None:
    with pytest.raises(CompileError, match="search budget 0: give at least 1 candidate per op"):
        _compile(0)
