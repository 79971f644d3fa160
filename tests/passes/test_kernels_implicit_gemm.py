"""Weights resident in the SUMMA kernel (each chunk on the core that multicasts it), and convolutions run
as SUMMA over the mesh with their input's shifted windows as the B operand (kernels/im2col.py), against
eager: strides, padding, dilation, batches whose pixel blocks cross images, bias, residual, disabled
cores; and chosen by the cost model on a ResNet-sized convolution."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import dojoc
from dojoc.codegen.kernels.im2col import Im2col, Shifted
from dojoc.codegen.view import View
from dojoc.mapping import OpMapping, format_cores
from isa.dtypes import DType
from isa.presets import load_machine

HOLED = load_machine("mesh4x4", ["disabled=[[1,2],[3,0]]"])  # rows 1 and 3 have a disabled core


def _forced(model: nn.Module, args: tuple[torch.Tensor, ...], kernels: tuple[str, ...], kc: int,
            resident: bool, waves: int = 1, buffers: int = 2, shift: int | None = None) -> dojoc.Program:
    """Compile with the model's first matrix op forced onto summa (resident or not; a convolution's
    shifted form or not) by a mapping."""
    first = dojoc.compile(model, args, machine=HOLED, precision="fp32")
    assert first.mapping is not None
    op = next(o for o in first.mapping.ops if o.kernel in (*kernels, "summa"))  # (the cost model may pick it)
    mapping = {"ops": [{"op": op.op, "kernel": "summa", "cores": format_cores(range(HOLED.num_cores)),
                        "split": {"rows": 4, "cols": 4}, "tile": {"k": kc, "waves": waves, "buffers": buffers,
                                                                 **({"shift": shift} if shift is not None else {})},
                        "resident": resident}]}
    prog = dojoc.compile(model, args, machine=HOLED, precision="fp32", mapping=mapping)
    assert prog.mapping is not None
    om = next(o for o in prog.mapping.ops if o.op == op.op)
    assert om.kernel == "summa" and om.resident is resident and om.tile_of("waves") == waves
    assert shift is None or (om.tile_of("shift") or 0) == shift
    return prog


def _dmas(prog: dojoc.Program) -> tuple[int, int]:
    """DMA loads before and after the load barrier, over every core's code."""
    before = after = 0
    for s in prog.lowered.image.sections:
        code = [ins.spec.mnemonic for ins in s.code]
        b = code.index("barrier")
        before += code[:b].count("dmald")
        after += code[b:].count("dmald")
    return before, after


class Fc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, 56)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x) + r)


@pytest.mark.parametrize("waves, buffers", [(2, 2), (2, 3)])
def test_summa_waves_match_eager(waves: int, buffers: int) -> None:
    """Waves cut A's rows when B is the resident weight (a linear layer), B's columns when A is (a conv)."""
    torch.manual_seed(0)
    model, x, r = Fc().eval(), torch.randn(45, 40), torch.randn(45, 56)
    prog = _forced(model, (x, r), ("matmul", "summa"), 8, True, waves, buffers)
    torch.testing.assert_close(prog(x, r), model(x, r).detach(), rtol=1e-4, atol=1e-4)
    conv = Conv(8, 40, 3, 1, 1, 1, True, True).eval()
    xc, rc = torch.randn(2, 8, 9, 9), torch.randn(2, 40, 9, 9)
    prog = _forced(conv, (xc, rc), ("conv2d",), 16, True, waves, buffers)
    torch.testing.assert_close(prog(xc, rc), conv(xc, rc).detach(), rtol=1e-4, atol=1e-4)


def test_summa_weight_resident_matches_and_reads_less() -> None:
    torch.manual_seed(0)
    model, x, r = Fc().eval(), torch.randn(45, 40), torch.randn(45, 56)
    want = model(x, r).detach()
    streamed = _forced(model, (x, r), ("matmul", "summa"), 16, False)
    kept = _forced(model, (x, r), ("matmul", "summa"), 16, True)
    for prog in (streamed, kept):
        torch.testing.assert_close(prog(x, r), want, rtol=1e-4, atol=1e-4)
    (b0, a0), (b1, a1) = _dmas(streamed), _dmas(kept)
    assert b1 > b0 and a1 < a0, ((b0, a0), (b1, a1))  # loaded once, no longer per call
    _, s_rep = streamed.run(x, r)
    _, k_rep = kept.run(x, r)
    assert k_rep.dram_bytes < s_rep.dram_bytes


