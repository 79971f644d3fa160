"""Number formats: decoding storage bits to values and encoding values to storage bits.

Every tile element type of `isa.dtypes.DType` is handled here, vectorised over numpy arrays:

- `decode(bits, dt, bias)` turns a storage array into exact values (float64 for float types, int64 for
  integer types, bool for BOOL).
- `encode(x, dt, bias=..., rounding=..., seed=..., core=..., index=...)` rounds values into a storage array,
  with round-to-nearest-even or stochastic rounding whose random bits come from `sr_bits`, a hash of
  (seed, core, executed-instruction index, element index) -- never a shared generator.

The configurable-bias formats (CFP: CF8E4 = CFloat8_1_4_3, CF8E5 = CFloat8_1_5_2, CF16 = 1-5-10) have a 6-bit
exponent bias (0..63), denormals and no Inf/NaN: the all-ones exponent is an ordinary normal binade. A code
with exponent field e and mantissa m (of M bits) is worth (-1)^s * 2^(e - bias) * (1 + m / 2^M) when e > 0 and
(-1)^s * 2^(1 - bias) * (m / 2^M) when e = 0. They are decoded and encoded through lookup tables cached per
(dtype, bias). See docs/formats.md for the rounding, saturation and special-value rules.
"""

from __future__ import annotations

from functools import cache

import ml_dtypes
import numpy as np
from numpy.typing import ArrayLike, NDArray

from isa.dtypes import DType
from isa.errors import FormatError
from isa.table import Round

__all__ = [
    "BIAS_MAX",
    "choose_bias",
    "decode",
    "encode",
    "layout",
    "max_finite",
    "min_subnormal",
    "quantize",
    "sr_bits",
    "to_numpy_dtype",
    "value_dtype",
]

BIAS_MAX = 63
"""The largest CFP exponent bias (the bias is a 6-bit field)."""

_LAYOUTS: dict[DType, tuple[int, int]] = {DType.CF8E4: (4, 3), DType.CF8E5: (5, 2), DType.CF16: (5, 10)}
_INT_RANGE: dict[DType, tuple[int, int]] = {
    DType.I8: (-(2**7), 2**7 - 1),
    DType.I16: (-(2**15), 2**15 - 1),
    DType.I32: (-(2**31), 2**31 - 1),
    DType.U8: (0, 2**8 - 1),
}
_BF16 = np.dtype(ml_dtypes.bfloat16)
_F32_MAX = float(np.finfo(np.float32).max)
_TWO32 = 2.0**32

# splitmix64 constants
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


# ----------------------------------------------------------------------------------------------- helpers


def _check_dtype(dt: object) -> DType:
    if not isinstance(dt, DType):
        raise FormatError(f"unknown data type {dt!r}: expected an isa.dtypes.DType")
    return dt


def _check_bias(bias: object) -> int:
    if isinstance(bias, bool) or not isinstance(bias, int | np.integer) or not 0 <= int(bias) <= BIAS_MAX:
        raise FormatError(f"CFP exponent bias must be an integer in 0..{BIAS_MAX}, got {bias!r}")
    return int(bias)


def layout(dt: DType) -> tuple[int, int]:
    """(exponent bits, mantissa bits) of a CFP type; FormatError for any other type."""
    if _check_dtype(dt) not in _LAYOUTS:
        raise FormatError(f"{dt.asm} is not a configurable-bias (CFP) format")
    return _LAYOUTS[dt]


def to_numpy_dtype(dt: DType) -> np.dtype:
    """The numpy dtype that holds `dt`'s bits in SRAM (the type `encode` returns, `decode` takes)."""
    return _check_dtype(dt).storage


def value_dtype(dt: DType) -> np.dtype:
    """The numpy dtype of `decode`'s result: float64 for float types, int64 for integers, bool for BOOL."""
    dt = _check_dtype(dt)
    if dt.is_float:
        return np.dtype(np.float64)
    return np.dtype(np.bool_) if dt is DType.BOOL else np.dtype(np.int64)


