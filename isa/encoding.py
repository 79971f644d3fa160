"""Binary encoding of instructions, derived from the instruction table.

Every instruction is one 128-bit little-endian word (16 bytes): bits [0, 8) hold the opcode and each
field sits at the bit range `spec.layout` gives it. Field kinds encode as:

- REG: the register number, 5 bits;  UIMM and TARGET: unsigned;  SIMM: two's complement;
- F32: the IEEE float32 bits (NaN is always the canonical quiet NaN 0x7fc00000);
- DTYPE: `DType.value`;  ENUM: `member.value`.

Every bit outside the opcode and the instruction's fields is zero; `decode` rejects words where it is
not, as well as unknown opcodes and out-of-range dtype or enum codes, so decoding is the exact inverse
of encoding.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from enum import Enum
from typing import Any

from isa.dtypes import DType
from isa.errors import EncodingError
from isa.table import BY_MNEMONIC, BY_OPCODE, OPCODE_BITS, WORD_BYTES, Field, Instr, InstrSpec, Kind

# The one NaN object every F32 field holds, so that Instr equality (tuple equality tries identity
# before ==) treats two NaN immediates as equal.
NAN: float = float("nan")
_NAN_BITS = 0x7FC00000


def f32_bits(value: float) -> int:
    """The float32 bits of `value` (which must be float32-representable or NaN)."""
    if math.isnan(value):
        return _NAN_BITS
    return int(struct.unpack("<I", struct.pack("<f", value))[0])


def _bits_f32(bits: int) -> float:
    value = float(struct.unpack("<f", struct.pack("<I", bits))[0])
    if math.isnan(value):
        if bits != _NAN_BITS:
            raise EncodingError(f"F32 immediate 0x{bits:08x} is a non-canonical NaN (only 0x7fc00000)")
        return NAN
    return value


def to_f32(value: float) -> float:
    """`value` rounded to the nearest float32 (NaN becomes the shared `NAN`); raises on overflow."""
    if math.isnan(value):
        return NAN
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        raise EncodingError(f"{value!r} is too large for a float32") from None


def field_range(f: Field) -> tuple[int, int]:
    """The inclusive (low, high) range of an integer-valued field (REG, UIMM, SIMM, TARGET)."""
    if f.kind is Kind.SIMM:
        return -(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1
    return 0, (1 << f.bits) - 1


_INTS = frozenset((Kind.REG, Kind.UIMM, Kind.SIMM, Kind.TARGET))


def check_field(spec: InstrSpec, f: Field, value: Any) -> Any:
    """`value` converted to the field's in-memory form and range-checked; raises EncodingError.

    Accepted inputs: REG an int or 'r5'; UIMM/SIMM/TARGET an int; F32 a float or int (rounded to
    float32); DTYPE a DType or its assembly name; ENUM a member of the field's enum or its name.
    """
    kind = f.kind
    if kind in _INTS and type(value) is int:  # the common case first: no message is built unless needed
        lo, hi = field_range(f)
        if lo <= value <= hi:
            return value
    where = f"{spec.mnemonic}: field {f.name}"
    if kind is Kind.REG and isinstance(value, str):
        text = value.strip().lower()
        if not (text.startswith("r") and text[1:].isdigit()):
            raise EncodingError(f"{where}: expected a register r0..r31, got {value!r}")
        value = int(text[1:])
    if kind in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodingError(f"{where}: expected an integer, got {value!r}")
        lo, hi = field_range(f)
        if not lo <= value <= hi:
            what = "register" if kind is Kind.REG else f"{f.bits}-bit {kind.value}"
            raise EncodingError(f"{where}: {value} is out of range for a {what} ({lo}..{hi})")
        return int(value)
    if kind is Kind.F32:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EncodingError(f"{where}: expected a number, got {value!r}")
        try:
            return to_f32(float(value))
        except EncodingError as e:
            raise EncodingError(f"{where}: {e}") from None
    if kind is Kind.DTYPE:
        if isinstance(value, str):
            try:
                value = DType.from_asm(value)
            except KeyError:
                names = ", ".join(d.asm for d in DType)
                raise EncodingError(f"{where}: unknown dtype {value!r}; expected one of {names}") from None
        if not isinstance(value, DType):
            raise EncodingError(f"{where}: expected a DType, got {value!r}")
        if value.value >= 1 << f.bits:
            raise EncodingError(f"{where}: dtype {value.asm} does not fit in {f.bits} bits")
        return value
    if kind is Kind.ENUM:
        enum = f.enum
        assert enum is not None, where
        if isinstance(value, str):
            try:
                value = enum[value.upper()]
            except KeyError:
                names = ", ".join(m.name.lower() for m in enum)
                raise EncodingError(f"{where}: unknown value {value!r}; expected one of {names}") from None
        if not isinstance(value, enum):
            raise EncodingError(f"{where}: expected a {enum.__name__} member, got {value!r}")
        if not 0 <= int(value.value) < 1 << f.bits:
            raise EncodingError(f"{where}: {value} does not fit in {f.bits} bits")
        return value
    raise AssertionError(f"{where}: unknown field kind {kind}")


_Plan = tuple[frozenset[str], tuple[tuple[str, Any, bool, int, int, Any, Field], ...]]


def _plan(spec: InstrSpec) -> _Plan:
    """Per spec, once: its field names and, per field, (name, default, integer-valued, low, high, the type
    a value may have to be taken as it is (a DType or enum whose every member fits; else None), field)."""
    plan = _PLANS.get(spec.mnemonic)
    if plan is None:
        rows = []
        for f in spec.fields:
            integer = f.kind in _INTS
            lo, hi = field_range(f) if integer else (0, 0)
            members = DType if f.kind is Kind.DTYPE else f.enum if f.kind is Kind.ENUM else None
            whole = members is not None and all(0 <= int(m.value) < 1 << f.bits for m in members)
            rows.append((f.name, f.default, integer, lo, hi, members if whole else None, f))
        plan = _PLANS[spec.mnemonic] = (frozenset(f.name for f in spec.fields), tuple(rows))
    return plan


_PLANS: dict[str, _Plan] = {}


def make(mnemonic: str, **fields: Any) -> Instr:
    """Build an instruction by mnemonic and field values, filling defaults and checking every range.

    Raises EncodingError naming the mnemonic and the field for an unknown mnemonic or field, a
    missing field or a value that does not fit (see `check_field` for the accepted value forms).
    """
    spec = BY_MNEMONIC.get(mnemonic)
    if spec is None:
        raise EncodingError(f"unknown mnemonic {mnemonic!r}")
    names, plan = _plan(spec)
    if not names.issuperset(fields):
        name = next(n for n in fields if n not in names)
        raise EncodingError(f"{mnemonic}: unknown field {name!r}; fields are "
                            f"{', '.join(f.name for f in spec.fields) or '(none)'}")
    args: list[Any] = []
    get, append = fields.get, args.append
    for name, default, integer, lo, hi, typ, f in plan:
        value = get(name, default)
        # the common cases without check_field's call: an in-range int, a member of a DType or enum that fits
        if integer:
            if type(value) is int and lo <= value <= hi:
                append(value)
                continue
        elif typ is not None and type(value) is typ:
            append(value)
            continue
        if value is None:
            raise EncodingError(f"{mnemonic}: missing field {name}")
        append(check_field(spec, f, value))
    return Instr(spec, tuple(args))


def _field_code(f: Field, value: Any) -> int:
    kind = f.kind
    if kind is Kind.F32:
        return f32_bits(value)
    if kind in (Kind.DTYPE, Kind.ENUM):
        return int(value.value)
    return int(value) & ((1 << f.bits) - 1)


def encode(instr: Instr) -> bytes:
    """The 16-byte little-endian word of `instr` (its fields are range-checked first)."""
    spec = instr.spec
    if len(instr.args) != len(spec.fields):
        raise EncodingError(f"{spec.mnemonic}: {len(instr.args)} values for {len(spec.fields)} fields")
    word = spec.opcode
    for f, (_, lo, _hi), value in zip(spec.fields, spec.layout, instr.args, strict=True):
        checked = check_field(spec, f, value)
        if f.kind is Kind.F32 and checked is not NAN and checked != value:
            raise EncodingError(f"{spec.mnemonic}: field {f.name}: {value!r} is not a float32 value "
                                "(make() rounds it)")
        word |= _field_code(f, checked) << lo
    return word.to_bytes(WORD_BYTES, "little")


def _decode_field(spec: InstrSpec, f: Field, code: int) -> Any:
    kind = f.kind
    if kind is Kind.SIMM and code >> (f.bits - 1):
        return code - (1 << f.bits)
    if kind is Kind.F32:
        return _bits_f32(code)
    if kind is Kind.DTYPE:
        try:
            return DType(code)
        except ValueError:
            raise EncodingError(f"{spec.mnemonic}: field {f.name}: {code} is not a dtype code") from None
    if kind is Kind.ENUM:
        assert f.enum is not None
        enum: type[Enum] = f.enum
        try:
            return enum(code)
        except ValueError:
            raise EncodingError(f"{spec.mnemonic}: field {f.name}: {code} is not a "
                                f"{enum.__name__} code") from None
    return code


def decode(word: bytes) -> Instr:
    """The instruction of one 16-byte word; raises EncodingError for bytes that are no instruction."""
    if len(word) != WORD_BYTES:
        raise EncodingError(f"an instruction word is {WORD_BYTES} bytes, got {len(word)}")
    value = int.from_bytes(word, "little")
    opcode = value & ((1 << OPCODE_BITS) - 1)
    spec = BY_OPCODE.get(opcode)
    if spec is None:
        raise EncodingError(f"unknown opcode {opcode}")
    end = spec.layout[-1][2] if spec.layout else OPCODE_BITS
    if value >> end:
        raise EncodingError(f"{spec.mnemonic}: nonzero bits beyond its fields (bit {end} and up)")
    args = tuple(_decode_field(spec, f, (value >> lo) & ((1 << (hi - lo)) - 1))
                 for f, (_, lo, hi) in zip(spec.fields, spec.layout, strict=True))
    return Instr(spec, args)


def encode_code(seq: Iterable[Instr]) -> bytes:
    """The concatenated words of a sequence of instructions."""
    return b"".join(encode(i) for i in seq)


def decode_code(data: bytes) -> tuple[Instr, ...]:
    """The instructions of concatenated words; raises EncodingError (with the index) on a bad word."""
    if len(data) % WORD_BYTES:
        raise EncodingError(f"code of {len(data)} bytes is not a whole number of {WORD_BYTES}-byte words")
    out = []
    for i in range(0, len(data), WORD_BYTES):
        try:
            out.append(decode(data[i:i + WORD_BYTES]))
        except EncodingError as e:
            raise EncodingError(f"instruction {i // WORD_BYTES}: {e}") from None
    return tuple(out)
