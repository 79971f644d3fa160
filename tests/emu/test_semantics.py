"""Semantics of every handler family against numpy references.

Each test assembles a one-core program that DMAs its inputs from DRAM into SRAM, runs the instructions
under test and DMAs the results back (`run_tile`), so the data path is the one real programs use. BF16
references round the float64 result the documented way: float64 -> float32 (RNE) -> bfloat16 (RNE).
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from scipy import special

from isa import formats
from isa.asm import assemble
from isa.dtypes import DType
from isa.table import Round
from runtime_emu import Emulator
from runtime_emu.semantics.matmul import _exact_whole, exact_matmul, low_bit_bound, low_bit_exponent

BF16 = np.dtype(ml_dtypes.bfloat16)

Spec = tuple[np.ndarray, DType]


def run_tile(body: str, inputs: dict[str, Spec], outputs: dict[str, tuple[tuple[int, ...], DType]],
             scratch: dict[str, int] | None = None, machine: str = "mesh1x1", **kw: Any) -> dict[str, Any]:
    """Run `body` on core 0 with every input DMA'd into SRAM and every output DMA'd back.

    Each tensor name (inputs, outputs, `scratch` name -> bytes) is a `{name}` placeholder in `body` for
    the register holding its SRAM address; tensors are contiguous, row-major. Returns decoded outputs."""
    lines = [f".machine {machine}"]
    regs: dict[str, str] = {}
    sram, dram, reg = 0x100, 0, 1
    load, store = [], []
    tensors = [(n, a.shape, dt, "input") for n, (a, dt) in inputs.items()]
    tensors += [(n, s, dt, "output") for n, (s, dt) in outputs.items()]
    for name, shape, dt, kind in tensors:
        nbytes = int(np.prod(shape)) * dt.itemsize
        lines.append(f".tensor {name} {kind} {dram:#x} {dt.asm} [{', '.join(map(str, shape))}]")
        regs[name] = f"r{reg}"
        load.append(f"li r{reg}, {sram:#x}")
        xfer = f"li r30, {dram:#x}\ndmadim 0, {nbytes}, sstride=1, dstride=1\n"
        if kind == "input":  # 4 instructions per input, 1 per output before the body
            load.append(xfer + f"dmald r{reg}, r30, esize=1, ndim=1, sem=0, dt=u8")
        else:
            store.append(xfer + f"dmast r30, r{reg}, esize=1, ndim=1, sem=1")
        sram += -(-nbytes // 64) * 64 + 64
        dram += -(-nbytes // 64) * 64
        reg += 1
    for name, nbytes in (scratch or {}).items():
        regs[name] = f"r{reg}"
        load.append(f"li r{reg}, {sram:#x}")
        sram += -(-nbytes // 64) * 64
        reg += 1
    lines.append(".section main cores=0")
    lines += load
    lines.append(f"wait 0, {len(inputs)}")
    lines.append(body.format(**regs))
    lines += store
    lines.append(f"wait 1, {len(outputs)}")
    lines.append("halt")
    image = assemble("\n".join(lines) + "\n")
    emu = Emulator(image, **kw)
    emu.set_inputs({n: a for n, (a, _) in inputs.items()})
    res = emu.run()
    return dict(res.outputs)


def rnd(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def to_bf16(x64: np.ndarray) -> np.ndarray:
    """The documented BF16 rounding of float64 values, as float32."""
    return np.asarray(x64).astype(np.float32).astype(BF16).astype(np.float32)


def tile_args(rows: int, cols: int, dt: DType, out: DType | None = None) -> str:
    w = dt.itemsize
    wo = (out or dt).itemsize
    return f"rows={rows}, cols={cols}, sd={cols * wo}, sa={cols * w}"


# -- elementwise ----------------------------------------------------------------------------------

BINARY_REF = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
              "min": np.minimum, "pow": np.power}


@pytest.mark.parametrize("dt", [DType.BF16, DType.F32])
@pytest.mark.parametrize("op", sorted(BINARY_REF))
def test_vbinary_float(op: str, dt: DType) -> None:
    a = rnd((8, 24), 1)
    b = rnd((8, 24), 2)
    if op == "pow":
        a = np.abs(a) + 0.5
    a = formats.quantize(a, dt)
    b = formats.quantize(b, dt)
    out = run_tile(f"v{op} {{d}}, {{a}}, {{b}}, {tile_args(8, 24, dt)}, sb={24 * dt.itemsize}, dt={dt.asm}",
                   {"a": (a.astype(np.float32), dt), "b": (b.astype(np.float32), dt)}, {"d": ((8, 24), dt)})
    want = BINARY_REF[op](a, b)
    want = to_bf16(want) if dt is DType.BF16 else want.astype(np.float32)
    np.testing.assert_array_equal(out["d"], want)


@pytest.mark.parametrize("bc,shape_b", [("row", (1, 16)), ("col", (6, 1)), ("scalar", (1, 1))])
def test_vbinary_broadcast(bc: str, shape_b: tuple[int, int]) -> None:
    a = formats.quantize(rnd((6, 16), 3), DType.F32)
    b = formats.quantize(rnd(shape_b, 4), DType.F32)
    sb = shape_b[1] * 4  # the row stride of b as stored (a column is one element per row)
    out = run_tile(f"vmul {{d}}, {{a}}, {{b}}, {tile_args(6, 16, DType.F32)}, sb={sb}, dt=f32, bcb={bc}",
                   {"a": (a, DType.F32), "b": (b, DType.F32)}, {"d": ((6, 16), DType.F32)})
    np.testing.assert_array_equal(out["d"], (a * b).astype(np.float32))


def test_vbinary_scalar_and_compare() -> None:
    a = formats.quantize(rnd((4, 32), 5), DType.BF16)
    out = run_tile("vadds {d}, {a}, 0.3, rows=4, cols=32, sd=64, sa=64, dt=bf16\n"
                   "vgts {m}, {a}, 0.0, rows=4, cols=32, sd=32, sa=64, dt=bf16",
                   {"a": (a, DType.BF16)}, {"d": ((4, 32), DType.BF16), "m": ((4, 32), DType.BOOL)})
    np.testing.assert_array_equal(out["d"], to_bf16(a + np.float64(np.float32(0.3))))
    np.testing.assert_array_equal(out["m"], a > 0)
    assert out["m"].dtype == np.bool_


def test_vbinary_int_wraps_and_divides_toward_zero() -> None:
    a = np.array([[2**31 - 1, -7, 7, -(2**31), 100, 5]], dtype=np.int32)
    b = np.array([[1, 2, -2, -1, 7, 3]], dtype=np.int32)
    out = run_tile("vadd {s}, {a}, {b}, rows=1, cols=6, sd=24, sa=24, sb=24, dt=i32\n"
                   "vdiv {q}, {a}, {b}, rows=1, cols=6, sd=24, sa=24, sb=24, dt=i32\n"
                   "vxor {x}, {a}, {b}, rows=1, cols=6, sd=24, sa=24, sb=24, dt=i32\n"
                   "vlt {c}, {a}, {b}, rows=1, cols=6, sd=6, sa=24, sb=24, dt=i32",
                   {"a": (a, DType.I32), "b": (b, DType.I32)},
                   {"s": ((1, 6), DType.I32), "q": ((1, 6), DType.I32), "x": ((1, 6), DType.I32),
                    "c": ((1, 6), DType.BOOL)})
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    np.testing.assert_array_equal(out["s"], (a64 + b64).astype(np.int32))  # two's-complement wrap
    np.testing.assert_array_equal(out["q"], np.trunc(a64 / b64).astype(np.int64).astype(np.int32))
    np.testing.assert_array_equal(out["x"], a ^ b)
    np.testing.assert_array_equal(out["c"], a < b)


UNARY_REF = {"exp": np.exp, "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "neg": np.negative,
             "sqrt": np.sqrt, "sigmoid": special.expit, "gelu": lambda x: 0.5 * x * (1 + special.erf(x / 2**0.5)),
             "rsqrt": lambda x: 1 / np.sqrt(x), "floor": np.floor}


@pytest.mark.parametrize("op", sorted(UNARY_REF))
def test_vunary_bf16(op: str) -> None:
    a = rnd((8, 32), 6, 2.0)
    if op in ("sqrt", "rsqrt"):
        a = np.abs(a) + 0.25
    a = formats.quantize(a, DType.BF16)
    out = run_tile(f"v{op} {{d}}, {{a}}, {tile_args(8, 32, DType.BF16)}, dt=bf16", {"a": (a, DType.BF16)},
                   {"d": ((8, 32), DType.BF16)})
    np.testing.assert_array_equal(out["d"], to_bf16(UNARY_REF[op](a)))


def test_vunary_bool_not_and_vsel() -> None:
    c = np.array([[True, False, True, False]])
    a = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    b = -a
    out = run_tile("vnot {n}, {c}, rows=1, cols=4, sd=4, sa=4, dt=bool\n"
                   "vsel {d}, {c}, {a}, {b}, rows=1, cols=4, sd=16, sc=4, sa=16, sb=16, dt=f32",
                   {"c": (c, DType.BOOL), "a": (a, DType.F32), "b": (b, DType.F32)},
                   {"n": ((1, 4), DType.BOOL), "d": ((1, 4), DType.F32)})
    np.testing.assert_array_equal(out["n"], ~c)
    np.testing.assert_array_equal(out["d"], np.where(c, a, b))


def test_vfill_strided_tile_leaves_gaps() -> None:
    out = run_tile("vfill {d}, 2.5, rows=3, cols=2, sd=16, dt=f32", {}, {"d": ((3, 4), DType.F32)})
    want = np.zeros((3, 4), dtype=np.float32)
    want[:, :2] = 2.5
    np.testing.assert_array_equal(out["d"], want)


# -- reductions, scans, transpose -----------------------------------------------------------------

@pytest.mark.parametrize("axis", ["row", "col"])
def test_reductions(axis: str) -> None:
    a = formats.quantize(rnd((6, 40), 7), DType.BF16)
    ax = 1 if axis == "row" else 0
    n = 6 if axis == "row" else 40
    oshape = (6, 1) if axis == "row" else (1, 40)
    sd = 2 if axis == "row" else 80  # row results are one per row: a column of 2-byte elements
    out = run_tile(f"vrsum {{s}}, {{a}}, rows=6, cols=40, sd={sd}, sa=80, dt=bf16, axis={axis}\n"
                   f"vrmax {{m}}, {{a}}, rows=6, cols=40, sd={sd}, sa=80, dt=bf16, axis={axis}\n"
                   f"vrargmin {{i}}, {{a}}, rows=6, cols=40, sd={2 * sd}, sa=80, dt=bf16, axis={axis}\n"
                   f"vcumsum {{c}}, {{a}}, rows=6, cols=40, sd=80, sa=80, dt=bf16, axis={axis}",
                   {"a": (a, DType.BF16)},
                   {"s": (oshape, DType.BF16), "m": (oshape, DType.BF16), "i": (oshape, DType.I32),
                    "c": ((6, 40), DType.BF16)})
    assert n in oshape
    np.testing.assert_array_equal(out["s"], to_bf16(a.sum(axis=ax)).reshape(oshape))
    np.testing.assert_array_equal(out["m"], a.max(axis=ax).astype(np.float32).reshape(oshape))
    np.testing.assert_array_equal(out["i"], a.argmin(axis=ax).reshape(oshape))
    np.testing.assert_array_equal(out["c"], to_bf16(np.cumsum(a, axis=ax)))


def test_vtrans_and_vmov_copy_bits() -> None:
    a = np.arange(15, dtype=np.int16).reshape(3, 5)
    out = run_tile("vtrans {t}, {a}, rows=3, cols=5, sd=6, sa=10, dt=i16\n"
                   "vmov {m}, {a}, rows=3, cols=5, sd=10, sa=10, dt=i16",
                   {"a": (a, DType.I16)}, {"t": ((5, 3), DType.I16), "m": ((3, 5), DType.I16)})
    np.testing.assert_array_equal(out["t"], a.T)
    np.testing.assert_array_equal(out["m"], a)


# -- conversion and gather ------------------------------------------------------------------------

def test_vcvt_rne_and_cfp8_bias() -> None:
    a = rnd((4, 16), 8, 3.0).astype(np.float32)
    bias = 9  # destination bias in bits 0-5, source bias in bits 8-13 for the way back
    out = run_tile(f"li r20, {bias | (bias << 8)}\n"
                   "vcvt {h}, {a}, rows=4, cols=16, sd=32, sa=64, dtd=bf16, dts=f32\n"
                   "vcvt {c}, {a}, rows=4, cols=16, sd=16, sa=64, dtd=cf8e4, dts=f32, rbias=r20\n"
                   "vcvt {back}, {c}, rows=4, cols=16, sd=64, sa=16, dtd=f32, dts=cf8e4, rbias=r20",
                   {"a": (a, DType.F32)},
                   {"h": ((4, 16), DType.BF16), "c": ((4, 16), DType.U8), "back": ((4, 16), DType.F32)})
    np.testing.assert_array_equal(out["h"], a.astype(BF16).astype(np.float32))
    np.testing.assert_array_equal(out["c"], formats.encode(a, DType.CF8E4, bias=bias))
    np.testing.assert_array_equal(out["back"], formats.quantize(a, DType.CF8E4, bias=bias))


def test_vcvt_stochastic_rounding_is_seeded_and_reproducible() -> None:
    a = (1.0 + np.arange(64).reshape(1, 64) / 1000.0).astype(np.float32)
    prog = ("li r20, {seed}\n"
            "vcvt {{h}}, {{a}}, rows=1, cols=64, sd=128, sa=256, dtd=bf16, dts=f32, rnd=sr, rseed=r20")
    one = run_tile(prog.format(seed=1), {"a": (a, DType.F32)}, {"h": ((1, 64), DType.BF16)})["h"]
    again = run_tile(prog.format(seed=1), {"a": (a, DType.F32)}, {"h": ((1, 64), DType.BF16)})["h"]
    other = run_tile(prog.format(seed=2), {"a": (a, DType.F32)}, {"h": ((1, 64), DType.BF16)})["h"]
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one, other)
    # each result is one of the two bf16 neighbours of its input
    below = (a.view(np.uint32) & 0xFFFF0000).view(np.float32)
    above = (below.view(np.uint32) + 0x10000).view(np.float32)
    assert np.all((one == below) | (one == above))
    # the bits are formats.encode's for (seed, core 0, the number of instructions the core executed
    # before the vcvt): 4 to load a, 1 for h's address, the wait and the li
    want = formats.encode(a, DType.BF16, rounding=Round.SR, seed=1, core=0, index=7)
    np.testing.assert_array_equal(one, want.astype(np.float32))


def test_vgather_rows_by_index() -> None:
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    idx = np.array([[3, 0, 9, 3]], dtype=np.int32)
    out = run_tile("vgather {d}, {t}, {i}, n=4, cols=4, sd=16, st=16, dt=f32, nt=10",
                   {"t": (table, DType.F32), "i": (idx, DType.I32)}, {"d": ((4, 4), DType.F32)})
    np.testing.assert_array_equal(out["d"], table[idx[0]])


# -- matrix multiply ------------------------------------------------------------------------------

def exact_ref(a: np.ndarray, b: np.ndarray, acc: np.ndarray | None = None) -> np.ndarray:
    """The exact dot products rounded once to float32, via fractions-free fsum + the midpoint rule."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            terms = [float(x) * float(y) for x, y in zip(a[i], b[:, j], strict=True)]
            if acc is not None:
                terms.append(float(acc[i, j]))
            from fractions import Fraction
            exact = sum((Fraction(t) for t in terms), Fraction(0))
            f = np.float32(float(exact))
            # correct a double rounding at a float32 midpoint
            lo = np.nextafter(f, np.float32(-np.inf))
            hi = np.nextafter(f, np.float32(np.inf))
            for g in (lo, hi):
                if abs(Fraction(float(g)) - exact) < abs(Fraction(float(f)) - exact):
                    f = g
            out[i, j] = f
    return out


