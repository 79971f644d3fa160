"""Activations held in SRAM between two SUMMA matmuls (kernels/held.py): against eager, with disabled
cores (whose blocks go to a holder), waves and buffers; the mapping says where the value lives, an edit
of `hold` sends it through DRAM again, and an illegal hold is one clear error."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import dojoc
from dojoc.errors import MappingError
from dojoc.mapping import Where, format_cores
from isa.machine import Machine
from isa.presets import load_machine

MESH = load_machine("mesh4x4")
HOLED = load_machine("mesh4x4", ["disabled=[[1,2],[3,0]]"])  # rows 1 and 3 have a disabled core


class MLP(nn.Module):
    """A transformer's feed-forward block: Linear(48 -> 72), GELU, Linear(72 -> 48), residual."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(48, 72), nn.Linear(72, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x))) + x


def _mapping(machine: Machine, hold: int, buffers: int = 2, waves: int = 1, k: int | None = None) -> dict[str, Any]:
    """Both linear layers on summa; the first holds its output when `hold` (the second's K chunks are then
    the first's column blocks: 72 over 4 mesh columns = 18)."""
    cores, split = format_cores(range(machine.num_cores)), {"rows": machine.mesh[0], "cols": machine.mesh[1]}
    tile = {"buffers": buffers, "waves": waves}
    return {"ops": [
        {"op": "linear_matmul", "kernel": "summa", "cores": cores, "split": split, "resident": True,
         "tile": {**tile, "k": 16, "hold": hold}},
        {"op": "linear_1_matmul", "kernel": "summa", "cores": cores, "split": split, "resident": True,
         "tile": {**tile, "k": k or (18 if hold else 24)}}]}


def _compile(machine: Machine, precision: str, mapping: dict[str, Any]) -> tuple[dojoc.Program, torch.Tensor]:
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(2, 40, 48)
    prog = dojoc.compile(model, (x,), machine=machine, precision=precision, mapping=mapping)
    return prog, x


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
@pytest.mark.parametrize("buffers, waves", [(2, 1), (3, 2)])
def test_held_matches_eager_fp32(machine: Machine, buffers: int, waves: int) -> None:
    prog, x = _compile(machine, "fp32", _mapping(machine, 1, buffers, waves))
    torch.manual_seed(0)
    want = MLP().eval()(x).detach()
    got, report = prog.run(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert prog.mapping is not None
    hidden = prog.mapping.value("linear_matmul")
    assert hidden is not None and hidden.where is Where.SRAM and not hidden.dram_copy
    assert {s.core for s in hidden.shards} <= set(range(machine.num_cores)) and len(hidden.shards) == 16
    reader = next(r for r in report.ops if r["op"] == "linear_1_matmul")
    assert f"linear_matmul (sram x{machine.num_cores}, held)" in reader["inputs"]


def test_hold_saves_the_dram_round_trip_and_an_edit_undoes_it() -> None:
    held, x = _compile(HOLED, "bf16", _mapping(HOLED, 1))
    through, _ = _compile(HOLED, "bf16", _mapping(HOLED, 0))
    (a, ra), (b, rb) = held.run(x), through.run(x)
    # the hidden activation [80, 72] in bf16 is neither stored nor loaded again
    assert rb.dram_bytes - ra.dram_bytes == 2 * 80 * 72 * 2
    assert ra.cycles < rb.cycles
    assert torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1] > 0.999
    assert through.mapping is not None
    value = through.mapping.value("linear_matmul")
    assert value is not None and value.where is Where.DRAM


def test_illegal_holds_are_one_clear_error() -> None:
    bad = _mapping(MESH, 1)
    bad["ops"][1]["tile"]["hold"] = 1  # the second layer's output (with the residual add) is the graph's
    with pytest.raises(MappingError, match="linear_1_matmul: tile hold=1, but its output cannot stay in SRAM: "
                                           "it is a graph output; set hold to 0"):
        _compile(MESH, "fp32", bad)
    with pytest.raises(MappingError, match="held in SRAM in blocks of 18 columns: give tile k=18"):
        _compile(MESH, "fp32", _mapping(MESH, 1, k=24))
    reader_tiled = _mapping(MESH, 1)
    reader_tiled["ops"][1] = {"op": "linear_1_matmul", "kernel": "matmul", "cores": "0-15",
                              "split": {"batch": 1, "rows": 5, "cols": 3}, "tile": {"m": 16, "n": 16, "k": 24}}
    with pytest.raises(MappingError, match="the mapping gives its reader linear_1_matmul kernel 'matmul'"):
        _compile(MESH, "fp32", reader_tiled)


