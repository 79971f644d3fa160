"""The SUMMA matmul (kernels/summa.py): panels multicast along mesh rows and columns, against eager, with
disabled cores, ragged blocks and chunks, and the matmul epilogue; chosen by the cost model on big GEMMs."""

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


def _summa(fn: Any, args: tuple[torch.Tensor, ...], machine: Machine, precision: str, kc: int,
           buffers: int = 2, waves: int = 1, resident: bool = False) -> dojoc.Program:
    """Compile with the matmul forced onto the summa kernel by a mapping (its weight resident or not)."""
    first = dojoc.compile(fn, args, machine=machine, precision=precision)
    assert first.mapping is not None
    op = next(o for o in first.mapping.ops if o.kernel in ("matmul", "summa"))
    mapping = {"ops": [{"op": op.op, "kernel": "summa", "cores": format_cores(range(machine.num_cores)),
                        "split": {"rows": machine.mesh[0], "cols": machine.mesh[1]},
                        "tile": {"k": kc, "buffers": buffers, "waves": waves}, "resident": resident}]}
    prog = dojoc.compile(fn, args, machine=machine, precision=precision, mapping=mapping)
    assert prog.mapping is not None and any(o.kernel == "summa" for o in prog.mapping.ops)
    return prog


@pytest.mark.parametrize("machine", [MESH, HOLED], ids=["mesh4x4", "holed"])
@pytest.mark.parametrize("m, k, n, kc", [(64, 96, 80, 32), (37, 100, 45, 24), (40, 8, 33, 8)])
@pytest.mark.parametrize("buffers", [2, 3])
def test_summa_matches_eager_fp32(machine: Machine, m: int, k: int, n: int, kc: int, buffers: int) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(m, k), torch.randn(k, n)
    prog = _summa(lambda x, y: x @ y, (a, b), machine, "fp32", kc, buffers)
    torch.testing.assert_close(prog(a, b), a @ b, rtol=1e-4, atol=1e-4)
    assert prog.mapping is not None and prog.mapping.ops[0].tile_of("buffers") == buffers


def test_buffers_and_waves_are_checked() -> None:
    a, b = torch.randn(16, 24), torch.randn(24, 16)
    prog = _summa(lambda x, y: x @ y, (a, b), load_machine("mesh2x2"), "fp32", 8, 3)  # lines of 2 cores
    torch.testing.assert_close(prog(a, b), a @ b, rtol=1e-4, atol=1e-4)
    with pytest.raises(MappingError, match="tile buffers=4: give 2 or 3 chunk buffers"):
        _summa(lambda x, y: x @ y, (a, b), load_machine("mesh2x2"), "fp32", 8, 4)
    with pytest.raises(MappingError, match="tile waves=2: give 1"):  # two inputs: no resident weight
        _summa(lambda x, y: x @ y, (a, b), load_machine("mesh2x2"), "fp32", 8, 2, waves=2)