@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("acc", [0, 1])
def test_mma_bf16(tb: int, acc: int) -> None:
    m, n, k = 8, 12, 40
    a = formats.quantize(rnd((m, k), 10), DType.BF16)
    b = formats.quantize(rnd((k, n), 11), DType.BF16)
    c = formats.quantize(rnd((m, n), 12), DType.F32)
    bt = b.T.copy() if tb else b
    sb = (k if tb else n) * 2
    out = run_tile(f"vmov {{d}}, {{c}}, rows={m}, cols={n}, sd={n * 4}, sa={n * 4}, dt=f32\n"
                   f"mma {{d}}, {{a}}, {{b}}, m={m}, n={n}, k={k}, sd={n * 4}, sa={k * 2}, sb={sb}, dt=bf16, "
                   f"acc={acc}, tb={tb}",
                   {"a": (a, DType.BF16), "b": (bt, DType.BF16), "c": (c.astype(np.float32), DType.F32)},
                   {"d": ((m, n), DType.F32)})
    np.testing.assert_array_equal(out["d"], exact_ref(a, b, c if acc else None))


@pytest.mark.parametrize("case", ["zeros", "wide", "special"])
def test_mma_bf16_scratch_path_matches_the_reference(case: str) -> None:
    """The BF16 handler's whole-operation test on its scratch arrays: zeros (frexp exponent 0), exponents too
    far apart for the test (the per-element path decides) and inf / NaN operands give what exact_matmul and
    the exact reference give, bit for bit."""
    m, n, k = 6, 9, 33
    rng = np.random.default_rng(7)
    a64, b64, c64 = rnd((m, k), 20), rnd((k, n), 21), rnd((m, n), 22)
    if case == "zeros":
        a64[rng.random((m, k)) < 0.5] = 0.0
        b64[:, 0] = 0.0
    elif case == "wide":
        a64 *= 2.0 ** rng.integers(-60, 60, (m, k))
    else:
        a64[1, 3], b64[4, 2], c64[0, 0] = np.inf, np.nan, -np.inf
    a, b = formats.quantize(a64, DType.BF16), formats.quantize(b64, DType.BF16)
    c = formats.quantize(c64, DType.F32)
    for tb in (0, 1):
        sb = (k if tb else n) * 2
        out = run_tile(f"vmov {{d}}, {{c}}, rows={m}, cols={n}, sd={n * 4}, sa={n * 4}, dt=f32\n"
                       f"mma {{d}}, {{a}}, {{b}}, m={m}, n={n}, k={k}, sd={n * 4}, sa={k * 2}, sb={sb}, dt=bf16, "
                       f"acc=1, tb={tb}",
                       {"a": (a, DType.BF16), "b": (b.T.copy() if tb else b, DType.BF16),
                        "c": (c.astype(np.float32), DType.F32)},
                       {"d": ((m, n), DType.F32)})
        with np.errstate(all="ignore"):
            want = exact_matmul(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64), (8, 8))
        np.testing.assert_array_equal(out["d"].view(np.uint32), want.view(np.uint32))
        if case != "special":
            np.testing.assert_array_equal(out["d"], exact_ref(a, b, c))