@cache
def _table(dt: DType, bias: int) -> NDArray[np.float64]:
    """Value of every code of a CFP format at `bias`, indexed by code (read-only, cached).

    Codes 0 .. 2^(n-1) - 1 are the non-negative values in increasing order; the upper half mirrors them
    with the sign bit set (code 2^(n-1) is -0.0).
    """
    ebits, mbits = _LAYOUTS[dt]
    nbits = 1 + ebits + mbits
    codes = np.arange(1 << nbits, dtype=np.int64)
    sign = (codes >> (nbits - 1)) & 1
    exp = (codes >> mbits) & ((1 << ebits) - 1)
    frac = (codes & ((1 << mbits) - 1)).astype(np.float64) / (1 << mbits)
    mag = np.where(exp > 0, np.ldexp(1.0 + frac, exp - bias), np.ldexp(frac, 1 - bias))
    values = np.where(sign == 1, -mag, mag)
    values.flags.writeable = False
    return values


def _magnitudes(dt: DType, bias: int) -> NDArray[np.float64]:
    """The non-negative values of a CFP format, increasing; index = code."""
    table = _table(dt, bias)
    return table[: table.size // 2]


# ------------------------------------------------------------------------------------- random bits (SR)


def _mix_int(z: int) -> int:
    """splitmix64 finaliser on one Python int (mod 2^64)."""
    z = ((z ^ (z >> 30)) * _MUL1) & _M64
    z = ((z ^ (z >> 27)) * _MUL2) & _M64
    return z ^ (z >> 31)


def sr_bits(seed: int, core: int, index: int, n: int) -> NDArray[np.uint32]:
    """n pseudo-random 32-bit words for stochastic rounding, a pure function of its arguments.

    A key is hashed from (seed, core, executed-instruction index); element i receives output i of a
    splitmix64 stream started at that key (the high 32 bits of the finalised state). No generator state is
    shared, so the bits do not depend on the order in which the emulator executes cores.
    """
    key = 0
    for word in (seed, core, index):
        key = _mix_int(((key ^ (int(word) & _M64)) + _GOLDEN) & _M64)
    z = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MUL1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MUL2)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)).astype(np.uint32)


# ----------------------------------------------------------------------------------------------- decode


def _as_storage(bits: ArrayLike, dt: DType) -> np.ndarray:
    """`bits` as an array of dt.storage: the storage dtype itself, or raw unsigned bits of the same size."""
    arr = np.asarray(bits)
    storage = dt.storage
    if arr.dtype == storage:
        return arr
    if arr.dtype.kind == "u" and arr.dtype.itemsize == storage.itemsize:
        return arr.view(storage)
    if dt.is_cfp and arr.dtype.kind in "iu":
        limit = 1 << (8 * storage.itemsize)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= limit):
            raise FormatError(f"{dt.asm} codes must lie in 0..{limit - 1}")
        return arr.astype(storage)
    raise FormatError(f"cannot decode an array of {arr.dtype} as {dt.asm} (storage {storage})")


def decode(bits: ArrayLike, dt: DType, bias: int = 0) -> np.ndarray:
    """Exact values of a storage array of `dt`.

    Float types give float64 (every BF16, F32 and CFP value is exact in float64), integer types int64, BOOL
    bool. `bias` is the CFP exponent bias (0..63); other types ignore it. Raw unsigned bits of the storage
    size (uint16 for BF16, uint32 for F32) are accepted and reinterpreted.
    """
    dt = _check_dtype(dt)
    if dt is DType.BOOL:
        return np.asarray(bits) != 0
    arr = _as_storage(bits, dt)
    if dt.is_cfp:
        return _table(dt, _check_bias(bias))[arr]
    with np.errstate(invalid="ignore"):  # ml_dtypes warns when it widens a NaN
        return arr.astype(value_dtype(dt))


# ----------------------------------------------------------------------------------------------- encode


def _to_float64(x: ArrayLike) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore"):  # ml_dtypes warns when it widens a NaN
        return np.asarray(x).astype(np.float64)


