"""Tile handlers of the SIMD unit: elementwise (vbinary, vbinary_s, vunary, vsel, vfill), reductions and
scans, transpose, conversion and gather.

Operands are numpy views over the core's SRAM (`Sram.tile`): rows x cols with the field's row stride
and element stride = itemsize; a broadcast source uses stride 0 along the repeated axis. Arithmetic is
whole-tile numpy:

- float tiles (F32, BF16) are decoded to float64, computed, and rounded once to the destination type by
  `isa.formats.encode` (RNE);
- integer tiles compute on int64 and wrap to the destination width (two's complement), as the table says;
  integer division truncates toward zero and traps (BAD_OPERAND) on a zero divisor;
- BOOL tiles use the logical ops (max = or, min = and); comparisons write BOOL whatever the operand type;
- CFP tiles (CF8E4, CF8E5, CF16) have no bias operand here, so only bit moves take them (vmov, vsel,
  vtrans, vgather, vfill at bias 0); anything else is a BAD_OPERAND, as is any op/type pair that has no
  meaning (bitwise ops on floats, transcendentals on integers, sums of bools).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from isa import formats
from isa.dtypes import DType
from isa.errors import FormatError
from isa.table import VUNARY, Axis, Bcast, Instr, Round
from runtime_emu.core import Core, Handler
from runtime_emu.memory import Fault
from runtime_emu.semantics.common import raiser, skip
from runtime_emu.traps import TrapKind

if TYPE_CHECKING:
    from runtime_emu.emulator import Emulator

_INTS = (DType.I8, DType.I16, DType.I32, DType.U8)
_IEEE = (DType.F32, DType.BF16)
_U8 = np.dtype(np.uint8)
_I32 = np.dtype(np.int32)
Fn = Callable[..., Any]


class _Bad(Exception):
    """An op/type combination with no meaning, found at pre-decode."""


def _kind(dt: DType) -> str:
    if dt is DType.BOOL:
        return "bool"
    if dt in _INTS:
        return "int"
    return "cfp" if dt.is_cfp else "float"


def view_dtype(dt: DType) -> np.dtype:
    """The numpy dtype of a tile view: the storage type, bytes for BOOL (any non-zero byte is true)."""
    return _U8 if dt is DType.BOOL else dt.storage


def values(v: np.ndarray, dt: DType) -> np.ndarray:
    """A tile view's values: float64 for float types, int64 for integers, bool for BOOL."""
    if dt is DType.BOOL:
        return v != 0
    if dt in _INTS:
        return v.astype(np.int64)
    if dt in _IEEE:  # what formats.decode does for them, without its checks
        return v.astype(np.float64)
    return formats.decode(v, dt)


def store(out: np.ndarray, r: Any, dt: DType) -> None:
    """Write values `r` into the destination view: floats rounded (RNE), integers wrapped, bools 0/1."""
    if dt is DType.BOOL or dt in _INTS:
        out[...] = np.asarray(r).astype(out.dtype)
    elif dt is DType.F32:  # RNE from float64, as formats.encode does
        out[...] = r
    else:
        out[...] = formats.encode(r, dt)


def _strides(bc: Bcast, stride: int, w: int) -> tuple[int, int]:
    """(row stride, column stride) of a source view under a broadcast mode."""
    return {Bcast.NONE: (stride, w), Bcast.ROW: (0, w), Bcast.COL: (stride, 0), Bcast.SCALAR: (0, 0)}[bc]


# -- element functions by type class -----------------------------------------------------------------

def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if (b == 0).any():
        raise Fault(TrapKind.BAD_OPERAND, "integer division by zero in a tile")
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def _int_pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if (b < 0).any():
        raise Fault(TrapKind.BAD_OPERAND, "integer power with a negative exponent")
    return np.power(a, b)