# -- a residual kept in SRAM for a later op ----------------------------------------------------------------

class Bottleneck(nn.Module):
    """Three 1 x 1 convolutions; the last adds the first's output back (ResNet's shortcut), which the second
    reads too, or with `shortcut` only the last reads (the first bottleneck of a stage: the second reads x)."""

    def __init__(self, shortcut: bool = False) -> None:
        super().__init__()
        self.shortcut = shortcut
        self.a, self.b, self.c = nn.Conv2d(8, 16, 1), nn.Conv2d(8 if shortcut else 16, 12, 1), nn.Conv2d(12, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x) if self.shortcut else torch.relu(self.a(x))
        return torch.relu(self.c(torch.relu(self.b(x if self.shortcut else y))) + y)


def _kept(machine: Machine, keep: int, waves: int = 1, shortcut: bool = False,
          reader: str = "summa") -> tuple[dojoc.Program, torch.Tensor, torch.Tensor]:
    """The first convolution on summa over the whole mesh, keeping its output when `keep`; the last on summa
    there too, or on the tiled kernel `reader` (a row of output pixels a core)."""
    torch.manual_seed(0)
    model, x = Bottleneck(shortcut).eval(), torch.randn(2, 8, 9, 9)
    cores, split = format_cores(range(machine.num_cores)), {"rows": machine.mesh[0], "cols": machine.mesh[1]}
    tile = {"k": 8, "buffers": 2, "waves": waves}
    last: dict[str, Any] = {"op": "convolution_2", "kernel": "summa", "cores": cores, "split": split,
                            "resident": True, "tile": tile}
    if reader != "summa":
        last = {"op": "convolution_2", "kernel": reader, "cores": cores, "resident": True,
                "split": {"groups": 1, "out_channels": 1, "batch": 2, "rows": 9, "cols": 1},
                "tile": {"out_channels": 16, "rows": 1, "cols": 9, "taps": 1, "channels": 12}}
    mapping = {"ops": [{"op": "convolution", "kernel": "summa", "cores": cores, "split": split, "resident": True,
                        "tile": {**tile, "keep": keep}}, last]}
    prog = dojoc.compile(model, (x,), machine=machine, precision="fp32", mapping=mapping)
    return prog, x, model(x).detach()


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
@pytest.mark.parametrize("waves", [1, 2])
def test_kept_residual_matches_eager_and_is_not_loaded(machine: Machine, waves: int) -> None:
    """Kept, the residual is added from each core's SRAM (slices beside a disabled core still load theirs):
    the same result, fewer DRAM bytes; the mapping records the choice."""
    moved = []
    for keep in (0, 1):
        prog, x, want = _kept(machine, keep, waves)
        assert prog.mapping is not None
        assert prog.mapping.by_key()["convolution"].tile_of("keep") == keep
        kept = [v for v in prog.mapping.values if "kept for convolution_2's residual" in v.layout]
        assert len(kept) == keep and all(v.where is Where.SRAM and v.dram_copy for v in kept)
        got, report = prog.run(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        moved.append(report.dram_bytes)
    assert moved[1] < moved[0], moved


def test_keep_without_a_residual_reader_is_an_error() -> None:
    mapping = _mapping(MESH, 0)
    mapping["ops"][1]["tile"]["keep"] = 1
    with pytest.raises(MappingError, match="tile keep=1.*no later matrix op adds it as its residual"):
        _compile(MESH, "fp32", mapping)


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
def test_a_residual_kept_only_never_goes_to_dram(machine: Machine) -> None:
    """Kept only (its sole reader adds it), the shortcut's output is not stored at all."""
    moved = {}
    for keep in (1, 2):
        prog, x, want = _kept(machine, keep, shortcut=True)
        got, report = prog.run(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        moved[keep] = report.dram_bytes
    assert moved[2] < moved[1], moved
    assert _kept(machine, 0, shortcut=True)[0].mapping.by_key()["convolution"].tile_of("keep") == 0  # type: ignore[union-attr]


def test_a_residual_kept_only_must_be_taken_by_summa() -> None:
    with pytest.raises(MappingError, match="kept in SRAM only.*keep=1"):
        _kept(MESH, 2, shortcut=True, reader="conv2d")
