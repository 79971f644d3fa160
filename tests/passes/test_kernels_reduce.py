"""Reduction, cumsum, softmax and normalisation kernels against eager PyTorch, on small meshes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dojoc.codegen.lower import lower_graph
from dojoc.codegen.result import LOAD_BARRIER, Lowered
from dojoc.frontend import from_module
from dojoc.ir import Interpreter
from isa import formats
from isa.dtypes import DType
from isa.presets import load_machine
from runtime_emu import run

F = torch.nn.functional


def compile_and_run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], precision: str,
                    machine: str = "mesh2x2") -> tuple[list[np.ndarray], list[torch.Tensor], Lowered]:
    graph = from_module(module.eval(), inputs)
    low = lower_graph(graph, load_machine(machine), precision)
    res = run(low.image, [x.numpy() for x in inputs])
    with torch.no_grad():
        want = module(*inputs)
    want = list(want) if isinstance(want, tuple) else [want]
    return [res.outputs[n] for n in low.output_names], want, low


def check_fp32(module: torch.nn.Module, *inputs: torch.Tensor, machine: str = "mesh2x2") -> Lowered:
    got, want, low = compile_and_run(module, inputs, "fp32", machine)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == tuple(w.shape), f"output {i}"
        np.testing.assert_allclose(g.astype(np.float64), w.numpy().astype(np.float64), rtol=1e-4, atol=1e-4,
                                   err_msg=f"output {i}")
    return low


def pcc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1]) if a.size > 1 else float(np.isclose(a, b, rtol=1e-2).all())


def bf16(a: np.ndarray) -> np.ndarray:
    """Round to BF16 (nearest even), as float64."""
    return formats.decode(formats.encode(np.asarray(a, np.float64), DType.BF16), DType.BF16).astype(np.float64)


def check_bf16(module: torch.nn.Module, *inputs: torch.Tensor, machine: str = "mesh4x4") -> None:
    """PCC >= 0.99 against eager FP32, and within one BF16 ulp of the exact result on the BF16-rounded
    inputs (the IR's float64 reference), rounded: only the format's rounding is left as error."""
    graph = from_module(module.eval(), inputs)
    low = lower_graph(graph, load_machine(machine), "bf16")
    got = run(low.image, [x.numpy() for x in inputs]).outputs
    exact = Interpreter(graph).run(*[bf16(x.numpy()).astype(np.float32) for x in inputs])
    with torch.no_grad():
        want = module(*inputs)
    want = list(want) if isinstance(want, tuple) else [want]
    for i, (name, w, e) in enumerate(zip(low.output_names, want, exact, strict=True)):
        g = got[name].astype(np.float64)
        assert g.shape == tuple(w.shape), f"output {i}"
        assert pcc(g, w.numpy()) >= 0.99, f"output {i}: pcc {pcc(g, w.numpy())}"
        e = bf16(e)
        ulp = np.spacing(np.abs(e).astype(np.float32)).astype(np.float64) * 2.0 ** 16  # FP32 -> BF16 spacing
        assert np.all(np.abs(g - e) <= ulp), f"output {i}: {np.max(np.abs(g - e) / ulp)} ulps"


class Reductions(torch.nn.Module):
    def forward(self, x):
        xp = x.permute(2, 0, 1)  # a non-contiguous input: the permutation folds into the DMA
        return (x.sum(1), x.sum(), x.mean((0, 2), keepdim=True), x.amax(2), x.amin(0), x.amax(),
                torch.var(x, 1), torch.var(x, (0, 2), correction=0, keepdim=True), xp.sum((0, 2)),
                xp.mean(1), xp.amin((1, 2), keepdim=True), torch.var(xp, 0), x.cumsum(0), x.cumsum(2), xp.cumsum(1))


class IntReductions(torch.nn.Module):
    def forward(self, k):
        return k.amax(1), k.amin(0, keepdim=True), k.amax(), k.sum(1), k.cumsum(0), k.t().cumsum(1)


class Norms(torch.nn.Module):
    def __init__(self, c: int = 40, ch: int = 3) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(c)
        self.ln_plain = torch.nn.LayerNorm(c, elementwise_affine=False)
        self.ln2 = torch.nn.LayerNorm((6, c), eps=1e-3)
        self.bn = torch.nn.BatchNorm2d(ch)
        self.bn1 = torch.nn.BatchNorm1d(c)
        for m in (self.ln, self.ln2, self.bn, self.bn1):
            for p in m.parameters():
                torch.nn.init.normal_(p)
        for b in (self.bn, self.bn1):
            b.running_mean.normal_()
            b.running_var.uniform_(0.5, 2.0)

    def forward(self, x, y):
        x2 = x.reshape(-1, x.shape[-1])
        return (torch.softmax(x, -1), torch.softmax(x, 0), torch.log_softmax(x, 1), torch.log_softmax(x, -1),
                self.ln(x), self.ln_plain(x.transpose(0, 1)), self.ln2(x), self.bn(y), self.bn(y.transpose(2, 3)),
                self.bn1(x2))


class RuntimeNormParams(torch.nn.Module):
    """Weights that are inputs, not parameters: converted to FP32 at run time instead of folded."""

    def forward(self, x, lw, lb, bw, bb, mean, var):
        return F.layer_norm(x, (x.shape[-1],), lw, lb), F.batch_norm(x, mean, var, bw, bb, False, 0.1, 1e-3)


def test_reductions_fp32() -> None:
    torch.manual_seed(0)
    check_fp32(Reductions(), torch.randn(6, 7, 5) * 3 + 1)


def test_integer_reductions_and_cumsum() -> None:
    torch.manual_seed(1)
    k = torch.randint(-1000, 1000, (9, 11), dtype=torch.int32)
    got, want, _ = compile_and_run(IntReductions(), (k,), "fp32")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())


def test_norms_fp32() -> None:
    torch.manual_seed(2)
    check_fp32(Norms(), torch.randn(4, 6, 40) * 2 + 0.5, torch.randn(2, 3, 5, 7))


def test_runtime_norm_params_fp32() -> None:
    torch.manual_seed(3)
    for shape in ((5, 24, 3), (5, 24)):  # batch norm over (n, c) rows, and over channel columns
        c, last = shape[1], shape[-1]
        check_fp32(RuntimeNormParams(), torch.randn(*shape), torch.randn(last), torch.randn(last), torch.randn(c),
                   torch.randn(c), torch.randn(c), torch.rand(c) + 0.5)


class LongRows(torch.nn.Module):
    """Rows longer than a tile (4,095 columns): partial results combined over column chunks."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(n)
        self.ln2 = torch.nn.LayerNorm((50, n // 50))
        self.bn1 = torch.nn.BatchNorm1d(n)
        for m in (self.ln, self.ln2, self.bn1):
            for p in m.parameters():
                torch.nn.init.normal_(p)

    def forward(self, x):
        xt = x.t()
        return (x.sum(1), x.mean(1, keepdim=True), x.amax(1), x.amin(), torch.var(x, 1), x.cumsum(1),
                torch.softmax(x, 1), torch.log_softmax(xt, 0), self.ln(x), self.ln2(x.reshape(3, 50, -1)),
                self.bn1(x), xt.sum(0))


def test_long_rows_fp32() -> None:
    torch.manual_seed(4)
    check_fp32(LongRows(9000), torch.randn(3, 9000) * 2 + 3)


def test_bf16_pcc() -> None:
    torch.manual_seed(5)
    check_bf16(Reductions(), torch.randn(6, 7, 5) * 3 + 1)
    check_bf16(Norms(), torch.randn(4, 6, 40) * 2 + 0.5, torch.randn(2, 3, 5, 7))
    check_bf16(LongRows(9000), torch.randn(3, 9000) * 2 + 3)


def test_bf16_max_and_min_are_exact() -> None:
    """max and min run on the BF16 tiles themselves: the result is eager's, rounded once."""
    torch.manual_seed(6)
    x = torch.randn(16, 300)

    class M(torch.nn.Module):
        def forward(self, x):
            return x.amax(1), x.amin(0)

    got, want, _ = compile_and_run(M(), (x,), "bf16")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.astype(np.float32), w.to(torch.bfloat16).float().numpy())


def test_masked_softmax_over_long_rows() -> None:
    """A chunk that is all -inf (a mask) must not poison the online max/sum of a long row."""
    x = torch.randn(4, 5000)
    x[:, :4500] = float("-inf")
    x[1, :] = float("-inf")  # a fully masked row is NaN, as in eager

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, -1), torch.log_softmax(x, -1)

    got, want, _ = compile_and_run(M(), (x,), "fp32")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)