_BINARY: dict[str, dict[str, Fn]] = {
    "float": {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
              "min": np.minimum, "pow": np.power},
    "int": {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": _int_div, "max": np.maximum,
            "min": np.minimum, "pow": _int_pow, "and": np.bitwise_and, "or": np.bitwise_or,
            "xor": np.bitwise_xor},
    "bool": {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor, "max": np.logical_or,
             "min": np.logical_and},
}
_UNARY_INT: dict[str, Fn] = {"neg": np.negative, "abs": np.abs, "relu": lambda x: np.maximum(x, 0),
                             "not": np.invert, "floor": lambda x: x, "ceil": lambda x: x}


def _binary_fn(op: str, dt: DType, compare: bool, fn: Fn) -> Fn:
    kind = _kind(dt)
    if kind == "cfp":
        raise _Bad(f"v{op} does not take {dt.asm} tiles: convert CFP tiles with vcvt first")
    if compare:
        return fn
    f = _BINARY[kind].get(op)
    if f is None:
        raise _Bad(f"v{op} does not take {dt.asm} tiles")
    return f


def _scalar(imm: float, dt: DType) -> Any:
    kind = _kind(dt)
    if kind == "float":
        return np.float64(imm)
    if kind == "bool":
        return np.bool_(imm != 0)
    if not np.isfinite(imm):
        raise _Bad(f"immediate {imm} is not an integer for a {dt.asm} tile")
    info = np.iinfo(np.dtype(view_dtype(dt)))
    if not info.min <= int(imm) <= info.max:  # (found by benchmarks/fuzz.py's emu target: 3e38 on an i32 tile)
        raise _Bad(f"immediate {imm} does not fit a {dt.asm} tile ({info.min}..{info.max})")
    return np.int64(int(imm))


# -- handler makers ------------------------------------------------------------------------------------

