"""Convolution chains kept in SRAM by rows (codegen/kernels/band.py): a ResNet-like chain of 1 x 1 and 3 x 3
convolutions with residuals runs with its activations in the cores' SRAM (halo rows put between neighbouring
cores) and matches eager; the mapping says so (tile field band, values in SRAM without a DRAM copy), a user
can take an op out of its chain, and illegal chains are one MappingError naming the op."""

from __future__ import annotations

import json

import pytest
import torch
from graph_checks import close_to_eager
from torch import nn

import dojoc
from dojoc.errors import MappingError


class Blocks(nn.Module):
    """Two bottleneck blocks (1 x 1, 3 x 3, 1 x 1 + the block's input), as in a ResNet stage."""

    def __init__(self, c: int = 16, m: int = 8) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(c, m, 1), nn.Conv2d(m, m, 3, padding=1), nn.Conv2d(m, c, 1)
        self.d, self.e, self.f = nn.Conv2d(c, m, 1), nn.Conv2d(m, m, 3, padding=1), nn.Conv2d(m, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x))))) + x)
        return torch.relu(self.f(torch.relu(self.e(torch.relu(self.d(y))))) + y)


def _compile(precision: str, mapping: object = None) -> tuple[dojoc.Program, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model, x = Blocks().eval(), torch.randn(2, 16, 12, 12)
    return dojoc.compile(model, (x,), machine="mesh4x4", precision=precision, mapping=mapping), model, x


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_chain_keeps_its_activations_in_sram_and_matches_eager(precision: str) -> None:
    prog, model, x = _compile(precision)
    assert prog.mapping is not None
    convs = [o for o in prog.mapping.ops if o.kernel == "conv2d"]
    assert len(convs) == 6 and all(o.tile_of("band") == 1 for o in convs)
    assert len({o.cores for o in convs}) == 1  # one partition for the whole chain
    values = {v.value: v for v in prog.mapping.values}
    inner = [values[o.writes[0]] for o in convs[:-1]]
    assert all(v.where.value == "sram" and not v.dram_copy and v.shards for v in inner), inner
    with torch.no_grad():
        close_to_eager(prog(x), model(x), precision)
    # nothing but the input and the output goes through DRAM: x read by the first op and as the first
    # block's residual (it comes from outside the chain), the result written once
    assert prog.report.dram_bytes == 3 * x.numel() * (4 if precision == "fp32" else 2)


def test_an_op_taken_out_of_its_chain_goes_through_dram() -> None:
    prog, model, x = _compile("fp32")
    assert prog.mapping is not None
    d = json.loads(prog.mapping.to_json())
    for o in d["ops"]:
        if o["op"] in ("convolution_3", "convolution_4", "convolution_5"):
            o["tile"]["band"] = 0
    prog2 = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", mapping=d)
    assert prog2.mapping is not None
    ops = prog2.mapping.by_key()
    assert ops["convolution_1"].tile_of("band") == 1 and ops["convolution_4"].tile_of("band", 0) == 0
    with torch.no_grad():
        torch.testing.assert_close(prog2(x), model(x), rtol=1e-4, atol=1e-4)
        prog(x)
    assert prog2.report.dram_bytes > prog.report.dram_bytes


def test_illegal_chains_name_the_op() -> None:
    prog, model, x = _compile("fp32")
    assert prog.mapping is not None
    d = json.loads(prog.mapping.to_json())
    first = next(o for o in d["ops"] if o["op"] == "convolution_1")
    rows = first["tile"]["rows"]
    first["tile"]["rows"] = 2 if rows != 2 else 1  # unlike the rest of its chain
    first["split"]["rows"] = first["split"]["rows"] * rows // first["tile"]["rows"]
    with pytest.raises(MappingError, match="same cores and tile rows"):
        dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", mapping=d)
    d = json.loads(prog.mapping.to_json())
    for o in d["ops"]:
        if o.get("tile", {}).get("band"):
            o["tile"]["rows"], o["split"]["rows"], o["cores"] = 5, 3, "0-5"
    with pytest.raises(MappingError, match="rows must divide 12"):
        dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", mapping=d)
    d = json.loads(prog.mapping.to_json())
    next(o for o in d["ops"] if o["op"] == "convolution")["tile"]["band"] = 2
    with pytest.raises(MappingError, match="band=2"):
        dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", mapping=d)


class Shortcut(nn.Module):
    """The two blocks, then the next stage's entry: a 1 x 1 reduce in the chain beside a stride-2 1 x 1
    shortcut outside it, which reads one row and column in two of the chain's last output."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.blocks, self.reduce, self.down = Blocks(c), nn.Conv2d(c, 8, 1), nn.Conv2d(c, 32, 1, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.blocks(x)
        return torch.relu(self.reduce(y)), self.down(y)


@pytest.mark.parametrize("precision, rows", [("fp32", 0), ("bf16", 0), ("fp32", 2)])
def test_a_stride_2_shortcut_gets_a_subsampled_dram_copy(precision: str, rows: int) -> None:
    """(With 2 rows per item, the last kept output, with its DRAM copy, is computed row by row.)"""
    torch.manual_seed(0)
    model, x = Shortcut().eval(), torch.randn(2, 16, 12, 12)
    prog = dojoc.compile(model, (x,), machine="mesh4x4", precision=precision)
    if rows:
        assert prog.mapping is not None
        d = json.loads(prog.mapping.to_json())
        for o in d["ops"]:
            if o.get("tile", {}).get("band"):
                o["tile"]["rows"], o["split"]["rows"], o["cores"] = rows, 12 // rows, "0-11"
        prog = dojoc.compile(model, (x,), machine="mesh4x4", precision=precision, mapping=d)
        assert prog.mapping is not None and prog.mapping.by_key()["convolution_5"].tile_of("rows") == rows
    assert prog.mapping is not None
    ops = prog.mapping.by_key()
    last = ops["convolution_5"]
    assert last.tile_of("band") == 1 and ops["convolution_6"].tile_of("band") == 1
    y = {v.value: v for v in prog.mapping.values}[last.writes[0]]
    assert y.dram_copy and "one row and column in 2" in y.layout, y
    with torch.no_grad():
        for got, want in zip(prog(x), model(x), strict=True):
            close_to_eager(got, want, precision)
    e = 4 if precision == "fp32" else 2
    n, c, h, w = x.shape
    # x twice (the first op, the first residual), y's copy written and read at a quarter, the two results
    assert prog.report.dram_bytes == e * (2 * x.numel() + 2 * n * c * (h // 2) * (w // 2)
                                          + n * 8 * h * w + n * 32 * (h // 2) * (w // 2))
