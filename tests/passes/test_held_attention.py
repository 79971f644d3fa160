"""Queries, keys and values held in SRAM by the projection that makes them (kernels/held_read.py): attention
takes them from the holders' SRAM by puts and multicasts, never from DRAM. Against eager, causal or not,
with disabled cores (whose blocks go to a holder); an edit of `hold` sends them through DRAM again."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import dojoc
from dojoc.codegen.kernels.held_read import _segments
from dojoc.errors import MappingError
from dojoc.mapping import Where, format_cores
from isa.machine import Machine
from isa.presets import load_machine

MESH = load_machine("mesh4x4")
HOLED = load_machine("mesh4x4", ["disabled=[[1,2],[3,0]]"])  # rows 1 and 3 have a disabled core
HIDDEN, HEADS, TOKENS = 64, 4, 40


class Attention(nn.Module):
    """One projection to Q, K and V, split by views into heads, then scaled dot-product attention."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.qkv, self.causal = nn.Linear(HIDDEN, 3 * HIDDEN), causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, HEADS, HIDDEN // HEADS).transpose(1, 2) for t in self.qkv(x).split(HIDDEN, -1))
        o = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return o.transpose(1, 2).reshape(b, n, HIDDEN)


def _mapping(machine: Machine, hold: int) -> dict[str, Any]:
    cores, split = format_cores(range(machine.num_cores)), {"rows": machine.mesh[0], "cols": machine.mesh[1]}
    return {"ops": [{"op": "linear_matmul", "kernel": "summa", "cores": cores, "split": split, "resident": True,
                     "tile": {"k": 16, "hold": hold}}]}


def _run(machine: Machine, precision: str, causal: bool, hold: int) -> tuple[dojoc.Program, Any, Any, Any]:
    torch.manual_seed(0)
    model, x = Attention(causal).eval(), torch.randn(2, TOKENS, HIDDEN)
    prog = dojoc.compile(model, (x,), machine=machine, precision=precision, mapping=_mapping(machine, hold))
    got, report = prog.run(x)
    return prog, got, report, model(x).detach()


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_held_qkv_matches_eager_fp32(machine: Machine, causal: bool) -> None:
    prog, got, report, want = _run(machine, "fp32", causal, 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert prog.mapping is not None
    qkv = prog.mapping.value("linear_matmul")
    assert qkv is not None and qkv.where is Where.SRAM and not qkv.dram_copy
    reader = next(r for r in report.ops if r["kernel"] == "attention")
    assert f"linear_matmul (sram x{machine.num_cores}, held)" in reader["inputs"]


def test_held_qkv_saves_its_dram_round_trip_and_an_edit_undoes_it() -> None:
    prog, a, ra, want = _run(HOLED, "bf16", False, 1)
    through, b, rb, _ = _run(HOLED, "bf16", False, 0)
    # Q, K and V [80, 192] in bf16 are neither stored nor loaded (K and V may be loaded more than once)
    assert rb.dram_bytes - ra.dram_bytes >= 2 * 2 * TOKENS * 3 * HIDDEN * 2
    assert ra.cycles < rb.cycles
    for got in (a, b):
        assert torch.corrcoef(torch.stack([got.flatten().float(), want.flatten()]))[0, 1] > 0.999
    assert through.mapping is not None
    value = through.mapping.value("linear_matmul")
    assert value is not None and value.where is Where.DRAM


def test_multicast_segments_skip_disabled_cores_only() -> None:
    m = HOLED  # (1, 2) disabled: core ids 0-3 row 0, 4-6 row 1 (columns 0, 1, 3), 7-10 row 2
    assert _segments(m, [4, 5, 6], 1) == [[4, 5, 6]]  # one row multicast over columns 0-3
    assert _segments(m, [4, 6], 1) == [[4], [6]]  # core 5 lies between them: not one of them
    assert _segments(m, [0, 4, 7], 0) == [[0, 4, 7]]  # column 0, rows 0-2
    assert _segments(m, [2, 9], 0) == [[2, 9]]  # column 2 of rows 0 and 2: (1, 2) between them is disabled


class Block(nn.Module):
    """Attention, then the output projection that takes attention's output as its A."""

    def __init__(self) -> None:
        super().__init__()
        self.attn, self.out = Attention(False), nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(x))


def _block(machine: Machine, hold: int | None) -> tuple[dojoc.Program, Any, Any, Any]:
    """The block with both projections on summa; attention's tile hold as given (None: its default)."""
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(2, TOKENS, HIDDEN)
    mapping = _mapping(machine, 1)
    mapping["ops"].append({**mapping["ops"][0], "op": "linear_1_matmul", "tile": {"k": HIDDEN // machine.mesh[1]}})
    if hold is not None:
        first = dojoc.compile(model, (x,), machine=machine, precision="fp32", mapping=mapping)
        assert first.mapping is not None
        attn = next(o for o in first.mapping.to_dict()["ops"] if o["kernel"] == "attention")
        mapping["ops"].append({**attn, "tile": {"hold": hold}})
    prog = dojoc.compile(model, (x,), machine=machine, precision="fp32", mapping=mapping)
    got, report = prog.run(x)
    return prog, got, report, model(x).detach()


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
def test_attention_output_held_for_its_projection(machine: Machine) -> None:
    held, got, report, want = _block(machine, 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    reader = next(r for r in report.ops if r["op"] == "linear_1_matmul")
    assert f"scaled_dot_product_attention (sram x{machine.num_cores}, held)" in reader["inputs"]
    through, _, rt, _ = _block(machine, 0)
    # the output [80, 64] in fp32 is neither stored nor loaded again
    assert rt.dram_bytes - report.dram_bytes == 2 * 2 * TOKENS * HIDDEN * 4


def test_attention_hold_without_a_matmul_reader_is_one_clear_error() -> None:
    prog, *_ = _run(MESH, "fp32", False, 1)
    assert prog.mapping is not None
    attn = next(o for o in prog.mapping.to_dict()["ops"] if o["kernel"] == "attention")
    mapping = _mapping(MESH, 1)
    mapping["ops"].append({**attn, "tile": {"hold": 1}})
    torch.manual_seed(0)
    with pytest.raises(MappingError, match="scaled_dot_product_attention: tile hold=1, but its output cannot "
                                           "stay in SRAM: it is a graph output; set hold to 0"):
        dojoc.compile(Attention(False).eval(), (torch.randn(2, TOKENS, HIDDEN),), machine=MESH,
                      precision="fp32", mapping=mapping)