def _vbinary(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    spec = ins.spec
    dt: DType = d["dt"]
    scalar = spec.semantics == "vbinary_s"
    op = spec.mnemonic[1:-1] if scalar else spec.mnemonic[1:]
    assert spec.fn is not None
    fn = _binary_fn(op, dt, spec.result_bool, spec.fn)
    rows, cols, rd, ra = d["rows"], d["cols"], d["rd"], d["ra"]
    vt, w = view_dtype(dt), dt.itemsize
    odt = DType.BOOL if spec.result_bool else dt
    ovt, ow, sd = view_dtype(odt), odt.itemsize, d["sd"]
    ars, acs = _strides(d["bca"], d["sa"], w)
    mn = spec.mnemonic
    if scalar:
        imm = _scalar(d["imm"], dt)

        def hs(core: Core, ops: Any, pc: int, t: int) -> int:
            regs = core.regs
            sram = core.sram
            a = values(sram.tile(regs[ra], rows, cols, ars, acs, vt, False, f"{mn} a"), dt)
            r = fn(a, imm)
            store(sram.tile(regs[rd], rows, cols, sd, ow, ovt, True, f"{mn} d"), r, odt)
            return pc + 1

        return hs
    rb = d["rb"]
    brs, bcs = _strides(d["bcb"], d["sb"], w)

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        a = values(sram.tile(regs[ra], rows, cols, ars, acs, vt, False, f"{mn} a"), dt)
        b = values(sram.tile(regs[rb], rows, cols, brs, bcs, vt, False, f"{mn} b"), dt)
        r = fn(a, b)
        store(sram.tile(regs[rd], rows, cols, sd, ow, ovt, True, f"{mn} d"), r, odt)
        return pc + 1

    return h


def _vunary(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dt: DType = d["dt"]
    op = ins.spec.mnemonic[1:]
    kind = _kind(dt)
    rows, cols, rd, ra, sd = d["rows"], d["cols"], d["rd"], d["ra"], d["sd"]
    vt, w = view_dtype(dt), dt.itemsize
    ars, acs = _strides(d["bca"], d["sa"], w)
    mn = ins.spec.mnemonic
    if op == "mov":  # a bit copy, any type
        def hm(core: Core, ops: Any, pc: int, t: int) -> int:
            regs = core.regs
            sram = core.sram
            a = sram.tile(regs[ra], rows, cols, ars, acs, vt, False, f"{mn} a").copy()
            sram.tile(regs[rd], rows, cols, sd, w, vt, True, f"{mn} d")[...] = a
            return pc + 1

        return hm
    if kind == "float" and op != "not":
        fn = VUNARY[op][0]
    elif kind == "int" and op in _UNARY_INT:
        fn = _UNARY_INT[op]
    elif kind == "bool" and op == "not":
        fn = np.logical_not
    else:
        raise _Bad(f"{mn} does not take {dt.asm} tiles")

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        r = fn(values(sram.tile(regs[ra], rows, cols, ars, acs, vt, False, f"{mn} a"), dt))
        store(sram.tile(regs[rd], rows, cols, sd, w, vt, True, f"{mn} d"), r, dt)
        return pc + 1

    return h


def _vsel(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dt: DType = d["dt"]
    rows, cols, rd, rc, ra, rb = d["rows"], d["cols"], d["rd"], d["rc"], d["ra"], d["rb"]
    sd, sc, sa, sb = d["sd"], d["sc"], d["sa"], d["sb"]
    vt, w = view_dtype(dt), dt.itemsize

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        c = sram.tile(regs[rc], rows, cols, sc, 1, _U8, False, "vsel c") != 0
        a = sram.tile(regs[ra], rows, cols, sa, w, vt, False, "vsel a")
        b = sram.tile(regs[rb], rows, cols, sb, w, vt, False, "vsel b")
        sram.tile(regs[rd], rows, cols, sd, w, vt, True, "vsel d")[...] = np.where(c, a, b)
        return pc + 1

    return h


def _vfill(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dt: DType = d["dt"]
    rows, cols, rd, sd = d["rows"], d["cols"], d["rd"], d["sd"]
    vt, w = view_dtype(dt), dt.itemsize
    value = formats.encode(np.array([d["imm"]]), dt).astype(vt)[0]  # CFP at bias 0

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        core.sram.tile(core.regs[rd], rows, cols, sd, w, vt, True, "vfill d")[...] = value
        return pc + 1

    return h


def _vreduce(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dt: DType = d["dt"]
    op = ins.spec.mnemonic[2:]
    kind = _kind(dt)
    scan = ins.spec.semantics == "vscan"
    if scan:
        op = ins.spec.mnemonic[1:]
    if kind == "cfp" or (kind == "bool" and op in ("sum", "cumsum")):
        raise _Bad(f"{ins.spec.mnemonic} does not take {dt.asm} tiles")
    rows, cols, rd, ra, sd, sa = d["rows"], d["cols"], d["rd"], d["ra"], d["sd"], d["sa"]
    axis = 1 if d["axis"] is Axis.ROW else 0
    vt, w = view_dtype(dt), dt.itemsize
    arg = op.startswith("arg")
    odt = DType.I32 if arg else dt
    ovt, ow = view_dtype(odt), odt.itemsize
    orows, ocols = (rows, cols) if scan else ((rows, 1) if axis == 1 else (1, cols))
    reducers: dict[str, Fn] = {"sum": np.sum, "max": np.max, "min": np.min, "argmax": np.argmax,
                               "argmin": np.argmin, "cumsum": np.cumsum, "cummax": np.maximum.accumulate}
    fn = reducers[op]
    mn = ins.spec.mnemonic

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        a = values(sram.tile(regs[ra], rows, cols, sa, w, vt, False, f"{mn} a"), dt)
        r = fn(a, axis=axis)  # float sums are float64 (pairwise), integer sums int64
        out = sram.tile(regs[rd], orows, ocols, sd, ow, ovt, True, f"{mn} d")
        store(out, np.reshape(r, (orows, ocols)), odt)
        return pc + 1

    return h


def _vtrans(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dt: DType = d["dt"]
    rows, cols, rd, ra, sd, sa = d["rows"], d["cols"], d["rd"], d["ra"], d["sd"], d["sa"]
    vt, w = view_dtype(dt), dt.itemsize

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        a = sram.tile(regs[ra], rows, cols, sa, w, vt, False, "vtrans a").T.copy()
        sram.tile(regs[rd], cols, rows, sd, w, vt, True, "vtrans d")[...] = a
        return pc + 1

    return h


def _vcvt(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dtd: DType = d["dtd"]
    dts: DType = d["dts"]
    rows, cols, rd, ra, sd, sa = d["rows"], d["cols"], d["rd"], d["ra"], d["sd"], d["sa"]
    rbias, rseed = d["rbias"], d["rseed"]
    rnd: Round = d["rnd"]
    svt, sw = view_dtype(dts), dts.itemsize
    dvt, dw = view_dtype(dtd), dtd.itemsize
    seed0 = emu.seed << 32

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        bias = regs[rbias]
        x = sram.tile(regs[ra], rows, cols, sa, sw, svt, False, "vcvt a")
        v = formats.decode(x, dts, (bias >> 8) & 63) if dts.is_cfp else values(x, dts)
        try:
            if rnd is Round.SR:
                r = formats.encode(v, dtd, bias=bias & 63, rounding=rnd, seed=(regs[rseed] + seed0) & (2**64 - 1),
                                   core=core.id, index=core.instructions)
            else:
                r = formats.encode(v, dtd, bias=bias & 63)
        except FormatError as e:
            raise Fault(TrapKind.FORMAT, str(e)) from None
        sram.tile(regs[rd], rows, cols, sd, dw, dvt, True, "vcvt d")[...] = r
        return pc + 1

    return h


def _vgather(ins: Instr, emu: Emulator) -> Handler:
    d = ins.as_dict()
    dt: DType = d["dt"]
    n, cols, rd, rt, ri, sd, st, nt = d["n"], d["cols"], d["rd"], d["rt"], d["ri"], d["sd"], d["st"], d["nt"]
    if nt == 0:
        raise _Bad("vgather needs a table of nt > 0 rows")
    vt, w = view_dtype(dt), dt.itemsize

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        regs = core.regs
        sram = core.sram
        idx = sram.tile(regs[ri], 1, n, 0, 4, _I32, False, "vgather indices")[0].astype(np.int64)
        bad = np.flatnonzero((idx < 0) | (idx >= nt))
        if bad.size:
            i = int(bad[0])
            raise Fault(TrapKind.BAD_OPERAND, f"vgather index {int(idx[i])} at position {i} is outside "
                                              f"the table's {nt} rows")
        table = sram.tile(regs[rt], nt, cols, st, w, vt, False, "vgather table")
        rows = table[idx]
        sram.tile(regs[rd], n, cols, sd, w, vt, True, "vgather d")[...] = rows
        return pc + 1

    return h


_MAKERS: dict[str, Callable[[Instr, Emulator], Handler]] = {
    "vbinary": _vbinary, "vbinary_s": _vbinary, "vunary": _vunary, "vsel": _vsel, "vfill": _vfill,
    "vreduce": _vreduce, "vscan": _vreduce, "vtrans": _vtrans, "vcvt": _vcvt, "vgather": _vgather,
}


def prepare(ins: Instr, emu: Emulator, ncode: int) -> tuple[Handler, Any]:
    """The handler of a SIMD tile instruction (operand checks at pre-decode; nothing in timing-only mode)."""
    d = ins.as_dict()
    rows = d.get("rows", d.get("n"))
    cols = d.get("cols")
    if rows == 0 or cols == 0:
        return raiser(TrapKind.BAD_OPERAND, f"{ins.spec.mnemonic} of an empty tile ({rows} x {cols})"), None
    try:
        handler = _MAKERS[ins.spec.semantics](ins, emu)
    except _Bad as e:
        return raiser(TrapKind.BAD_OPERAND, str(e)), None
    except FormatError as e:
        return raiser(TrapKind.FORMAT, str(e)), None
    if emu.timing_only:
        return skip, None
    return handler, None
