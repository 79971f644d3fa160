"""fuse_pool: a max pool's rows fold into the convolution that feeds it (epilogue step `row_max`), the pool
left takes the columns; the tiled convolution computes a band of its rows per block of pooled rows and
writes only the pooled ones. The rewritten graph is checked against the original by the IR's interpreter,
the program against eager PyTorch, and the pools left alone say why."""

from __future__ import annotations

import pytest
import torch
from graph_checks import close_to_eager, same_numbers
from torch import nn

import dojoc
from dojoc.errors import ShapeError
from dojoc.frontend import from_module
from dojoc.ir import Op, verify
from dojoc.passes.fold_bn import fold_batch_norm
from dojoc.passes.fuse import fuse
from dojoc.passes.fuse_pool import fuse_pool


class ConvPool(nn.Module):
    """ResNet's stem in small: a convolution, ReLU, then a max pool."""

    def __init__(self, cin: int = 3, k: int = 7, stride: int = 2, pad: int = 3, pool: tuple[int, ...] = (3, 2, 1),
                 groups: int = 1, indices: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 16, k, stride, pad, groups=groups)
        self.pool = nn.MaxPool2d(*pool, return_indices=indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(torch.relu(self.conv(x)))
        return out[0] + out[1].float() if isinstance(out, tuple) else out


def _graph(model: nn.Module, x: torch.Tensor):  # type: ignore[no-untyped-def]
    return from_module(model.eval(), (x,))


@pytest.mark.parametrize("pool, shape", [((3, 2, 1), (2, 3, 20, 22)), (((3, 1), (2, 1), (1, 0)), (1, 3, 19, 16)),
                                         ((2, 2, 0), (1, 3, 16, 12))], ids=["3x3", "rows-only", "2x2"])
def test_the_pool_rows_fold_into_the_convolution_and_interpret_the_same(pool: tuple[object, ...],
                                                                         shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    g = fuse(fold_batch_norm(_graph(ConvPool(pool=pool), x)))  # type: ignore[arg-type]
    out = fuse_pool(g)
    conv = next(n for n in out.nodes if n.op is Op.CONV2D)
    k, s, p = (v if isinstance(v, int) else v[0] for v in pool)
    assert conv.attrs["epilogue"][-1] == ("row_max", k, s, p)
    assert conv.attrs["fused"][-1].endswith("_rows")
    pools = [n for n in out.nodes if n.op is Op.MAX_POOL2D]
    if pool[0] == (3, 1):  # a pool of rows alone leaves no pool
        assert not pools
    else:
        assert [tuple(n.attrs["kernel"]) for n in pools] == [(1, k)]
    same_numbers(g, out, x.numpy())


@pytest.mark.parametrize("model, why", [
    (ConvPool(indices=True), "its indices are read"),
    (ConvPool(pool=(5, 2, 2)), "its row stride is not above its row padding"),
    (ConvPool(cin=4, groups=2), "has groups"),
    (ConvPool(pool=(3, 2, 1, 2)), "dilated"),
], ids=["indices", "stride-padding", "groups", "dilation"])
def test_a_pool_left_alone_says_why(model: nn.Module, why: str) -> None:
    x = torch.randn(1, model.conv.in_channels, 20, 20)  # type: ignore[union-attr]
    out = fuse_pool(fuse(fold_batch_norm(_graph(model, x))))
    pool = next(n for n in out.nodes if n.op is Op.MAX_POOL2D)
    assert why in out.fusion_notes[pool.name]
    assert not any(s[0] == "row_max" for n in out.nodes for s in n.attrs.get("epilogue", ()))


def test_row_max_must_be_the_last_step() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 20, 22)
    g = fuse_pool(fuse(fold_batch_norm(_graph(ConvPool(), x))))
    conv = next(n for n in g.nodes if n.op is Op.CONV2D)
    bad = conv.attrs.replace(epilogue=(conv.attrs["epilogue"][-1], ("act", "relu")))
    g.nodes = [n if n is not conv else type(n)(n.name, n.op, n.inputs, bad, n.outputs, n.source) for n in g.nodes]
    with pytest.raises(ShapeError, match="row_max step must be an epilogue's last"):
        verify(g)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("args, shape", [((), (2, 3, 40, 40)), ((8, 3, 1, 1, (3, 2, 1)), (1, 8, 17, 19)),
                                         ((8, 1, 1, 0, (2, 2, 0)), (1, 8, 16, 12))],
                         ids=["stem", "3x3-odd", "2x2"])
def test_a_fused_pool_matches_eager(args: tuple[object, ...], shape: tuple[int, ...], precision: str) -> None:
    torch.manual_seed(0)
    model, x = ConvPool(*args).eval(), torch.randn(*shape)  # type: ignore[arg-type]
    prog = dojoc.compile(model, (x,), machine="mesh4x4", precision=precision)
    assert prog.mapping is not None
    conv = prog.mapping.by_key()["convolution"]
    assert conv.kernel == "conv2d"
    assert any(o.fused_into == "convolution" and o.op.endswith("_rows") for o in prog.mapping.ops)
    with torch.no_grad():
        close_to_eager(prog(x), model(x), precision)


def test_a_given_band_of_pooled_rows_changes_the_program() -> None:
    """The tile's rows count pooled rows; more of them, fewer items, each a taller band of the convolution."""
    torch.manual_seed(0)
    model, x = ConvPool().eval(), torch.randn(1, 3, 40, 40)
    prog = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32")
    assert prog.mapping is not None
    conv = prog.mapping.by_key()["convolution"]
    rows = 5  # of the 10 pooled rows
    tile = {**dict(conv.tile), "rows": rows, "cols": 20, "out_channels": 16, "taps": 49, "channels": 3}
    tile.pop("window", None)
    mapping = {"ops": [{"op": "convolution", "kernel": "conv2d", "cores": "0-1", "resident": conv.resident,
                        "split": {"groups": 1, "out_channels": 1, "batch": 1, "rows": 2, "cols": 1}, "tile": tile}]}
    prog2 = dojoc.compile(model, (x,), machine="mesh4x4", precision="fp32", mapping=mapping)
    assert prog2.mapping is not None
    assert dict(prog2.mapping.by_key()["convolution"].tile)["rows"] == rows
    with torch.no_grad():
        torch.testing.assert_close(prog2(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_pooling_reader_is_no_kept_b_reader() -> None:
    """A SUMMA convolution keeps its output in SRAM for a 1 x 1 reader that SUMMA takes; one that pools its
    rows stays on the tiled kernel, so the producer does not offer to keep for it (kept only, the reader
    would have had to take it from SRAM)."""
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.pool = nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 32, 1), nn.MaxPool2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(torch.relu(self.b(torch.relu(self.a(x)))))

    torch.manual_seed(0)
    model, x = Pair().eval(), torch.randn(4, 16, 28, 28)
    prog = dojoc.compile(model, (x,), machine="mesh4x4", precision="bf16")
    assert prog.mapping is not None
    ops = prog.mapping.by_key()
    assert ops["convolution"].kernel == "summa" and ops["convolution"].tile_of("keep") is None
    assert ops["convolution_1"].kernel == "conv2d"
    with torch.no_grad():
        close_to_eager(prog(x), model(x), "bf16")