class Linear(nn.Module):
    """A linear layer with bias, gelu and a residual: the summa epilogue."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 48)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(self.fc(x) + r)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_summa_epilogue(precision: str) -> None:
    torch.manual_seed(0)
    model, x, r = Linear().eval(), torch.randn(2, 40, 48), torch.randn(2, 40, 48)
    prog = _summa(model, (x, r), HOLED, precision, 16)
    want = model(x, r).detach()
    got = prog(x, r)
    if precision == "fp32":
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    else:
        assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.99


def test_big_gemm_takes_summa_and_a_bad_region_is_named() -> None:
    a, b = torch.randn(2048, 1024), torch.randn(1024, 2048)
    prog = dojoc.compile(lambda x, y: x @ y, (a, b), machine="d1")
    assert prog.mapping is not None
    om = prog.mapping.ops[0]
    assert om.kernel == "summa" and len(om.cores) == 354 and dict(om.split) == {"rows": 18, "cols": 20}
    bad = {"ops": [{"op": om.op, "kernel": "summa", "cores": "0-99", "split": {"rows": 18, "cols": 20},
                    "tile": {"k": 128}}]}
    with pytest.raises(MappingError, match=f"op {om.op}: the summa kernel runs on every enabled core of a "
                                           "rectangle"):
        dojoc.compile(lambda x, y: x @ y, (a, b), machine="d1", mapping=bad)


def test_a_given_rectangle_of_the_die_runs_summa_there() -> None:
    """d1's first five mesh rows (99 enabled cores: (2, 3) is disabled), given as the region: SUMMA runs on
    them as a 5 x 20 grid, its multicasts kept to that rectangle, and the result is right."""
    torch.manual_seed(0)
    a, b = torch.randn(96, 256), torch.randn(256, 160)
    op = dojoc.compile(lambda x, y: x @ y, (a, b), machine="d1", precision="fp32").mapping.ops[0].op  # type: ignore[union-attr]
    part = {"ops": [{"op": op, "kernel": "summa", "cores": "0-98", "split": {"rows": 5, "cols": 20},
                     "tile": {"k": 64}}]}
    prog = dojoc.compile(lambda x, y: x @ y, (a, b), machine="d1", precision="fp32", mapping=part)
    assert prog.mapping is not None
    om = prog.mapping.ops[0]
    assert om.kernel == "summa" and len(om.cores) == 99 and dict(om.split) == {"rows": 5, "cols": 20}
    torch.testing.assert_close(prog(a, b), a @ b, rtol=1e-4, atol=1e-4)
    used = {c for s in prog.image.sections for c in s.cores}
    assert used <= set(range(99))


@pytest.mark.parametrize("sram", [1_310_720, 163_840])
def test_a_partly_resident_weight_is_costed_as_streamed(sram: int) -> None:
    """A 2 MiB weight on 16 cores: with 1.25 MiB of SRAM every chunk stays resident; with 160 KiB a quarter
    of them find no room and are streamed from DRAM in every call (summa_emit.kept says which), and the
    prediction counts them: it tracks the emulator in both cases."""
    torch.manual_seed(0)
    lin, x = nn.Linear(1024, 1024, bias=False).eval(), torch.randn(16, 1024)
    machine = load_machine("mesh4x4", [f"sram_bytes={sram}"])
    mapping = {"ops": [{"op": "linear", "kernel": "summa", "cores": format_cores(range(16)),
                        "split": {"rows": 4, "cols": 4}, "tile": {"k": 64, "buffers": 2, "waves": 1},
                        "resident": True}]}
    prog = dojoc.compile(lin, (x,), machine=machine, precision="bf16", mapping=mapping)
    out, report = prog.run(x)
    assert torch.corrcoef(torch.stack([out.flatten().float(), lin(x).flatten()]))[0, 1] > 0.999
    (op,) = [r for r in report.ops if r["kernel"] == "summa"]
    assert abs(op["predicted_cycles"] - op["emulated_cycles"]) <= 0.1 * op["emulated_cycles"]
    streamed = report.dram_bytes - 2 * (16 * 1024 * 2)  # beyond reading x and writing the output
    assert (streamed > 0) == (sram < 1_310_720)


class PostNorm(nn.Module):
    """A linear layer, a residual and a layer norm (BERT's output sublayer): the epilogue normalises rows
    whose columns lie on every core of a mesh row, and on the slices beside a disabled core."""

    def __init__(self, k: int = 48, n: int = 40) -> None:
        super().__init__()
        self.fc, self.ln = nn.Linear(k, n), nn.LayerNorm(n)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-1.0, 1.0)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return self.ln(self.fc(x) + r)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("waves", [1, 2])
def test_summa_layer_norm_epilogue(precision: str, waves: int) -> None:
    torch.manual_seed(0)
    model, x, r = PostNorm().eval(), torch.randn(2, 40, 48), torch.randn(2, 40, 40)
    prog = _summa(model, (x, r), HOLED, precision, 16, waves=waves, resident=True)
    assert prog.mapping is not None
    om = next(o for o in prog.mapping.ops if o.kernel == "summa")
    assert om.tile_of("waves") == waves
    got, want = prog(x, r), model(x, r).detach()
    if precision == "fp32":
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    else:
        assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.99


def test_the_tiled_kernel_normalises_whole_rows() -> None:
    torch.manual_seed(0)
    model, x, r = PostNorm(32, 72).eval(), torch.randn(24, 32), torch.randn(24, 72)
    first = dojoc.compile(model, (x, r), machine=MESH, precision="fp32")
    assert first.mapping is not None
    op = next(o for o in first.mapping.ops if o.kernel in ("matmul", "summa")).op
    mapping = {"ops": [{"op": op, "kernel": "matmul", "cores": "0-2", "split": {"batch": 1, "rows": 3, "cols": 1},
                        "tile": {"m": 8, "n": 72, "k": 32}}]}
    prog = dojoc.compile(model, (x, r), machine=MESH, precision="fp32", mapping=mapping)
    assert prog.mapping is not None and prog.mapping.ops[0].kernel == "matmul"
    torch.testing.assert_close(prog(x, r), model(x, r).detach(), rtol=1e-4, atol=1e-4)


def _two_linears(rotate: tuple[int | None, int | None]) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)).eval()
    ops = []
    for name, rot in zip(("linear_matmul", "linear_1_matmul"), rotate, strict=True):
        # (the first one's output goes through DRAM: held, it would fix the second's chunks to its blocks)
        tile: dict[str, int] = {"k": 32, "buffers": 2, "waves": 1} | ({"hold": 0} if name == "linear_matmul" else {})
        if rot is not None:
            tile["rotate"] = rot
        ops.append({"op": name, "kernel": "summa", "cores": format_cores(range(16)), "split": {"rows": 4, "cols": 4},
                    "tile": tile, "resident": True})
    return model, torch.randn(16, 64), {"ops": ops}


def test_resident_chunks_rotate_onto_the_emptiest_cores() -> None:
    """Each column of 4 cores keeps 2 chunks of each weight: the first linear's on rows c and c + 1 of
    column c, and by default the second's on the two cores the first left empty (rotate 2), so a stack of
    layers fills every core's resident SRAM evenly; any rotation given runs and matches eager."""
    model, x, mapping = _two_linears((None, None))
    prog = dojoc.compile(model, (x,), machine=MESH, precision="fp32", mapping=mapping)
    assert prog.mapping is not None
    assert [o.tile_of("rotate") for o in prog.mapping.ops if o.kernel == "summa"] == [0, 2]
    torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)
    model, x, mapping = _two_linears((3, 1))
    prog = dojoc.compile(model, (x,), machine=MESH, precision="fp32", mapping=mapping)
    assert prog.mapping is not None
    assert [o.tile_of("rotate") for o in prog.mapping.ops if o.kernel == "summa"] == [3, 1]
    torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_bad_rotation_is_named() -> None:
    model, x, mapping = _two_linears((4, None))
    with pytest.raises(MappingError, match=r"op linear_matmul: tile rotate=4: .* give 0 to 3"):
        dojoc.compile(model, (x,), machine=MESH, precision="fp32", mapping=mapping)
    mapping["ops"][0]["tile"]["rotate"], mapping["ops"][0]["resident"] = 1, False
    with pytest.raises(MappingError, match="op linear_matmul: tile rotate=1 places a resident weight's chunks, but "
                                           "resident is false"):
        dojoc.compile(model, (x,), machine=MESH, precision="fp32", mapping=mapping)