def test_mma_cfp8_biases_from_rbias() -> None:
    m, n, k = 4, 8, 16
    ba, bb = 10, 6
    a_codes = formats.encode(rnd((m, k), 13), DType.CF8E4, bias=ba)
    b_codes = formats.encode(rnd((k, n), 14, 4.0), DType.CF8E4, bias=bb)
    out = run_tile(f"li r20, {ba | (bb << 8)}\n"
                   f"mma {{d}}, {{a}}, {{b}}, m={m}, n={n}, k={k}, sd={n * 4}, sa={k}, sb={n}, dt=cf8e4, rbias=r20",
                   {"a": (a_codes, DType.U8), "b": (b_codes, DType.U8)}, {"d": ((m, n), DType.F32)})
    a = formats.decode(a_codes, DType.CF8E4, ba)
    b = formats.decode(b_codes, DType.CF8E4, bb)
    np.testing.assert_array_equal(out["d"], exact_ref(a, b))


def test_exact_matmul_fixes_the_rare_midpoint_cases() -> None:
    # exact sum 1 + 2^-24 + 2^-60 lies just above the float32 midpoint 1 + 2^-24: it rounds up, but the
    # float64 sum drops 2^-60, lands on the midpoint and ties to even (1.0)
    a = np.array([[1.0, 2.0**-24, 2.0**-30]])
    b = np.array([[1.0], [1.0], [2.0**-30]])
    assert np.float32((a @ b)[0, 0]) == np.float32(1.0)
    assert exact_matmul(a, b)[0, 0] == np.float32(1.0 + 2.0**-23)
    # 1 + 3 * 2^-24 - 2^-60: just below a midpoint whose even neighbour is above it
    a2 = np.array([[1.0, 3 * 2.0**-24, -(2.0**-30)]])
    assert np.float32((a2 @ b)[0, 0]) == np.float32(1.0 + 2.0**-22)
    assert exact_matmul(a2, b)[0, 0] == np.float32(1.0 + 2.0**-23)
    # through the accumulator, and an exact tie (ties to even)
    acc = np.array([[2.0**-60]])
    assert exact_matmul(a[:, :2], b[:2], acc)[0, 0] == np.float32(1.0 + 2.0**-23)
    assert exact_matmul(a[:, :2], b[:2])[0, 0] == np.float32(1.0)


