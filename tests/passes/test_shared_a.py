"""A matmul's A shared whole by every core of its region (shared_a.py, tile field `share_a`): read from DRAM
once, multicast down the root's mesh column and along each row, and multiplied in place. The cost model takes
it for a wide weight over few rows (a language model's head); a given region may be any run of whole mesh
rows or part of one, with disabled cores; an illegal one is one error naming the op."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from graph_checks import close_to_eager
from torch import nn

import dojoc
from dojoc.codegen.kernels import shared_a
from dojoc.errors import MappingError
from dojoc.mapping import format_cores
from isa.machine import Machine
from isa.presets import load_machine

MESH = load_machine("mesh4x4")
# no column is enabled in every row: row 1 lacks the root's column and its head loads A itself
HOLED = load_machine("mesh4x4", ["disabled=[[1,0],[1,1],[2,2],[2,3]]"])
M, K, N = 16, 96, 512


def _model(n: int = N) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(K, n).eval(), torch.randn(M, K)


def _mapping(cores: str, items: int, nt: int, share: int = 1, m: int = M, kc: int = 32) -> dict[str, Any]:
    return {"ops": [{"op": "linear_matmul", "kernel": "matmul", "cores": cores, "resident": True,
                     "split": {"batch": 1, "rows": -(-M // m), "cols": items},
                     "tile": {"m": m, "n": nt, "k": kc, "share_a": share}}]}


def _compile(machine: Machine, mapping: dict[str, Any] | None, precision: str = "fp32", n: int = N) -> dojoc.Program:
    model, x = _model(n)
    prog = dojoc.compile(model, (x,), machine=machine, precision=precision, mapping=mapping)
    with torch.no_grad():
        close_to_eager(prog(x), model(x), precision)
    return prog


def test_the_cost_model_shares_a_for_a_wide_weight_over_few_rows() -> None:
    prog = _compile(MESH, None, "bf16")
    assert prog.mapping is not None
    om = prog.mapping.by_key()["linear_matmul"]
    assert om.kernel == "matmul" and om.tile_of("share_a") == 1 and om.tile_of("m") == M
    assert len(om.cores) > 1 and (om.tile_of("n") or 0) >= shared_a.MIN_COLS
    # A is read once (the weight is resident): the call moves one copy of A and the output, not one per core
    _, report = prog.run(_model()[1])
    assert report.dram_bytes <= M * K * 4 + M * N * 4 < len(om.cores) * M * K * 2


def test_tiles_narrower_than_min_cols_do_not_share_a_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """[16, 96] @ [96, 256] over 16 cores: the default plan shares A at 16 columns a core, and not with a
    floor above that."""
    def shared(min_cols: int) -> bool:
        monkeypatch.setattr(shared_a, "MIN_COLS", min_cols)
        prog = _compile(MESH, None, "bf16", 256)
        assert prog.mapping is not None
        return bool(prog.mapping.by_key()["linear_matmul"].tile_of("share_a", 0))

    assert shared(16)
    assert not shared(17)


@pytest.mark.parametrize("machine, cores, nt, copies", [
    (MESH, "0-15", 32, 1),  # whole mesh: the root's column multicast and four row multicasts
    (MESH, "4-11", 64, 1),  # two middle rows
    (MESH, "5-7", 171, 1),  # part of one row
    (MESH, "9", 512, 1),  # one core: no multicast at all
    (HOLED, "0-11", 43, 2),  # disabled cores: the root's column skips row 1, whose head loads A itself
], ids=["mesh", "rows", "part-row", "one-core", "holed"])
def test_a_given_region_shares_a_and_matches_eager(machine: Machine, cores: str, nt: int, copies: int) -> None:
    items = -(-N // nt)
    prog = _compile(machine, _mapping(cores, items, nt))
    assert prog.mapping is not None
    om = prog.mapping.by_key()["linear_matmul"]
    assert om.tile_of("share_a") == 1 and format_cores(om.cores) == cores
    # the call's DRAM traffic: A read `copies` times and the fp32 output written (weight and bias resident)
    _, report = prog.run(_model()[1])
    assert report.dram_bytes == copies * M * K * 4 + M * N * 4


@pytest.mark.parametrize("mapping, match", [
    (_mapping("0-15", 16, 32, share=2), "2: give 0 .* or 1"),
    (_mapping("0-15", 16, 32, m=8), "every tile must take all 16 rows of A .*; set share_a to 0"),
    (_mapping("0-1,3", 3, 171), "on mesh row 0 it leaves out cores between columns 0 and 3"),
    (_mapping("0-3,8-11", 8, 64), "mesh rows \\[0, 2\\], which do not follow each other"),
])
def test_an_illegal_shared_region_names_the_op(mapping: dict[str, Any], match: str) -> None:
    model, x = _model()
    with pytest.raises(MappingError, match=f"op linear_matmul: tile share_a=.*{match}"):
        dojoc.compile(model, (x,), machine=MESH, precision="fp32", mapping=mapping)


def test_a_row_of_a_longer_than_a_tile_stride_does_not_share_a() -> None:
    """A row of A (K x itemsize bytes) is the panel's row stride in every put and mma: beyond the 18-bit field
    the default plan does not share it, and a given share_a=1 says why."""
    torch.manual_seed(0)
    model, x = nn.Linear(140_000, 64).eval(), torch.randn(1, 140_000)
    prog = dojoc.compile(model, (x,), machine=MESH, precision="bf16")
    assert prog.mapping is not None
    assert not prog.mapping.by_key()["linear_matmul"].tile_of("share_a", 0)
    mapping = {"ops": [{"op": "linear_matmul", "kernel": "matmul", "cores": "0-3", "resident": False,
                        "split": {"batch": 1, "rows": 1, "cols": 4},
                        "tile": {"m": 1, "n": 16, "k": 3500, "share_a": 1}}]}
    with pytest.raises(MappingError, match="a row of A .* is longer than the 262,143 bytes"):
        dojoc.compile(model, (x,), machine=MESH, precision="bf16", mapping=mapping)


def test_a_panel_larger_than_scratch_says_so() -> None:
    torch.manual_seed(0)
    model, x = nn.Linear(1536, 256).eval(), torch.randn(128, 1536)
    mapping = {"ops": [{"op": "linear_matmul", "kernel": "matmul", "cores": "0-15", "resident": True,
                        "split": {"batch": 1, "rows": 1, "cols": 16},
                        "tile": {"m": 128, "n": 16, "k": 64, "share_a": 1}}]}
    with pytest.raises(MappingError, match="the shared A alone .* is larger than .* set share_a to 0"):
        dojoc.compile(model, (x,), machine=MESH, precision="fp32", mapping=mapping)