def test_full_reduction_splits_columns_over_cores() -> None:
    """One long row: cores reduce runs of its column chunks, then one pass combines their partials."""
    torch.manual_seed(8)

    class Full(torch.nn.Module):
        def forward(self, x, k):
            return x.sum(), x.mean(), x.amax(), x.amin(), k.sum(), k.amax()

    x, k = torch.randn(2, 150000) + 0.1, torch.randint(-50, 50, (300, 400), dtype=torch.int32)
    low = check_fp32(Full(), x, k, machine="mesh4x4")
    assert low.cores_used > 4
    check_bf16(Full(), x, k.float())


def test_big_ops_spread_over_cores_and_tiny_ones_do_not() -> None:
    class Sm(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, -1)

    m = load_machine("mesh4x4")
    big = lower_graph(from_module(Sm().eval(), (torch.randn(512, 1024),)), m, "bf16")
    tiny = lower_graph(from_module(Sm().eval(), (torch.randn(4, 8),)), m, "bf16")
    assert big.cores_used == 16 and tiny.cores_used == 1


def test_layer_norm_weights_are_resident() -> None:
    """Constant layer-norm weights load once, before the load barrier, not in every call."""

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = torch.nn.LayerNorm(64)
            torch.nn.init.normal_(self.ln.weight)  # an all-ones weight (the default) would be skipped

        def forward(self, x):
            return self.ln(x)

    low = lower_graph(from_module(M().eval(), (torch.randn(8, 64),)), load_machine("mesh2x2"), "fp32")
    code = next(s for s in low.image.sections if 0 in s.cores).code
    names = [i.spec.mnemonic for i in code]
    load_end = next(k for k, i in enumerate(code) if i.spec.mnemonic == "barrier"
                    and i.as_dict()["id"] == LOAD_BARRIER)
    assert "dmald" in names[:load_end]