def test_exact_matmul_matches_fraction_reference_on_cancellation() -> None:
    rng = np.random.default_rng(15)
    a = formats.quantize(rng.standard_normal((6, 64)) * 2.0 ** rng.integers(-20, 20, (6, 64)), DType.F32)
    b = formats.quantize(rng.standard_normal((64, 5)), DType.F32)
    np.testing.assert_array_equal(exact_matmul(a, b), exact_ref(a, b))
    assert math.isfinite(float(exact_matmul(a, b).sum()))


@pytest.mark.parametrize("dt, bits", [(DType.BF16, 8), (DType.F32, 24), (DType.CF8E4, 4), (DType.CF8E5, 3)])
def test_low_bit_bound_is_a_lower_bound_and_the_typed_result_is_the_same(dt: DType, bits: int) -> None:
    rng = np.random.default_rng(16)
    for scale in (1.0, 2.0**-120, 2.0**100):  # normal values, subnormals (for the wide types), large ones
        x = formats.quantize(rng.standard_normal((7, 33)) * scale * 2.0 ** rng.integers(-6, 6, (7, 33)), dt)
        x[0, :3] = 0.0
        lb, exact = low_bit_bound(x, bits), low_bit_exponent(x)
        assert (lb <= exact).all() and (lb[x != 0] >= exact[x != 0] - bits).all()
    a = formats.quantize(rng.standard_normal((9, 70)), dt)
    b = formats.quantize(rng.standard_normal((70, 11)) * 2.0 ** rng.integers(-8, 8, (70, 11)), dt)
    acc = formats.quantize(rng.standard_normal((9, 11)), DType.F32)
    np.testing.assert_array_equal(exact_matmul(a, b, acc, (bits, bits)), exact_matmul(a, b, acc))
    np.testing.assert_array_equal(exact_matmul(a, b, None, (bits, bits)), exact_ref(a, b))