def _encode_cfp(
    x: NDArray[np.float64], dt: DType, bias: int, rounding: Round, seed: int, core: int, index: int
) -> np.ndarray:
    if np.isnan(x).any():
        raise FormatError(f"cannot convert NaN to {dt.asm}: CFP formats have no NaN")
    mags = _magnitudes(dt, bias)
    top = mags.size - 1
    a = np.abs(x).ravel()
    neg = np.signbit(x).ravel()
    lo = np.minimum(np.searchsorted(mags, a, side="right") - 1, top)  # mags[lo] <= a (a >= 0)
    hi = np.minimum(lo + 1, top)
    sat = a >= mags[top]
    with np.errstate(invalid="ignore", over="ignore"):
        # Both are exact: mags[lo] <= a < mags[lo + 1], so the difference needs no rounding.
        dist = a - mags[lo]
        gap = mags[hi] - mags[lo]
        if rounding is Round.RNE:
            twice = 2.0 * dist
            up = (twice > gap) | ((twice == gap) & ((lo & 1) == 1))
        else:
            u = sr_bits(seed, core, index, a.size).astype(np.float64)
            up = dist * _TWO32 > u * gap  # P(up) = dist / gap to 2^-32 (gap is a power of two)
    code = np.where(sat, top, lo + (up & ~sat))
    code = code | (neg.astype(np.int64) << (8 * dt.storage.itemsize - 1))
    return code.astype(dt.storage).reshape(x.shape)


