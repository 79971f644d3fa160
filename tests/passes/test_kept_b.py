"""A convolution's output kept in SRAM as the B operand of the 1 x 1 convolution that reads it (held.b_reader,
tile fields `keep` and `sram_b`): each chunk of B is multicast from the core that has the producer's block,
and only the blocks at disabled positions (and the reader's slices beside a disabled core) come from DRAM."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import dojoc
from dojoc.errors import MappingError
from dojoc.mapping import format_cores
from isa.machine import Machine
from isa.presets import load_machine

MESH = load_machine("mesh4x4")
HOLED = load_machine("mesh4x4", ["disabled=[[1,2],[3,0]]"])  # rows 1 and 3 have a disabled core


class Pair(nn.Module):
    """A 1 x 1 convolution and ReLU, then a 1 x 1 convolution of its output (ResNet's bottleneck entry)."""

    def __init__(self, mid: int = 24) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(8, mid, 1), nn.Conv2d(mid, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _mapping(machine: Machine, sram_b: int, k: int | None = None, keep: int = 1) -> dict[str, Any]:
    cores, split = format_cores(range(machine.num_cores)), {"rows": machine.mesh[0], "cols": machine.mesh[1]}
    reader: dict[str, Any] = {"buffers": 2, "waves": 1, "sram_b": sram_b}
    keep = keep if sram_b else 0  # (kept for a reader that reads it from DRAM would be an error)
    reader["k"] = k if k is not None else 8
    return {"ops": [{"op": "convolution", "kernel": "summa", "cores": cores, "split": split, "resident": True,
                     "tile": {"k": 8, "buffers": 2, "waves": 1, "keep": keep}},
                    {"op": "convolution_1", "kernel": "summa", "cores": cores, "split": split, "resident": True,
                     "tile": reader}]}


def _compile(machine: Machine, mapping: dict[str, Any]) -> tuple[dojoc.Program, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model, x = Pair().eval(), torch.randn(2, 8, 7, 9)
    prog = dojoc.compile(model, (x,), machine=machine, precision="fp32", mapping=mapping)
    return prog, x, model(x).detach()


def _block_rows(machine: Machine) -> int:
    """The producer's largest row block: the reader's K chunk when it takes B from SRAM."""
    prog, _, _ = _compile(machine, _mapping(machine, 0))
    assert prog.mapping is not None
    m = prog.mapping.by_key()["convolution"].tile_of("m")
    assert isinstance(m, int)
    return m


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
def test_a_kept_b_matches_eager_and_is_not_loaded(machine: Machine) -> None:
    """From SRAM, the reader's B reads only the blocks at disabled positions from DRAM: the same result,
    fewer DRAM bytes; the mapping records the choice."""
    rows = _block_rows(machine)
    moved = {}
    for sram_b in (0, 1):
        prog, x, want = _compile(machine, _mapping(machine, sram_b, rows if sram_b else None))
        assert prog.mapping is not None
        assert prog.mapping.by_key()["convolution_1"].tile_of("sram_b", 0) == sram_b
        assert any("kept for convolution_1's B" in v.layout for v in prog.mapping.values) == bool(sram_b)
        got, report = prog.run(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        moved[sram_b] = report.dram_bytes
    b_bytes = 2 * 24 * 7 * 9 * 4  # the whole B in fp32
    if machine is MESH:
        assert moved[0] - moved[1] == b_bytes, moved
    else:  # two of the 16 blocks, and the reader's slices beside them, still come from DRAM
        assert 0 < moved[0] - moved[1] < b_bytes, moved


@pytest.mark.parametrize("mid, batch, size, keep", [(24, 2, 16, 1), (64, 4, 42, 2)])
def test_the_default_keeps_b_and_takes_it_from_sram(mid: int, batch: int, size: int, keep: int) -> None:
    """Without a mapping, the producer keeps its output for its 1 x 1 reader: kept only (keep 2: on a mesh
    without disabled cores nothing of it goes to DRAM) when the stores it saves take the port at least
    summa.MIN_KEEP_SAVING cycles (64 channels of 4 x 42 x 42 pixels in bf16: 0.9 MB, 2,258 cycles), else
    with its DRAM copy (24 channels of 2 x 16 x 16); the reader
    takes it from SRAM either way here, and its prediction stays within 25 % (40 %) of the emulator."""
    torch.manual_seed(0)
    model, x = Pair(mid).eval(), torch.randn(batch, 8, size, size)
    prog = dojoc.compile(model, (x,), machine=MESH, precision="bf16")
    assert prog.mapping is not None
    ops = prog.mapping.by_key()
    assert ops["convolution"].tile_of("keep") == keep and ops["convolution_1"].tile_of("sram_b") == 1
    got, report = prog.run(x)
    assert torch.corrcoef(torch.stack([got.flatten().float(), model(x).flatten()]))[0, 1] > 0.999
    row = next(r for r in report.ops if r["op"] == "convolution_1")
    # (the larger case's blocks of 1,764 columns in 4 chunks are predicted 6,060 and take 9,140: a known
    # gap of the estimate on this 4 x 4 mesh, docs/decisions.md; d1's readers in ResNet-50 are within 5 %)
    bar = 0.25 if keep == 1 else 0.40
    assert abs(row["predicted_cycles"] - row["emulated_cycles"]) <= bar * row["emulated_cycles"], row


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
def test_kept_only_stores_just_what_the_reader_reads_from_dram(machine: Machine) -> None:
    """Kept only (keep 2), the output goes to DRAM only in the column blocks that hold a disabled position,
    whose chunks and slices the reader reads from there: none on a full mesh, and correct on a holed one."""
    rows = _block_rows(machine)
    moved = {}
    for keep in (1, 2):
        prog, x, want = _compile(machine, _mapping(machine, 1, rows, keep=keep))
        got, report = prog.run(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        moved[keep] = report.dram_bytes
    out_bytes = 2 * 24 * 7 * 9 * 4  # the producer's output in fp32
    if machine is MESH:
        assert moved[1] - moved[2] == out_bytes, moved
    else:
        assert 0 < moved[1] - moved[2] < out_bytes, moved
    mapping = _mapping(machine, 0)
    mapping["ops"][0]["tile"]["keep"] = 2
    with pytest.raises(MappingError, match="op convolution: tile keep=2: .*its 1 x 1 reader convolution_1 reads it "
                                           r"from DRAM \(the mapping gives it sram_b=0\)"):
        _compile(machine, mapping)


class Fork(nn.Module):
    """Pair's producer read by a 1 x 1 convolution and by a stride-2 1 x 1 shortcut (a ResNet stage's end)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.down = nn.Conv2d(8, 24, 1), nn.Conv2d(24, 16, 1), nn.Conv2d(24, 32, 1, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.a(x))
        return self.b(y), self.down(y)


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
def test_kept_only_beside_a_strided_reader_stores_what_it_reads(machine: Machine) -> None:
    """Kept only beside a stride-2 1 x 1 reader, the output's DRAM copy has one row and column in 2 (but
    the column blocks of disabled positions, whole): the shortcut reads just those, and matches eager."""
    rows = _block_rows(machine)
    torch.manual_seed(0)
    model, x = Fork().eval(), torch.randn(2, 8, 7, 9)
    moved = {}
    for keep in (1, 2):
        prog = dojoc.compile(model, (x,), machine=machine, precision="fp32",
                             mapping=_mapping(machine, 1, rows, keep=keep))
        got, report = prog.run(x)
        for g, w in zip(got, model(x), strict=True):
            torch.testing.assert_close(g, w.detach(), rtol=1e-4, atol=1e-4)
        assert prog.mapping is not None
        y = next(v for v in prog.mapping.values if v.value == "convolution")
        assert ("one row and column in 2" in y.layout) == (keep == 2), y.layout
        moved[keep] = report.dram_bytes
    out_bytes, strided = 2 * 24 * 7 * 9 * 4, 2 * 24 * 4 * 5 * 4  # the output; rows 0, 2, 4, 6 of columns 0 .. 8
    if machine is MESH:
        assert moved[1] - moved[2] == out_bytes - strided, moved
    else:
        assert 0 < moved[1] - moved[2] < out_bytes - strided, moved


def test_illegal_sram_b_is_one_clear_error() -> None:
    with pytest.raises(MappingError, match="op convolution_1: tile sram_b=1: .*not kept in SRAM by its producer"):
        _compile(MESH, _mapping(MESH, 1, keep=0))
    with pytest.raises(MappingError, match="op convolution_1: its input convolution is kept in SRAM in blocks of "
                                           r"\d+ rows: give tile k=\d+, or sram_b=0"):
        _compile(MESH, _mapping(MESH, 1, k=5))
    with pytest.raises(MappingError, match="tile sram_b=2: give 0"):
        _compile(MESH, _mapping(MESH, 2))