@pytest.mark.parametrize("spread, whole", [(0, True), (60, False)])
def test_the_whole_operation_test_takes_the_common_case_and_leaves_wide_ranges_to_the_careful_path(
        spread: int, whole: bool) -> None:
    rng = np.random.default_rng(17)
    a = formats.quantize(rng.standard_normal((7, 32)) * 2.0 ** rng.integers(-spread, spread + 1, (7, 32)),
                         DType.BF16)
    b = formats.quantize(rng.standard_normal((32, 9)) * 0.02, DType.BF16)
    acc = formats.quantize(rng.standard_normal((7, 9)), DType.F32)
    a[0, :4] = 0.0  # zeros constrain nothing
    assert _exact_whole(a, b, acc, (8, 8)) is whole
    assert not _exact_whole(a, b, acc, (None, 8))  # unknown widths: never by the scalar test
    np.testing.assert_array_equal(exact_matmul(a, b, acc, (8, 8)), exact_ref(a, b, acc))
    bad = a.copy()
    bad[1, 1] = np.inf
    assert not _exact_whole(bad, b, acc, (8, 8))  # inf and NaN go the careful way
    with np.errstate(invalid="ignore"):  # as the emulator runs it
        np.testing.assert_array_equal(exact_matmul(bad, b, acc, (8, 8)), exact_matmul(bad, b, acc))


