"""The tiled convolution's window steps (tile field `window`): a step loads the input rows that all its
taps read once, padded with zeros outside the image, and multiplies each tap's window out of them."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import dojoc
from dojoc.errors import MappingError


def _given(model: torch.nn.Module, x: torch.Tensor, precision: str, tile: dict[str, int],
           resident: bool = True) -> dojoc.Program:
    """`model` compiled on mesh2x2 with its convolution given the conv2d kernel and `tile`."""
    base = dojoc.compile(model, (x,), machine="mesh2x2", precision=precision)
    assert base.mapping is not None
    om = next(o for o in base.mapping.ops if o.kernel in ("conv2d", "summa"))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    oh, ow = model(x).shape[2:]
    split = {"groups": 1, "out_channels": math.ceil(conv.out_channels / tile["out_channels"]), "batch": x.shape[0],
             "rows": math.ceil(oh / tile["rows"]), "cols": math.ceil(ow / tile["cols"])}
    items = math.prod(split.values())
    given = {"ops": [{"op": om.op, "kernel": "conv2d", "cores": f"0-{min(items, 4) - 1}", "split": split,
                      "tile": tile, "resident": resident}]}
    return dojoc.compile(model, (x,), machine="mesh2x2", precision=precision, mapping=given)


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("conv,shape,tile", [
    # 3 output rows a step (the last item has 1), two chunks of channels, padding on every side
    (lambda: torch.nn.Conv2d(8, 16, 3, padding=1), (1, 8, 10, 12),
     {"out_channels": 8, "rows": 3, "cols": 12, "taps": 9, "channels": 4, "window": 1}),
    # a row stride of 2 (at most the kernel's 3 rows), a 3 x 5 kernel, columns cut in two
    (lambda: torch.nn.Conv2d(8, 8, (3, 5), stride=(2, 1), padding=(1, 2)), (2, 8, 9, 10),
     {"out_channels": 8, "rows": 2, "cols": 5, "taps": 15, "channels": 8, "window": 1}),
])
def test_window_steps_match_eager(conv: Callable[[], torch.nn.Module], shape: tuple[int, ...],
                                  tile: dict[str, int], resident: bool) -> None:
    torch.manual_seed(0)
    model, x = torch.nn.Sequential(conv(), torch.nn.ReLU()).eval(), torch.randn(*shape)
    prog = _given(model, x, "fp32", tile, resident)
    assert prog.mapping is not None and prog.mapping.ops[0].tile_of("window") == 1
    torch.testing.assert_close(prog(x), model(x), rtol=1e-4, atol=1e-4)


def test_window_steps_convert_cfp8_tiles() -> None:
    torch.manual_seed(0)
    model, x = torch.nn.Conv2d(8, 16, 3, padding=1).eval(), torch.randn(1, 8, 10, 12)
    prog = _given(model, x, "cfp8", {"out_channels": 16, "rows": 2, "cols": 12, "taps": 9, "channels": 8,
                                     "window": 1})
    got, want = prog(x).flatten(), model(x).detach().flatten()
    assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.95


def test_the_cost_model_takes_window_steps_where_taps_reread_the_input() -> None:
    """A 3x3 conv over 8 images of 56 x 56 on d1: one load of each step's input rows instead of one per tap
    reads the input about 2x instead of 9x; the search takes it."""
    torch.manual_seed(0)
    model, x = torch.nn.Conv2d(64, 64, 3, padding=1).eval(), torch.randn(8, 64, 56, 56)
    prog = dojoc.compile(model, (x,), machine="d1", precision="bf16")
    assert prog.mapping is not None
    assert prog.mapping.ops[0].kernel == "conv2d" and prog.mapping.ops[0].tile_of("window") == 1


@pytest.mark.parametrize("window, channels", [(1, 8), (2, 4)], ids=["column stride 2", "half the channels"])
def test_a_step_that_its_window_cannot_take_is_refused(window: int, channels: int) -> None:
    """A window step needs a column stride of 1; a gathered step, every tap and channel."""
    torch.manual_seed(0)
    model, x = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1).eval(), torch.randn(1, 8, 10, 10)
    with pytest.raises(MappingError, match=f"window={window}"):
        _given(model, x, "fp32", {"out_channels": 8, "rows": 1, "cols": 5, "taps": 9, "channels": channels,
                                  "window": window})


# -- gathered steps (window = 2, gather.py) ------------------------------------------------------------------

@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("conv,shape,tile", [
    # ResNet's stem in small: 7 x 7, stride 2, padding 3, three channels; two column phases
    (lambda: torch.nn.Conv2d(3, 8, 7, stride=2, padding=3), (1, 3, 20, 18),
     {"out_channels": 8, "rows": 2, "cols": 5, "taps": 49, "channels": 3, "window": 2}),
    # stride 3 by 2, dilation 2 by 1, no padding: three row phases' worth of rows, an odd tap reach
    (lambda: torch.nn.Conv2d(4, 6, (3, 4), stride=(3, 2), dilation=(2, 1)), (2, 4, 17, 15),
     {"out_channels": 6, "rows": 2, "cols": 6, "taps": 12, "channels": 4, "window": 2}),
    # stride 1: one phase
    (lambda: torch.nn.Conv2d(5, 8, 3, padding=1), (1, 5, 9, 11),
     {"out_channels": 8, "rows": 3, "cols": 11, "taps": 9, "channels": 5, "window": 2}),
])
def test_gathered_steps_match_eager(conv: Callable[[], torch.nn.Module], shape: tuple[int, ...],
                                    tile: dict[str, int], resident: bool, precision: str) -> None:
    """A gathered step stages its output rows' input rows once (in column phases) and copies every tap's
    window into one im2col tile for one mma."""
    torch.manual_seed(0)
    model, x = torch.nn.Sequential(conv(), torch.nn.ReLU()).eval(), torch.randn(*shape)
    prog = _given(model, x, precision, tile, resident)
    assert prog.mapping is not None and prog.mapping.ops[0].tile_of("window") == 2
    got, want = prog(x), model(x)
    if precision == "fp32":
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    else:
        assert torch.corrcoef(torch.stack([got.flatten().float(), want.detach().flatten()]))[0, 1] > 0.999


def test_the_resnet_stem_takes_gathered_steps_and_reads_its_input_less() -> None:
    """ResNet-50's 7 x 7 / 2 stem on d1: a DMA per tap would read the 0.3 MB input 49 times; gathered steps
    read each item's input rows once, and the search takes them."""
    torch.manual_seed(0)
    model, x = torch.nn.Conv2d(3, 64, 7, stride=2, padding=3).eval(), torch.randn(1, 3, 224, 224)
    prog = dojoc.compile(model, (x,), machine="d1", precision="bf16")
    assert prog.mapping is not None
    om = prog.mapping.ops[0]
    assert om.kernel == "conv2d" and om.tile_of("window") == 2
    _, report = prog.run(x)
    # 1.6 MB of output, and the input about 2.5 times (rows shared by two items' halos): 2.4 MB; a DMA per
    # tap moved 3.7 MB
    assert report.dram_bytes < 2_800_000, report.dram_bytes