@pytest.mark.parametrize("shape,dims", [((2, 3, 4, 5), (1, 3)), ((70, 3), (0,)), ((5,), (0,))])
def test_reduce_shapes(shape: tuple[int, ...], dims: tuple[int, ...]) -> None:
    torch.manual_seed(7)

    class M(torch.nn.Module):
        def forward(self, x):
            return x.sum(dims), x.mean(dims, keepdim=True), x.amax(dims), torch.var(x, dims), x.cumsum(dims[0])

    check_fp32(M(), torch.randn(*shape), machine="mesh4x4")


class Edges(torch.nn.Module):
    def forward(self, x, s):
        xe = x[:, None, :].expand(4, 3, 6)  # stride-0 input dims
        return (s.sum(), s.mean(), xe.sum(1), torch.softmax(xe, 2), xe.cumsum(1), torch.softmax(x[:, :1], 1),
                x.amax((0, 1), keepdim=True), F.layer_norm(xe, (3, 6)), x[::2, 1::3].var(0))


def test_edge_cases() -> None:
    """Rank-0 inputs, broadcast (stride-0) and sliced inputs, a softmax over one element, empty tensors."""
    torch.manual_seed(9)
    check_fp32(Edges(), torch.randn(4, 6), torch.randn(()))

    class Empty(torch.nn.Module):
        def forward(self, x):
            return x.sum(1), x.cumsum(0), torch.softmax(x, 0), x.mean(0)

    got, want, _ = compile_and_run(Empty(), (torch.randn(3, 0),), "fp32")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())
