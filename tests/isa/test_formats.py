"""Number formats: exhaustive CFP code tables, RNE ties, saturation, BF16 against ml_dtypes, SR statistics."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from isa.dtypes import DType
from isa.errors import FormatError
from isa.formats import (
    choose_bias,
    decode,
    encode,
    layout,
    max_finite,
    min_subnormal,
    quantize,
    sr_bits,
    to_numpy_dtype,
    value_dtype,
)
from isa.table import Round

CF8 = [DType.CF8E4, DType.CF8E5]
BIASES = [0, 7, 15, 31, 63]
BF16 = np.dtype(ml_dtypes.bfloat16)


def _all_codes(dt: DType) -> np.ndarray:
    return np.arange(1 << (8 * dt.storage.itemsize), dtype=np.int64).astype(dt.storage)


def _reference_value(code: int, dt: DType, bias: int) -> float:
    """The layout formula, one code at a time (independent of the vectorised tables)."""
    ebits, mbits = layout(dt)
    nbits = 1 + ebits + mbits
    s, e, m = code >> (nbits - 1), (code >> mbits) & ((1 << ebits) - 1), code & ((1 << mbits) - 1)
    mag = 2.0 ** (e - bias) * (1 + m / 2**mbits) if e else 2.0 ** (1 - bias) * (m / 2**mbits)
    return -mag if s else mag


# ------------------------------------------------------------------------------------------------- CFP


@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("dt", CF8)
def test_cfp8_decode_matches_the_layout_formula(dt: DType, bias: int) -> None:
    values = decode(_all_codes(dt), dt, bias)
    assert values.dtype == np.float64
    expected = np.array([_reference_value(c, dt, bias) for c in range(256)])
    np.testing.assert_array_equal(values, expected)
    assert np.signbit(values[0x80]) and not np.signbit(values[0])  # the two zeros
    assert np.isfinite(values).all()  # no Inf/NaN: the all-ones exponent is a normal binade


def _check_exhaustive(dt: DType, bias: int) -> None:
    codes = _all_codes(dt)
    half = codes.size // 2
    values = decode(codes, dt, bias)
    # decode -> encode gives every code back, both zeros included
    np.testing.assert_array_equal(encode(values, dt, bias=bias), codes)
    np.testing.assert_array_equal(encode(values, dt, bias=bias, rounding=Round.SR, seed=3), codes)
    # magnitudes strictly increase with the code; the upper half mirrors the lower half
    mags = values[:half]
    assert (np.diff(mags) > 0).all()
    np.testing.assert_array_equal(values[half:], -mags)
    assert max_finite(dt, bias) == mags[-1] and min_subnormal(dt, bias) == mags[1]
    # midpoints between neighbours round to the even code (even mantissa); a nudge either way decides
    lo = np.arange(half - 1)
    mid = (mags[:-1] + mags[1:]) / 2
    even = np.where(lo % 2 == 0, lo, lo + 1)
    np.testing.assert_array_equal(encode(mid, dt, bias=bias), even.astype(dt.storage))
    np.testing.assert_array_equal(encode(-mid, dt, bias=bias), (even + half).astype(dt.storage))
    below, above = np.nextafter(mid, -np.inf), np.nextafter(mid, np.inf)
    np.testing.assert_array_equal(encode(below, dt, bias=bias), lo.astype(dt.storage))
    np.testing.assert_array_equal(encode(above, dt, bias=bias), (lo + 1).astype(dt.storage))
    # overflow (and infinity) saturates to +-max finite
    top = mags[-1]
    big = np.array([np.nextafter(top, np.inf), top * 1.01, top * 4, 1e300, np.inf])
    assert (encode(big, dt, bias=bias) == half - 1).all()
    assert (encode(-big, dt, bias=bias) == codes.size - 1).all()
    assert (encode(big, dt, bias=bias, rounding=Round.SR) == half - 1).all()


@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("dt", CF8)
def test_cfp8_exhaustive(dt: DType, bias: int) -> None:
    _check_exhaustive(dt, bias)


@pytest.mark.parametrize("bias", [0, 15])
def test_cf16_exhaustive(bias: int) -> None:
    _check_exhaustive(DType.CF16, bias)
    np.testing.assert_array_equal(
        decode(np.array([0x3C00, 0x0001, 0x7FFF], dtype=np.uint16), DType.CF16, bias),
        [2.0 ** (15 - bias), 2.0 ** (-9 - bias), 2.0 ** (31 - bias) * (2 - 2**-10)],
    )


@pytest.mark.parametrize("dt", [*CF8, DType.CF16])
def test_cfp_nan_raises(dt: DType) -> None:
    for rounding in Round:
        with pytest.raises(FormatError, match="NaN"):
            encode(np.array([1.0, np.nan]), dt, bias=7, rounding=rounding)


def test_cfp_signed_zero_and_underflow() -> None:
    x = np.array([0.0, -0.0, 1e-30, -1e-30])
    np.testing.assert_array_equal(encode(x, DType.CF8E4, bias=7), [0x00, 0x80, 0x00, 0x80])
    tiny = min_subnormal(DType.CF8E4, 7)
    np.testing.assert_array_equal(encode(np.array([tiny / 2, tiny * 0.51]), DType.CF8E4, bias=7), [0, 1])


def test_known_max_finite_values() -> None:
    assert max_finite(DType.CF8E4, 7) == 480.0  # 2^(15-7) * 1.875, all-ones exponent is normal
    assert max_finite(DType.CF8E5, 15) == 57344.0 * 2  # 2^(31-15) * 1.75
    assert max_finite(DType.CF16, 15) == 131008.0
    assert min_subnormal(DType.CF8E4, 7) == 2.0**-9
    assert max_finite(DType.BF16) == float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    assert max_finite(DType.F32) == float(np.finfo(np.float32).max)
    assert min_subnormal(DType.BF16) == 2.0**-133 and min_subnormal(DType.F32) == 2.0**-149
    assert max_finite(DType.I8) == 127.0


def test_bad_bias_and_dtype() -> None:
    for bad in (-1, 64, 1.5, True):
        with pytest.raises(FormatError, match="bias"):
            encode(np.zeros(2), DType.CF8E4, bias=bad)  # type: ignore[arg-type]
        with pytest.raises(FormatError, match="bias"):
            decode(np.zeros(2, dtype=np.uint8), DType.CF8E5, bad)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        encode(np.zeros(2), "f32")  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        decode(np.array([256]), DType.CF8E4)
    with pytest.raises(FormatError):
        layout(DType.BF16)
    with pytest.raises(FormatError):
        choose_bias(np.ones(3), DType.F32)


# ------------------------------------------------------------------------------------------ choose_bias


@pytest.mark.parametrize("dt", [*CF8, DType.CF16])
def test_choose_bias_is_the_finest_that_does_not_saturate(dt: DType) -> None:
    for bias in (0, 5, 30, 63):
        top = max_finite(dt, bias)
        assert choose_bias(np.array([top / 3, -top]), dt) == bias
        if bias > 0:
            assert choose_bias(np.array([np.nextafter(top, np.inf)]), dt) == bias - 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000) * 37.0
    b = choose_bias(x, dt)
    assert np.abs(x).max() <= max_finite(dt, b) and (b == 63 or np.abs(x).max() > max_finite(dt, b + 1))
    assert choose_bias(np.zeros(4), dt) == 63 and choose_bias(np.array([]), dt) == 63
    assert choose_bias(np.array([1e300]), dt) == 0 and choose_bias(np.array([np.inf]), dt) == 0
    assert choose_bias(np.array([np.nan, 1.0]), dt) == choose_bias(np.array([1.0]), dt)


# ---------------------------------------------------------------------------------------------- BF16, F32


@np.errstate(invalid="ignore", over="ignore")
def _float_sample() -> np.ndarray:
    rng = np.random.default_rng(1)
    f32_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    wide = rng.standard_normal(100_000) * np.exp2(rng.integers(-160, 140, 100_000))
    bf = np.arange(2**16, dtype=np.uint16).view(BF16).astype(np.float64)  # every bf16 value ...
    step = np.abs(bf) * 2.0**-8
    ties = np.concatenate([bf + step, bf - step, bf + step * 1.0000001])  # ... and its neighbourhood
    special = np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, 3.39e38, 1e39, -1e39, 2.0**-134, 2.0**-150,
                        1 + 2.0**-8 + 2.0**-40, 2.0**-133 * 1.5 + 2.0**-160])
    return np.concatenate([f32_bits.astype(np.float64), wide, ties, special])


def test_bf16_rne_matches_ml_dtypes() -> None:
    """float64 -> bfloat16 rounds through float32, as torch does (isa/formats.encode); ml_dtypes 0.7 rounds
    float64 once, so the reference takes the same two steps: numpy's float32 RNE, then ml_dtypes'."""
    x = _float_sample()
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.astype(np.float32).astype(BF16)
        got = encode(x, DType.BF16)
    assert got.dtype == BF16
    nan = np.isnan(x)
    assert np.isnan(got[nan].astype(np.float32)).all()
    np.testing.assert_array_equal(got[~nan].view(np.uint16), expected[~nan].view(np.uint16))
    with np.errstate(over="ignore"):
        f32 = x[~nan].astype(np.float32)  # float32 input too
    np.testing.assert_array_equal(encode(f32, DType.BF16).view(np.uint16), f32.astype(BF16).view(np.uint16))


def test_f32_rne_and_decode() -> None:
    x = _float_sample()
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(encode(x, DType.F32), x.astype(np.float32))
    bits = np.arange(0, 2**16, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(decode(bits, DType.BF16), bits.view(BF16).astype(np.float64))
    assert decode(np.ones(2, np.float32), DType.F32).dtype == np.float64


# --------------------------------------------------------------------------------- stochastic rounding


def test_sr_bits_are_a_pure_function() -> None:
    a = sr_bits(1, 2, 3, 10_000)
    assert a.dtype == np.uint32 and a.shape == (10_000,)
    np.testing.assert_array_equal(a, sr_bits(1, 2, 3, 10_000))
    np.testing.assert_array_equal(a[:100], sr_bits(1, 2, 3, 100))
    for other in (sr_bits(2, 2, 3, 10_000), sr_bits(1, 3, 3, 10_000), sr_bits(1, 2, 4, 10_000)):
        assert (a != other).mean() > 0.99
    assert abs(a.astype(np.float64).mean() / 2**32 - 0.5) < 0.01
    assert len(np.unique(a)) > 9_990


SR_CASES = [
    (DType.CF8E4, 7, 1.03125, 1.0, 1.125),
    (DType.CF8E5, 15, -2.75, -2.5, -3.0),
    (DType.CF16, 15, 1 + 2.0**-12, 1.0, 1 + 2.0**-10),
    (DType.BF16, 0, 1 + 2.0**-10, 1.0, 1 + 2.0**-7),
    (DType.F32, 0, 1 + 2.0**-30, 1.0, 1 + 2.0**-23),
]


@pytest.mark.parametrize(("dt", "bias", "x", "lo", "hi"), SR_CASES)
def test_sr_is_unbiased_and_reproducible(dt: DType, bias: int, x: float, lo: float, hi: float) -> None:
    n = 200_000
    p = (x - lo) / (hi - lo)
    sd = abs(hi - lo) * np.sqrt(p * (1 - p) / n)
    # many elements of one instruction
    v = quantize(np.full(n, x), dt, bias=bias, rounding=Round.SR, seed=11, core=2, index=5)
    assert set(np.unique(v)) == {lo, hi}
    assert abs(v.mean() - x) < 5 * sd
    # one element over many executed-instruction indices
    w = np.array([quantize(np.array([x]), dt, bias=bias, rounding=Round.SR, index=i)[0] for i in range(4000)])
    assert abs(w.mean() - x) < 5 * abs(hi - lo) * np.sqrt(p * (1 - p) / 4000)
    again = encode(np.full(n, x), dt, bias=bias, rounding=Round.SR, seed=11, core=2, index=5)
    np.testing.assert_array_equal(decode(again, dt, bias), v)
    other = quantize(np.full(n, x), dt, bias=bias, rounding=Round.SR, seed=12, core=2, index=5)
    assert (other != v).any()
    # representable values are left alone
    exact = np.array([lo, hi, 0.0])
    np.testing.assert_array_equal(quantize(exact, dt, bias=bias, rounding=Round.SR, seed=4), exact)


def test_sr_bf16_specials() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0])
    got = encode(np.tile(x, 1000), DType.BF16, rounding=Round.SR).astype(np.float64).reshape(1000, 5)
    assert np.isnan(got[:, 0]).all()
    np.testing.assert_array_equal(got[:, 1:], np.tile(x[1:], (1000, 1)))
    assert np.signbit(got[:, 4]).all()
    nan_low_payload = np.array([0x7F800001], dtype=np.uint32).view(np.float32)
    assert np.isnan(encode(nan_low_payload, DType.BF16, rounding=Round.SR).astype(np.float32)).all()


# ------------------------------------------------------------------------------------------ ints, bool


def test_float_to_int_truncates_and_saturates() -> None:
    x = np.array([2.9, -2.9, 1e10, -1e10, np.inf, -np.inf, np.nan, 127.5, -128.7, -0.5])
    np.testing.assert_array_equal(encode(x, DType.I8), [2, -2, 127, -128, 127, -128, 0, 127, -128, 0])
    np.testing.assert_array_equal(encode(x, DType.U8), [2, 0, 255, 0, 255, 0, 0, 127, 0, 0])
    np.testing.assert_array_equal(
        encode(x, DType.I32), [2, -2, 2**31 - 1, -(2**31), 2**31 - 1, -(2**31), 0, 127, -128, 0]
    )
    assert encode(x, DType.I16).dtype == np.int16


def test_int_to_int_saturates() -> None:
    x = np.array([-(2**40), -129, -1, 0, 200, 70000, 2**40], dtype=np.int64)
    np.testing.assert_array_equal(encode(x, DType.I8), [-128, -128, -1, 0, 127, 127, 127])
    np.testing.assert_array_equal(encode(x, DType.U8), [0, 0, 0, 0, 200, 255, 255])
    np.testing.assert_array_equal(encode(x, DType.I16), [-32768, -129, -1, 0, 200, 32767, 32767])
    big = np.array([2**64 - 1, 5], dtype=np.uint64)
    np.testing.assert_array_equal(encode(big, DType.I32), [2**31 - 1, 5])
    np.testing.assert_array_equal(encode(np.array([True, False]), DType.I8), [1, 0])
    d = decode(np.array([-3, 4], dtype=np.int8), DType.I8)
    assert d.dtype == np.int64 and d.tolist() == [-3, 4]


def test_bool_and_types() -> None:
    np.testing.assert_array_equal(encode(np.array([0.0, -0.0, 2.0, np.nan]), DType.BOOL), [0, 0, 1, 1])
    np.testing.assert_array_equal(decode(np.array([True, False]), DType.BOOL), [True, False])
    for dt in DType:
        assert to_numpy_dtype(dt) == dt.storage
        x = np.arange(6, dtype=np.float64).reshape(2, 3)
        bits = encode(x, dt, bias=10)
        assert bits.dtype == dt.storage and bits.shape == (2, 3)
        vals = decode(bits, dt, 10)
        assert vals.dtype == value_dtype(dt)
        np.testing.assert_array_equal(vals, x != 0 if dt is DType.BOOL else x)
    assert encode(np.float64(1.0), DType.CF8E4, bias=7).shape == ()