def _f32_to_bf16_rne(f: NDArray[np.float32]) -> np.ndarray:
    """RNE float32 -> bfloat16 on the bits, NaN kept (quieted, sign and top payload kept)."""
    b = f.view(np.uint32).astype(np.uint64)
    rounded = (b + np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    nan = (b >> np.uint64(16)) | np.uint64(0x0040)
    out = np.where(np.isnan(f), nan, rounded)
    return out.astype(np.uint16).view(_BF16)


def _f32_to_bf16_sr(f: NDArray[np.float32], seed: int, core: int, index: int) -> np.ndarray:
    """Stochastic float32 -> bfloat16: add 16 random bits below the kept half, then truncate."""
    b = f.view(np.uint32).astype(np.uint64).ravel()
    r = (sr_bits(seed, core, index, b.size) >> np.uint32(16)).astype(np.uint64)
    rounded = (b + r) >> np.uint64(16)
    nan = (b >> np.uint64(16)) | np.uint64(0x0040)
    out = np.where(np.isnan(f.ravel()), nan, rounded)
    return out.astype(np.uint16).view(_BF16).reshape(f.shape)


def _f64_to_f32_sr(x: NDArray[np.float64], seed: int, core: int, index: int) -> NDArray[np.float32]:
    """Stochastic float64 -> float32 between the two float32 neighbours of x; beyond max finite, RNE."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = x.astype(np.float32).ravel()
        xf = x.ravel()
        ff = f.astype(np.float64)
        inexact = np.isfinite(ff) & (ff != xf) & (np.abs(xf) <= _F32_MAX)
        above = ff > xf
        lo = np.where(above, np.nextafter(f, np.float32(-np.inf)), f)
        hi = np.where(above, f, np.nextafter(f, np.float32(np.inf)))
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
        u = sr_bits(seed, core, index, f.size).astype(np.float64)
        up = (xf - lo64) * _TWO32 > u * (hi64 - lo64)
        out = np.where(inexact, np.where(up, hi, lo), f)
    return out.astype(np.float32).reshape(x.shape)


def _encode_int(x: ArrayLike, dt: DType) -> np.ndarray:
    arr = np.asarray(x)
    lo, hi = _INT_RANGE[dt]
    if arr.dtype.kind == "b":
        return arr.astype(dt.storage)
    if arr.dtype.kind == "u":
        if np.iinfo(arr.dtype).max > hi:
            arr = np.minimum(arr, arr.dtype.type(hi))
        return arr.astype(dt.storage)
    if arr.dtype.kind == "i":
        return np.clip(arr.astype(np.int64), lo, hi).astype(dt.storage)
    f = _to_float64(arr)
    with np.errstate(invalid="ignore"):
        t = np.clip(np.trunc(np.where(np.isnan(f), 0.0, f)), lo, hi)
    return t.astype(dt.storage)


def encode(
    x: ArrayLike,
    dt: DType,
    *,
    bias: int = 0,
    rounding: Round = Round.RNE,
    seed: int = 0,
    core: int = 0,
    index: int = 0,
) -> np.ndarray:
    """Round values `x` (any float, int or bool array) into a storage array of `dt`, same shape.

    Float targets round by `rounding` (RNE or SR); SR takes its bits from `sr_bits(seed, core, index, n)`,
    element i of the C-order flattened array using word i.
    - CF8E4, CF8E5, CF16 (with `bias`): saturate to +-max finite on overflow (and for +-inf); a NaN raises
      FormatError; -0.0 and negative values that round to zero give the negative-zero code.
    - BF16: RNE is float64 -> float32 (RNE) -> bfloat16 (RNE), as torch does (and ml_dtypes before 0.7,
      which now rounds float64 once); NaN stays
      NaN, overflow goes to inf. SR rounds the float32-rounded value by adding 16 random bits below the kept
      half and truncating.
    - F32: RNE from float64 (overflow to inf); SR between the float32 neighbours.
    - Integer targets: round toward zero, saturate to the type's range, NaN -> 0 (`rounding` is ignored).
    - BOOL: x != 0 (NaN is True).
    """
    dt = _check_dtype(dt)
    if not isinstance(rounding, Round):
        raise FormatError(f"unknown rounding {rounding!r}: expected isa.table.Round")
    if dt is DType.BOOL:
        return np.asarray(x) != 0
    if dt in _INT_RANGE:
        return _encode_int(x, dt)
    f64 = _to_float64(x)
    if dt.is_cfp:
        return _encode_cfp(f64, dt, _check_bias(bias), rounding, seed, core, index)
    if dt is DType.F32:
        if rounding is Round.SR:
            return _f64_to_f32_sr(f64, seed, core, index)
        with np.errstate(over="ignore"):
            return f64.astype(np.float32)
    # BF16
    with np.errstate(over="ignore"):
        f32 = f64.astype(np.float32)
    if rounding is Round.SR:
        return _f32_to_bf16_sr(f32, seed, core, index)
    return _f32_to_bf16_rne(f32)


def quantize(
    x: ArrayLike,
    dt: DType,
    *,
    bias: int = 0,
    rounding: Round = Round.RNE,
    seed: int = 0,
    core: int = 0,
    index: int = 0,
) -> np.ndarray:
    """`decode(encode(x, ...), dt, bias)`: x rounded to `dt` and returned as values."""
    bits = encode(x, dt, bias=bias, rounding=rounding, seed=seed, core=core, index=index)
    return decode(bits, dt, bias)


# ------------------------------------------------------------------------------------------ format facts


def max_finite(dt: DType, bias: int = 0) -> float:
    """The largest finite value of `dt` (at `bias` for CFP types); for integers the type's maximum."""
    dt = _check_dtype(dt)
    if dt.is_cfp:
        return float(_magnitudes(dt, _check_bias(bias))[-1])
    if dt is DType.F32:
        return _F32_MAX
    if dt is DType.BF16:
        return float(np.array(0x7F7F, dtype=np.uint16).view(_BF16))
    if dt is DType.BOOL:
        return 1.0
    return float(_INT_RANGE[dt][1])


def min_subnormal(dt: DType, bias: int = 0) -> float:
    """The smallest positive value of `dt` (at `bias` for CFP types); 1.0 for integers and BOOL."""
    dt = _check_dtype(dt)
    if dt.is_cfp:
        return float(_magnitudes(dt, _check_bias(bias))[1])
    if dt is DType.F32:
        return 2.0**-149
    if dt is DType.BF16:
        return 2.0**-133
    return 1.0


def choose_bias(x: ArrayLike, dt: DType) -> int:
    """The per-tensor CFP bias for data `x`: the largest bias (finest resolution) at which max|x| does not
    exceed the format's max finite value, clamped to 0..63.

    NaNs are ignored (converting them traps anyway); an infinite value gives 0; all zeros or an empty
    array give 63.
    """
    ebits, mbits = layout(dt)
    a = np.abs(_to_float64(x))
    finite_or_inf = a[~np.isnan(a)]
    amax = float(finite_or_inf.max()) if finite_or_inf.size else 0.0
    biases = np.arange(BIAS_MAX + 1)
    maxes = np.ldexp(2.0 - 2.0**-mbits, (1 << ebits) - 1 - biases)
    ok = np.nonzero(amax <= maxes)[0]
    return int(ok[-1]) if ok.size else 0