def test_blocks_wider_than_a_tile_operand_do_not_take_summa() -> None:
    """A convolution over 8 x 48 x 48 pixels on mesh4x4 gives each of its 4 columns 4,608 of them, more
    than a tile operand's 4,095 columns: summa is not offered (it emitted an instruction the encoder
    refused), the tiled kernel runs it, and a mapping that asks for summa there is one clear error."""
    torch.manual_seed(0)
    conv, x = nn.Conv2d(8, 24, 1).eval(), torch.randn(8, 8, 48, 48)
    prog = dojoc.compile(conv, (x,), machine=MESH, precision="fp32")
    assert prog.mapping is not None and all(o.kernel != "summa" for o in prog.mapping.ops)
    torch.testing.assert_close(prog(x), conv(x), rtol=1e-4, atol=1e-4)
    mapping = {"ops": [{"op": "convolution", "kernel": "summa", "cores": format_cores(range(16)),
                        "split": {"rows": 4, "cols": 4}, "tile": {"k": 8, "buffers": 2, "waves": 1}, "resident": True}]}
    with pytest.raises(MappingError, match="op convolution: the mapping says kernel 'summa', but this op runs the "
                                           "'conv2d' kernel"):
        dojoc.compile(conv, (x,), machine=MESH, precision="fp32", mapping=mapping)