# -- DMA and puts ---------------------------------------------------------------------------------

def test_dma_2d_padding_and_strided_store() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    # load x into a 5 x 6 tile with one row/column of padding before and after (pad value -1)
    body = ("li r21, 0x0\n"
            "dmadim 0, 4, sstride=4, dstride=4, padlo=1, padhi=1\n"
            "dmadim 1, 3, sstride=16, dstride=24, padlo=1, padhi=1\n"
            "dmald {p}, r21, esize=4, ndim=2, sem=2, pad=-1.0, dt=f32\n"
            "wait 2, 1\n"
            # store the transpose of x through strides: DRAM column-major
            "li r22, 0x400\n"
            "dmadim 0, 4, sstride=4, dstride=12\n"
            "dmadim 1, 3, sstride=16, dstride=4\n"
            "dmast r22, {x}, esize=4, ndim=2, sem=2\n"
            "wait 2, 1\n"
            "li r23, 0x800\n"
            "dmadim 0, 12, sstride=4, dstride=4\n"
            "dmald {t}, r22, esize=4, ndim=1, sem=2, dt=f32\n"
            "wait 2, 1")
    out = run_tile(body, {"x": (x, DType.F32)}, {"p": ((5, 6), DType.F32), "t": ((4, 3), DType.F32)})
    want = np.full((5, 6), -1.0, dtype=np.float32)
    want[1:4, 1:5] = x
    np.testing.assert_array_equal(out["p"], want)
    np.testing.assert_array_equal(out["t"], x.T)


