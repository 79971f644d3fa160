"""Encoding, decoding and canonical text of every instruction in the table (property tests)."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isa.asm import assemble
from isa.dtypes import DType
from isa.encoding import NAN, decode, decode_code, encode, encode_code, make, to_f32
from isa.errors import EncodingError
from isa.table import BY_MNEMONIC, INSTRUCTIONS, WORD_BYTES, Bcast, Field, Instr, InstrSpec, Kind
from isa.text import format_instr

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def field_values(f: Field) -> st.SearchStrategy[Any]:
    """Every valid value of one field, derived from its kind and bit width."""
    if f.kind is Kind.REG:
        return st.integers(0, 31)
    if f.kind in (Kind.UIMM, Kind.TARGET):
        return st.integers(0, (1 << f.bits) - 1)
    if f.kind is Kind.SIMM:
        return st.integers(-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1)
    if f.kind is Kind.F32:
        return st.floats(width=32, allow_nan=True, allow_infinity=True).map(to_f32)
    if f.kind is Kind.DTYPE:
        return st.sampled_from([d for d in DType if d.value < 1 << f.bits])
    assert f.enum is not None, f.name
    return st.sampled_from(list(f.enum))


def instrs(spec: InstrSpec) -> st.SearchStrategy[Instr]:
    """Instructions of one spec with arbitrary valid field values."""
    return st.tuples(*(field_values(f) for f in spec.fields)).map(lambda args: Instr(spec, tuple(args)))


@pytest.mark.parametrize("spec", INSTRUCTIONS, ids=lambda s: s.mnemonic)
@SETTINGS
@given(data=st.data())
def test_roundtrip_every_instruction(spec: InstrSpec, data: st.DataObject) -> None:
    ins = data.draw(instrs(spec))
    word = encode(ins)
    assert len(word) == WORD_BYTES and word[0] == spec.opcode
    assert decode(word) == ins
    text = format_instr(ins)
    image = assemble(f".section s cores=0\n    {text}\n", machine="mesh1x1")
    again = image.sections[0].code[0]
    assert again == ins, text
    assert encode(again) == word
    assert format_instr(again) == text
    assert make(spec.mnemonic, **ins.as_dict()) == ins


def test_field_layout_is_in_the_word() -> None:
    ins = make("li", rd=5, imm=-2)
    value = int.from_bytes(encode(ins), "little")
    (_, lo_rd, hi_rd), (_, lo, hi) = ins.spec.layout
    assert value & 0xFF == ins.spec.opcode
    assert (value >> lo_rd) & ((1 << (hi_rd - lo_rd)) - 1) == 5
    assert (value >> lo) & ((1 << (hi - lo)) - 1) == (1 << 64) - 2  # two's complement
    f = make("vfill", rd=1, imm=1.5, rows=1, cols=1, sd=0, dt=DType.BF16)
    lo = f.spec.layout[1][1]
    bits = (int.from_bytes(encode(f), "little") >> lo) & 0xFFFFFFFF
    assert bits == struct.unpack("<I", struct.pack("<f", 1.5))[0]


def test_make_fills_defaults_and_accepts_names() -> None:
    ins = make("mma", rd=1, ra=2, rb=3, m=8, n=8, k=8, sd=32, sa=16, sb=16, dt="bf16")
    assert ins["acc"] == 0 and ins["tb"] == 0 and ins["rbias"] == 0 and ins["dt"] is DType.BF16
    assert make("vadd", rd="r1", ra=2, rb=3, rows=1, cols=1, sd=0, sa=0, sb=0, dt=DType.F32,
                bca="row")["bca"] is Bcast.ROW
    assert make("vfill", rd=1, imm=0.1, rows=1, cols=1, sd=0, dt=DType.F32)["imm"] == to_f32(0.1)
    assert make("vfill", rd=1, imm=float("nan"), rows=1, cols=1, sd=0, dt=DType.F32)["imm"] is NAN


@pytest.mark.parametrize("mnemonic, fields, words", [
    ("bogus", {}, ["unknown mnemonic"]),
    ("add", {"rd": 1, "ra": 2}, ["add", "missing field rb"]),
    ("add", {"rd": 1, "ra": 2, "rb": 3, "x": 1}, ["add", "unknown field 'x'"]),
    ("add", {"rd": 32, "ra": 2, "rb": 3}, ["add", "rd", "out of range"]),
    ("addi", {"rd": 1, "ra": 2, "imm": 1 << 31}, ["addi", "imm", "out of range"]),
    ("wait", {"sem": -1, "count": 1}, ["wait", "sem", "out of range"]),
    ("wait", {"sem": 1.5, "count": 1}, ["wait", "sem", "integer"]),
    ("rdsr", {"rd": 1, "sr": "nope"}, ["rdsr", "sr", "unknown value"]),
    ("rdsr", {"rd": 1, "sr": Bcast.ROW}, ["rdsr", "sr", "SpecialReg"]),
    ("vtrans", {"rd": 1, "ra": 2, "rows": 1, "cols": 1, "sd": 0, "sa": 0, "dt": "f64"}, ["vtrans", "dt"]),
    ("vfill", {"rd": 1, "imm": 1e300, "rows": 1, "cols": 1, "sd": 0, "dt": "f32"}, ["vfill", "imm"]),
])
def test_make_errors_name_mnemonic_and_field(mnemonic: str, fields: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(EncodingError) as e:
        make(mnemonic, **fields)
    for w in words:
        assert w in str(e.value)


def test_decode_rejects_bad_words() -> None:
    with pytest.raises(EncodingError, match="unknown opcode"):
        decode(bytes([255]) + bytes(15))
    with pytest.raises(EncodingError, match="16 bytes"):
        decode(bytes(15))
    for spec in INSTRUCTIONS:  # a bit beyond the layout
        end = spec.layout[-1][2] if spec.layout else 8
        if end < 128:
            word = (spec.opcode | 1 << 127).to_bytes(16, "little")
            with pytest.raises(EncodingError, match="nonzero bits"):
                decode(word)
    tr = BY_MNEMONIC["vtrans"]
    lo = tr.layout[[f.name for f in tr.fields].index("dt")][1]
    with pytest.raises(EncodingError, match="dtype"):
        decode((tr.opcode | 15 << lo).to_bytes(16, "little"))
    rd = BY_MNEMONIC["rdsr"]
    with pytest.raises(EncodingError, match="SpecialReg"):
        decode((rd.opcode | 15 << rd.layout[1][1]).to_bytes(16, "little"))
    fill = BY_MNEMONIC["vfill"]
    with pytest.raises(EncodingError, match="NaN"):
        decode((fill.opcode | 0x7FC00001 << fill.layout[1][1]).to_bytes(16, "little"))


def test_encode_rejects_bad_instr() -> None:
    spec = BY_MNEMONIC["vfill"]
    with pytest.raises(EncodingError, match="float32"):
        encode(Instr(spec, (1, 0.1, 1, 1, 0, DType.F32)))
    with pytest.raises(EncodingError, match="out of range"):
        encode(Instr(BY_MNEMONIC["add"], (1, 2, 99)))


def test_code_sequences() -> None:
    seq = (make("li", rd=1, imm=3), make("nop"), make("halt"))
    data = encode_code(seq)
    assert len(data) == 48 and decode_code(data) == seq
    with pytest.raises(EncodingError, match="whole number"):
        decode_code(data[:-1])
    with pytest.raises(EncodingError, match="instruction 1"):
        decode_code(data[:16] + bytes([255]) + bytes(15))


def test_format_instr_canonical_text() -> None:
    ins = make("mma", rd=1, ra=2, rb=3, m=8, n=8, k=8, sd=32, sa=16, sb=16, dt="bf16")
    assert format_instr(ins) == ("mma r1, r2, r3, m=8, n=8, k=8, sd=32, sa=16, sb=16, dt=bf16, "
                                 "acc=0, tb=0, rbias=r0")
    assert format_instr(make("beq", ra=1, rb=0, target=4), {4: "done"}) == "beq r1, r0, done"
    assert format_instr(make("beq", ra=1, rb=0, target=4)) == "beq r1, r0, 4"
    assert format_instr(make("nop")) == "nop"
    for v, text in ((math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan"), (-0.0, "-0.0")):
        ins = make("vfill", rd=1, imm=v, rows=1, cols=1, sd=0, dt="f32")
        assert format_instr(ins).split(",")[1] == f" {text}"
