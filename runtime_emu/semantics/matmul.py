"""The matrix multiply-accumulate handler, `mma`, and its exact, host-independent rounding.

D (f32, m x n) = [D +] A (m x k) @ B (k x n, or n x k stored transposed with tb=1), operands BF16, CF8E4,
CF8E5 (biases in register rbias: bits 0-5 for A, 8-13 for B) or F32. The result is the exact value of
sum_k a_ik * b_kj (+ d_ij) rounded once to float32 (RNE), whatever the host's BLAS:

1. Operands are decoded to float64; every product of two such values is exact in float64 (at most 48
   significant bits, exponents far inside float64's range).
2. r = A @ B (+ D) by numpy's float64 matmul, and a bound on its error: any summation order of K + 1 terms
   is within gamma_(K+1) * sum |terms| of the exact sum, so |r - exact| <= (K + 2) * 2^-52 * (|A| @ |B| + |D|).
3. Often r is exact: every product a_ik * b_kj is a multiple of 2^(qa_i + qb_j), where qa_i is the
   exponent of the lowest set bit over row i of A (qb_j over column j of B), so when
   |A| @ |B| (+ |D|) < 2^(qa_i + qb_j + 53) every partial sum, in any order, is exactly representable.
   That is the common case for BF16 and CFP8 operands, whose sums are often exact float32 midpoints.
   When the operands' type is known to have p significant bits (8 for BF16, 24 for FP32 accumulators),
   the handler uses the cheaper lower bound e - p on that exponent, from the binary exponent e of
   `np.frexp` (|x| = m 2^e, 1/2 <= m < 1, so x is a multiple of 2^(e - p)): a smaller q only makes
   step 3's test stricter, never wrong, and the result is the same exact value either way.
4. Otherwise r rounds to the same float32 as the exact sum unless a float32 rounding boundary (the midpoint
   of two neighbouring float32 values) lies within the bound of r. Those rare elements are recomputed
   exactly: `math.fsum` of the products gives the correctly rounded float64 s of the exact sum; when s is
   itself a float32 midpoint, the sign of the exact remainder fsum(products - s) decides the direction.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from isa import formats
from isa.dtypes import DType
from isa.table import Instr
from runtime_emu.core import Core, Handler
from runtime_emu.semantics.common import raiser, skip
from runtime_emu.traps import TrapKind

if TYPE_CHECKING:
    from runtime_emu.emulator import Emulator

_MXU = (DType.BF16, DType.CF8E4, DType.CF8E5, DType.F32)
_EPS = 2.0**-52
_F32_TOP = 2.0**128  # the float32 "value" of inf for midpoint arithmetic: max + ulp
_F32 = np.dtype(np.float32)


def _as64(f: np.ndarray) -> np.ndarray:
    """float32 values as float64 with +-inf replaced by +-2^128 (one ulp beyond the largest float32)."""
    x = f.astype(np.float64)
    inf = np.isinf(x)
    if inf.any():
        x[inf] = np.copysign(_F32_TOP, x[inf])
    return x


def _exact_f32(terms: list[float]) -> np.float32:
    """The exact sum of float64 `terms` rounded once to float32 (RNE)."""
    s = math.fsum(terms)
    f = np.float32(s)
    fs = float(f)
    if fs == s or not math.isfinite(s):
        return f
    lo, hi = (np.nextafter(f, np.float32(-np.inf)), f) if fs > s else (f, np.nextafter(f, np.float32(np.inf)))
    lo64, hi64 = _as64(np.array([lo, hi], dtype=np.float32))
    if s != (lo64 + hi64) / 2:
        return f  # s is not a midpoint: rounding s and rounding the exact sum agree
    rest = math.fsum([*terms, -s])  # exact remainder's sign: which side of the midpoint the sum lies
    if rest > 0:
        return np.float32(hi)
    if rest < 0:
        return np.float32(lo)
    return f  # a true tie: RNE already chose the even neighbour


_F32_BITS = int(np.finfo(np.float32).nmant) + 1  # significant bits, the hidden bit included
# of the matrix unit's operand types
_SIGNIFICANT = {DType.BF16: int(ml_dtypes.finfo(ml_dtypes.bfloat16).nmant) + 1, DType.F32: _F32_BITS,
                **{dt: formats.layout(dt)[1] + 1 for dt in (DType.CF8E4, DType.CF8E5)}}
_NONE = 1 << 20  # the low-bit exponent of a zero: it constrains nothing
_BAD = -(1 << 20)  # of an inf or NaN: nothing is exact
_U52 = np.uint64((1 << 52) - 1)
_U53 = np.uint64(1 << 52)
_U11 = np.uint64(0x7FF)
_S52 = np.uint64(52)


def low_bit_exponent(x: np.ndarray) -> np.ndarray:
    """Per element of a float64 array, the exponent p of its lowest set bit (x is a multiple of 2^p)."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    ef = (bits >> _S52) & _U11
    m = bits & _U52
    m = np.where(ef > 0, m | _U53, m)
    low = m & (~m + np.uint64(1))  # the lowest set bit (two's complement of m, as uint64)
    lowexp = (low.astype(np.float64).view(np.uint64) >> _S52).astype(np.int64) - 1023
    p = np.maximum(ef.astype(np.int64), 1) - 1075 + lowexp
    return np.where(m == 0, _NONE, np.where(ef == _U11, _BAD, p))