class Conv(nn.Module):
    def __init__(self, c: int, o: int, k: int, stride: int, pad: int, dil: int, bias: bool, residual: bool):
        super().__init__()
        self.conv = nn.Conv2d(c, o, k, stride=stride, padding=pad, dilation=dil, bias=bias)
        self.residual = residual

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.relu(y + r) if self.residual else y


CASES = [  # n, c, o, k, stride, pad, dil, hw, bias, residual
    (2, 8, 40, 3, 1, 1, 1, 9, True, True),  # pixel blocks cross the images
    (1, 12, 36, 3, 2, 1, 1, 11, True, False),
    (2, 10, 36, 3, 2, 0, 1, 12, False, True),
    (1, 5, 33, 3, 1, 2, 2, 10, True, False),
    (1, 4, 40, 5, 1, 2, 1, 9, False, False),  # taps wholly in the padding at the corners
]


@pytest.mark.parametrize("case", CASES, ids=[f"n{c[0]}c{c[1]}o{c[2]}k{c[3]}s{c[4]}p{c[5]}d{c[6]}" for c in CASES])
@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("shift", [0, 1])
def test_conv_as_implicit_gemm_matches_eager(case: tuple[Any, ...], resident: bool, shift: int) -> None:
    """Both forms: a window per tap (shift 0), and the padded input read once for every tap (shift 1; of a
    strided convolution, its stride phases)."""
    n, c, o, k, s, p, d, hw, bias, residual = case
    torch.manual_seed(1)
    model = Conv(c, o, k, s, p, d, bias, residual).eval()
    x = torch.randn(n, c, hw, hw)
    oh = (hw + 2 * p - d * (k - 1) - 1) // s + 1
    r = torch.randn(n, o, oh, oh)
    prog = _forced(model, (x, r), ("conv2d",), min(8, c) if shift else 8, resident, shift=shift)  # (K: channels)
    torch.testing.assert_close(prog(x, r), model(x, r).detach(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("waves", [1, 2])
def test_shifted_conv_reads_its_input_once_for_every_tap(waves: int, stride: int) -> None:
    """The shifted form reads each input pixel about once (plus the halo of each column block and the
    slices beside the disabled cores), where a window per tap reads it once per tap; of stride 2, its
    input's 4 stride phases once, where a window per tap reads 9 windows of a quarter of it."""
    torch.manual_seed(0)
    model = Conv(16, 40, 3, stride, 1, 1, True, stride == 2).eval()
    hw = 12 * stride
    x, r = torch.randn(2, 16, hw, hw), torch.randn(2, 40, 12, 12)
    want = model(x, r).detach()
    moved = []
    for shift in (0, 1):
        prog = _forced(model, (x, r), ("conv2d",), 16, True, waves, shift=shift)
        got, rep = prog.run(x, r)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        moved.append(rep.dram_bytes)
    # (of stride 2, the residual and the output are a third of it)
    assert moved[1] < (0.6 if stride == 1 else 0.8) * moved[0], moved


@pytest.mark.parametrize("stride", [1, 2])
def test_slice_halos_come_from_the_cores_that_have_them(stride: int) -> None:
    """Beside a disabled core, a shifted convolution's slices load only their own columns, and the later
    slices' cores (and the core right of the disabled one) put their halos (summa_relay.py, two chunk
    buffers): the same result as with three buffers, where each slice loads its halo, with fewer DRAM
    bytes."""
    from dojoc.codegen.kernels.summa_relay import RELAY

    torch.manual_seed(0)
    model = Conv(16, 40, 3, stride, 1, 1, True, True).eval()
    x = torch.randn(2, 16, 24, 24)
    r = torch.randn(2, 40, 24 // stride, 24 // stride)
    want = model(x, r).detach()
    moved = {}
    for buffers in (2, 3):
        prog = _forced(model, (x, r), ("conv2d",), 16, True, buffers=buffers, shift=1)
        puts = [ins for sec in prog.lowered.image.sections for ins in sec.code
                if ins.spec.mnemonic == "put" and ins.as_dict().get("semr") in RELAY]
        assert bool(puts) == (buffers == 2)
        got, rep = prog.run(x, r)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        moved[buffers] = rep.dram_bytes
    assert moved[2] < moved[3], moved


def test_a_convolution_with_no_more_taps_than_phases_has_no_shifted_form() -> None:
    torch.manual_seed(0)
    model = Conv(8, 40, 2, 2, 0, 1, True, False).eval()  # 2 x 2, stride 2: each input pixel read once anyway
    x, r = torch.randn(1, 8, 12, 12), torch.randn(1, 40, 6, 6)
    with pytest.raises(dojoc.MappingError, match="tile shift=1.*more taps than stride phases"):
        _forced(model, (x, r), ("conv2d",), 8, True, shift=1)


def test_shifted_segments_are_the_output_pixels() -> None:
    geo = Im2col(View.dense(0, (2, 3, 6, 5), DType.F32), 3, 6, 5, 3, 6, 5, (1, 1), (1, 1), (1, 1))
    sh = Shifted.of(geo, 3, 2)
    # (consecutive images share a padding row: 6 + 1 rows of 5 + 2 columns each)
    assert sh is not None and (sh.hp, sh.wp, sh.halo) == (7, 7, 16) and sh.n == 7 * 7 + 5 * 7 + 5
    seen = [(img, first + i) for n0 in range(0, sh.n, 11)
            for img, first, count, _ in sh.segments(n0, min(11, sh.n - n0)) for i in range(count)]
    assert seen == [(img, q) for img in range(2) for q in range(30)]  # every output pixel once, in order
    # of stride 2: the phases' grid (ceil(8 / 2) x ceil(7 / 2)), taps at their phase and offset
    st = Shifted.of(Im2col(geo.x, 3, 6, 5, 3, 3, 3, (2, 2), (1, 1), (1, 1)), 3, 2)
    assert st is not None and (st.hp, st.wp, st.phases, st.taps) == (4, 4, 4, 9)
    assert st.phase == (0, 1, 0, 2, 3, 2, 0, 1, 0) and st.offsets == (0, 0, 1, 0, 0, 1, 4, 4, 5)
    assert st.halo == 5 and st.n == 16 + 2 * 4 + 3
    seen = [(img, first + i) for img, first, count, _ in st.segments(0, st.n) for i in range(count)]
    assert seen == [(img, q) for img in range(2) for q in range(9)]
    assert Shifted.of(Im2col(geo.x, 3, 6, 5, 2, 3, 2, (2, 2), (0, 0), (1, 1)), 2, 2) is None  # 4 taps, 4 phases


def test_im2col_runs_cover_the_block() -> None:
    geo = Im2col(View.dense(0, (2, 3, 7, 5), DType.F32), 3, 7, 5, 3, 7, 5, (1, 1), (1, 1), (1, 1))
    for n0, n in [(0, 70), (3, 29), (33, 4), (34, 36), (4, 1)]:
        runs = geo.runs(n0, n)
        assert sum(cnt for *_, cnt, _ in runs) == n
        offs = [off for *_, off in runs]
        assert offs == sorted(offs) and offs[0] == 0
        for img, q, cnt, _ in runs:
            assert 0 <= img < 2 and q + cnt <= 35
            assert q % 5 + cnt <= 5 or (q % 5 == 0 and cnt % 5 == 0)  # within a row, or whole rows


def _decided(channels: int, hw: int) -> OpMapping:
    """The cost model's decision for a 3 x 3 convolution of `channels` at hw x hw, batch 1, on d1 in bf16."""
    torch.manual_seed(0)
    model, x = nn.Conv2d(channels, channels, 3, padding=1).eval(), torch.randn(1, channels, hw, hw)
    prog = dojoc.compile(model, (x,), machine="d1", precision="bf16")
    assert prog.mapping is not None
    return prog.mapping.ops[0]


def test_resnet_stage_two_conv_takes_the_shifted_form() -> None:
    """A 3 x 3 convolution at 28 x 28 (ResNet-50's second stage, batch 1): its windows per tap would read
    the input 9 times through the one port; the cost model takes the shifted form."""
    om = _decided(128, 28)
    assert om.kernel == "summa" and om.tile_of("shift") == 1


def test_resnet_sized_conv_takes_summa_with_resident_weights() -> None:
    om = _decided(256, 14)
    assert om.kernel == "summa" and om.resident and len(om.cores) == 354