def test_dma_gather_rows() -> None:
    table = np.arange(64, dtype=np.float32).reshape(16, 4)
    idx = np.array([5, 0, 15, 5], dtype=np.int32)
    out = run_tile("li r21, 0x0\n"
                   "dmagat {d}, r21, {i}, n=4, rowbytes=16, tstride=16, sem=2\n"
                   "wait 2, 1", {"table": (table, DType.F32), "i": (idx, DType.I32)},
                   {"d": ((4, 4), DType.F32)})
    np.testing.assert_array_equal(out["d"], table[idx])


def test_put_multicast_row_delivers_to_every_other_core() -> None:
    text = """
.machine mesh2x2
.tensor x input 0x0 f32 [4]
.tensor y output 0x100 f32 [2, 4]
.section src cores=0
    li r1, 0x0
    dmadim 0, 4, sstride=4, dstride=4
    dmald r1, r1, esize=4, ndim=1, sem=0, dt=f32
    wait 0, 1
    li r2, 0
    li r3, 0x40
    put r2, r3, r1, rows=1, bytes=16, cast=col, seml=1, semr=2
    wait 1, 1
    halt
.section dst cores=2
    wait 2, 1
    li r3, 0x40
    li r4, 0x100
    dmadim 0, 4, sstride=4, dstride=4
    dmast r4, r3, esize=4, ndim=1, sem=0
    wait 0, 1
    halt
.section other cores=1
    halt
"""
    x = np.array([1.5, -2.0, 3.0, 4.25], dtype=np.float32)
    emu = Emulator(assemble(text))
    emu.set_inputs([x])
    res = emu.run()
    np.testing.assert_array_equal(res.outputs["y"][0], x)