def low_bit_bound(x: np.ndarray, bits: int | None) -> np.ndarray:
    """A lower bound on `low_bit_exponent(x)` for values of at most `bits` significant bits (exact when
    `bits` is None)."""
    if bits is None:
        return low_bit_exponent(x)
    _, e = np.frexp(x)
    return np.where(x == 0, _NONE, e.astype(np.int64) - bits)


def exact_matmul(a: np.ndarray, b: np.ndarray, acc: np.ndarray | None = None,
                 bits: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """float32 of the exact a @ b (+ acc) for float64 a (m x k), b (k x n) whose products are exact;
    `bits`: the significant bits of a's and b's type when known (the accumulator is float32)."""
    k = a.shape[1]
    r = a @ b
    if acc is not None:
        r += acc
    if _exact_whole(a, b, acc, bits):
        return r.astype(np.float32)
    total = np.abs(a) @ np.abs(b)
    if acc is not None:
        total += np.abs(acc)
    f = r.astype(np.float32)
    bound = total * ((k + 2) * _EPS)
    f64 = _as64(f)
    lo = _as64(np.nextafter(f, np.float32(-np.inf)))
    hi = _as64(np.nextafter(f, np.float32(np.inf)))
    doubt = np.isfinite(r) & np.isfinite(bound) & (
        (r - bound <= (f64 + lo) / 2) | (r + bound >= (f64 + hi) / 2))
    doubt &= bound > 0
    if not doubt.any():
        return f
    doubt &= ~_exact(a, b, acc, total, bits)
    if doubt.any():
        for i, j in zip(*np.nonzero(doubt), strict=True):
            terms = (a[i, :] * b[:, j]).tolist()
            if acc is not None:
                terms.append(float(acc[i, j]))
            f[i, j] = _exact_f32(terms)
    return f


def _exact_whole(a: np.ndarray, b: np.ndarray, acc: np.ndarray | None,
                 bits: tuple[int | None, int | None]) -> bool:
    """Step 3 over the whole operation at once, with scalars: whether every partial sum of every element is
    exact, because k * max|a| * max|b| (+ max|acc|) bounds every |A| @ |B| (+ |D|) and the smallest
    operand exponents bound every element's q from below. The common case, in a few reductions; when it
    fails, the per-element test and the midpoint check decide as before. Only for known significand widths
    (a zero's frexp exponent, 0, only lowers the bound: never wrong)."""
    pa, pb = bits
    if pa is None or pb is None:
        return False
    top = a.shape[1] * float(np.abs(a).max()) * float(np.abs(b).max())
    q = int(np.frexp(a)[1].min()) - pa + int(np.frexp(b)[1].min()) - pb
    if acc is not None:
        top += float(np.abs(acc).max())
        q = min(q, int(np.frexp(acc)[1].min()) - _F32_BITS)
    if not math.isfinite(top):
        return False  # an inf or NaN operand (frexp gives them exponent 0): the careful path decides
    return q + 53 > 1023 or top * (1.0 + 2.0**-30) < math.ldexp(1.0, max(q + 53, -1074))


def _exact(a: np.ndarray, b: np.ndarray, acc: np.ndarray | None, total: np.ndarray,
           bits: tuple[int | None, int | None]) -> np.ndarray:
    """Where r is exact: every partial sum is a multiple of 2^q below 2^(q + 53) (a margin for total's own
    rounding error)."""
    q = low_bit_bound(a, bits[0]).min(axis=1)[:, None] + low_bit_bound(b, bits[1]).min(axis=0)[None, :]
    if acc is not None:
        q = np.minimum(q, low_bit_bound(acc, None if bits[0] is None else _F32_BITS))
    return total * (1.0 + 2.0**-30) < np.ldexp(1.0, np.clip(q + 53, -1070, 1023).astype(np.int32))


def _whole_from(k: int, amax: float, bmax: float, dmax: float | None, ea: int, eb: int, ed: int, pa: int,
                pb: int) -> bool:
    """`_exact_whole`'s test from its reductions (the same operations on the same values): maxima of |a|,
    |b|, |acc| and minima of their frexp exponents; `dmax` None without an accumulator."""
    top = k * amax * bmax
    q = ea - pa + eb - pb
    if dmax is not None:
        top += dmax
        q = min(q, ed - _F32_BITS)
    if not math.isfinite(top):
        return False
    return q + 53 > 1023 or top * (1.0 + 2.0**-30) < math.ldexp(1.0, max(q + 53, -1074))


class _Scratch:
    """Float64 working arrays of one mma shape, reused by every call (the engine runs one handler at a time).

    A, B and the accumulator live back to back in `flat`, so `_exact_whole`'s six reductions (max |x| and
    min frexp exponent of each operand) are two `reduceat` calls over one buffer."""

    __slots__ = ("flat", "a", "b", "d", "mant", "exp", "mag", "offsets")

    def __init__(self, m: int, n: int, k: int, acc: bool, tb: bool) -> None:
        na, nb = m * k, k * n
        self.flat = np.empty(na + nb + (m * n if acc else 0), dtype=np.float64)
        self.a = self.flat[:na].reshape(m, k)
        self.b = self.flat[na:na + nb].reshape((n, k) if tb else (k, n))
        self.d = self.flat[na + nb:].reshape(m, n) if acc else None
        self.mant = np.empty_like(self.flat)
        self.exp = np.empty(self.flat.shape, dtype=np.intc)
        self.mag = np.empty_like(self.flat)
        self.offsets = np.array([0, na, na + nb] if acc else [0, na], dtype=np.intp)


def _scratch(emu: Emulator, m: int, n: int, k: int, acc: bool, tb: bool) -> _Scratch:
    """The emulator's working arrays for one mma shape (shared by its instructions of that shape)."""
    key = (m, n, k, acc, tb)
    sc = emu.scratch.get(key)
    if sc is None:
        sc = emu.scratch[key] = _Scratch(m, n, k, acc, tb)
    return sc


def _mma(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dt: DType = d["dt"]
    m, n, k = d["m"], d["n"], d["k"]
    rd, ra, rb, rbias = d["rd"], d["ra"], d["rb"], d["rbias"]
    sd, sa, sb = d["sd"], d["sa"], d["sb"]
    acc, tb = bool(d["acc"]), bool(d["tb"])
    st = dt.storage
    w = st.itemsize
    cfp = dt.is_cfp
    p = _SIGNIFICANT[dt]
    if not cfp:
        return _mma_ieee(emu, m, n, k, rd, ra, rb, sd, sa, sb, acc, tb, st, p)

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        av = sram.tile(regs[ra], m, k, sa, w, st, False, "mma A")
        bv = sram.tile(regs[rb], n, k, sb, w, st, False, "mma B") if tb else \
            sram.tile(regs[rb], k, n, sb, w, st, False, "mma B")
        bias = regs[rbias]
        a64 = formats.decode(av, dt, bias & 63)
        b64 = formats.decode(bv, dt, (bias >> 8) & 63)
        if tb:
            b64 = b64.T
        dv = sram.tile(regs[rd], m, n, sd, 4, _F32, True, "mma D")
        dv[...] = exact_matmul(a64, b64, dv.astype(np.float64) if acc else None, (p, p))
        return pc + 1

    return h


def _mma_ieee(emu: Emulator, m: int, n: int, k: int, rd: int, ra: int, rb: int, sd: int, sa: int, sb: int,
              acc: bool, tb: bool, st: np.dtype, p: int) -> Handler:
    """The mma handler for BF16 and F32 operands, which widen exactly to float64 (what formats.decode does,
    without its per-call errstate): `exact_matmul`'s result, with its whole-operation test done on the
    shape's scratch arrays (the same reductions of the same values, so the same decision)."""
    w = st.itemsize
    sc = _scratch(emu, m, n, k, acc, tb)
    flat, a, b, dacc, mant, exp, mag, offsets = sc.flat, sc.a, sc.b, sc.d, sc.mant, sc.exp, sc.mag, sc.offsets
    bm = b.T if tb else b  # the k x n operand
    brows, bcols = (n, k) if tb else (k, n)
    frexp, absolute, minat, maxat = np.frexp, np.abs, np.minimum.reduceat, np.maximum.reduceat

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        a[...] = sram.tile(regs[ra], m, k, sa, w, st, False, "mma A")
        b[...] = sram.tile(regs[rb], brows, bcols, sb, w, st, False, "mma B")
        dv = sram.tile(regs[rd], m, n, sd, 4, _F32, True, "mma D")
        r = a @ bm
        if dacc is not None:
            dacc[...] = dv
            r += dacc
        frexp(flat, out=(mant, exp))
        lows = minat(exp, offsets).tolist()
        highs = maxat(absolute(flat, out=mag), offsets).tolist()
        if _whole_from(k, highs[0], highs[1], highs[2] if dacc is not None else None, lows[0], lows[1],
                       lows[2] if dacc is not None else 0, p, p):
            dv[...] = r  # float64 -> float32 (RNE), as r.astype(np.float32)
        else:
            dv[...] = exact_matmul(a, bm, dacc, (p, p))
        return pc + 1

    return h


def prepare(ins: Instr, emu: Emulator, ncode: int) -> tuple[Handler, Any]:
    """The handler of an `mma` (operand checks at pre-decode; nothing in timing-only mode)."""
    dt: DType = ins["dt"]
    if dt not in _MXU:
        return raiser(TrapKind.BAD_OPERAND, f"the matrix unit does not take {dt.asm} operands "
                                            f"(it takes {', '.join(x.asm for x in _MXU)})"), None
    if 0 in (ins["m"], ins["n"], ins["k"]):
        return raiser(TrapKind.BAD_OPERAND, f"mma of a zero dimension (m={ins['m']}, n={ins['n']}, "
                                            f"k={ins['k']})"), None
    if emu.timing_only:
        return skip, None
    return _mma(ins, emu), None