def test_put_multicast_with_a_span_reaches_only_that_segment_of_the_row() -> None:
    """Core 1 multicasts along row 0 of mesh4x4 to positions 1 and 2 (first 1, span 2): only core 2 (the
    segment less the sender) gets the data. Cores 0, 2 and 3 store what they have (row i of y from core
    i's SRAM) once core 2 has it."""

    def store(name: str, core: int, wait: str) -> str:  # core's 16 bytes at 0x40 to y's row of that core
        row = {0: 0, 2: 1, 3: 2}[core]
        return (f".section {name} cores={core}\n{wait}    li r3, 0x40\n    li r4, {0x100 + 16 * row:#x}\n"
                "    dmadim 0, 4, sstride=4, dstride=4\n    dmast r4, r3, esize=4, ndim=1, sem=0\n    wait 0, 1\n"
                "    halt\n")

    text = """
.machine mesh4x4
.tensor x input 0x0 f32 [4]
.tensor y output 0x100 f32 [3, 4]
.section src cores=1
    li r1, 0x0
    dmadim 0, 4, sstride=4, dstride=4
    dmald r1, r1, esize=4, ndim=1, sem=0, dt=f32
    wait 0, 1
    li r2, 1
    li r3, 0x40
    put r2, r3, r1, rows=1, bytes=16, cast=row, seml=1, semr=2, first=1, span=2
    wait 1, 1
    halt
""" + store("seg", 2, "    wait 2, 1\n    li r5, 0\n    signal r5, 3\n    li r5, 3\n    signal r5, 3\n") \
        + store("left", 0, "    wait 3, 1\n") + store("right", 3, "    wait 3, 1\n")
    x = np.array([1.5, -2.0, 3.0, 4.25], dtype=np.float32)
    emu = Emulator(assemble(text))
    emu.set_inputs([x])
    y = emu.run().outputs["y"]
    np.testing.assert_array_equal(y[1], x)
    np.testing.assert_array_equal(y[[0, 2]], 0)


# -- scalar ---------------------------------------------------------------------------------------

def test_scalar_alu_registers() -> None:
    text = """
.machine mesh2x2
.section main cores=3
    li r1, -7
    li r2, 2
    div r3, r1, r2
    rem r4, r1, r2
    li r5, 0x7fffffffffffffff
    addi r6, r5, 1
    shl r7, r2, r2
    shri r8, r1, 1
    slt r9, r1, r2
    rdsr r10, sr=coreid
    rdsr r11, sr=row
    rdsr r12, sr=col
    rdsr r13, sr=ncores
    li r14, 5
    li r15, 0
again:
    addi r15, r15, 10
    loop r14, again
    li r0, 99
    mul r16, r5, r5
    max r17, r1, r2
    halt
"""
    emu = Emulator(assemble(text))
    emu.run()
    regs = emu.core(3).regs
    assert regs[0] == 0
    assert regs[3:5] == [-3, -1]  # division truncates toward zero
    assert regs[6] == -(2**63)  # 64-bit wrap
    assert regs[7] == 8 and regs[8] == -4 and regs[9] == 1
    assert regs[10:14] == [3, 1, 1, 4]
    assert regs[15] == 50 and regs[14] == 0
    assert regs[16] == 1 and regs[17] == 2  # (2^63 - 1)^2 mod 2^64 = 1


def test_timing_only_runs_control_flow_but_no_data() -> None:
    a = formats.quantize(rnd((4, 8), 16), DType.F32)
    full = run_tile("vadds {d}, {a}, 1.0, rows=4, cols=8, sd=32, sa=32, dt=f32", {"a": (a, DType.F32)},
                    {"d": ((4, 8), DType.F32)})
    timing = run_tile("vadds {d}, {a}, 1.0, rows=4, cols=8, sd=32, sa=32, dt=f32", {"a": (a, DType.F32)},
                      {"d": ((4, 8), DType.F32)}, timing_only=True)
    np.testing.assert_array_equal(full["d"], a.astype(np.float32) + 1)
    assert timing == {}
