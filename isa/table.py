"""The instruction table: the single source of truth of the ISA.

Each instruction is declared once, as an `InstrSpec`: mnemonic, opcode, operand fields (whose bit
ranges are assigned here, in declaration order, after the 8-bit opcode), assembly syntax, the unit
that executes it, its cost rule and its semantics. The lark grammar, the encoder and decoder, the
disassembler, the emulator's dispatch, the cost functions and docs/isa.md are all derived from it.

Encoding: every instruction is one 128-bit little-endian word; bits [0, 8) hold the opcode and the
fields follow in declaration order. Opcodes are assigned in declaration order, so new instructions
are appended, never inserted.

Assembly syntax: `mnemonic a, b, c, key=value, ...`: positional fields first, in declaration order,
then keyword fields in any order; a keyword field with a default may be omitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from scipy import special

WORD_BITS = 128
WORD_BYTES = WORD_BITS // 8
OPCODE_BITS = 8


class Unit(Enum):
    """The part of a core that an instruction occupies (statistics count busy cycles by unit)."""

    SCALAR = "scalar"
    MXU = "mxu"
    SIMD = "simd"
    DMA = "dma"
    NET = "net"
    SYNC = "sync"


class Cost(Enum):
    """Named cost rules; `isa.costs` turns (rule, fields, machine) into cycles."""

    SCALAR = "scalar"
    MATMUL = "matmul"
    VECTOR = "vector"
    TRANSCENDENTAL = "transcendental"
    REDUCE = "reduce"
    TRANSPOSE = "transpose"
    CONVERT = "convert"
    GATHER = "gather"
    ISSUE = "issue"
    SEM = "sem"
    BARRIER = "barrier"


class Kind(Enum):
    """How a field's bits are read and written in assembly."""

    REG = "reg"  # scalar register r0..r31 (r0 reads as zero)
    UIMM = "uimm"  # unsigned integer
    SIMM = "simm"  # two's-complement integer
    F32 = "f32"  # an IEEE float32 immediate (its bits); integer tiles use its integer value
    DTYPE = "dtype"  # a DType code
    ENUM = "enum"  # a member of `Field.enum`, by lower-case name
    TARGET = "target"  # a code address (instruction index in the section); a label in assembly


class SpecialReg(Enum):
    """Read-only registers read by `rdsr`: how one shared code section tells its cores apart."""

    COREID = 0
    ROW = 1
    COL = 2
    NCORES = 3
    ROWS = 4
    COLS = 5


class Bcast(Enum):
    """Broadcast of a source tile over the instruction's rows x cols."""

    NONE = 0  # a full rows x cols tile
    ROW = 1  # one row (1 x cols) repeated down every row
    COL = 2  # one column (rows x 1) repeated along every column
    SCALAR = 3  # one element


class Cast(Enum):
    """Destinations of a network put."""

    ONE = 0  # the core named by the register
    ROW = 1  # every enabled core in that core's mesh row (or a segment of it: `first`, `span`), except the sender
    COL = 2  # every enabled core in that core's mesh column (or a segment of it: `first`, `span`), except the sender


SPAN_BITS = 12  # a mesh line of up to 4,095 positions


def _segment() -> tuple[Field, Field]:
    """The segment of its row or column that a multicast reaches (put and signal)."""
    return (U("first", SPAN_BITS, "first mesh position (column of a row, row of a column) a multicast "
              "reaches", default=0),
            U("span", SPAN_BITS, "mesh positions a multicast reaches from `first` on; 0: the whole line",
              default=0))


class Axis(Enum):
    """Reduction or scan direction."""

    ROW = 0  # along each row: one result per row (rows x 1)
    COL = 1  # along each column: one result per column (1 x cols)


class Round(Enum):
    """Rounding of a conversion."""

    RNE = 0  # round to nearest, ties to even
    SR = 1  # stochastic: bits from hash(seed, core, executed-instruction index, element)


@dataclass(frozen=True)
class Field:
    """One operand field of an instruction."""

    name: str
    kind: Kind
    bits: int
    doc: str = ""
    enum: type[Enum] | None = None
    default: Any = None  # keyword fields with a default may be omitted in assembly
    positional: bool = False

    @property
    def signed(self) -> bool:
        return self.kind is Kind.SIMM


@dataclass(frozen=True, eq=False)
class InstrSpec:
    """One instruction, declared once. There is one object per instruction (compared by identity, which
    keeps hashing an `Instr` cheap in the emulator's caches)."""

    mnemonic: str
    opcode: int
    fields: tuple[Field, ...]
    unit: Unit
    cost: Cost
    semantics: str  # the emulator handler family (see runtime_emu.semantics)
    doc: str
    fn: Callable[..., Any] | None = field(default=None, compare=False)  # the element function, if any
    result_bool: bool = False  # comparisons write BOOL whatever the operand type
    layout: tuple[tuple[str, int, int], ...] = ()  # (field, lo bit, hi bit exclusive), derived

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


# -- field constructors -----------------------------------------------------------------------------

def R(name: str, doc: str = "", default: str | None = None) -> Field:
    return Field(name, Kind.REG, 5, doc, default=default, positional=default is None)


def U(name: str, bits: int, doc: str = "", default: int | None = None, positional: bool = False) -> Field:
    return Field(name, Kind.UIMM, bits, doc, default=default, positional=positional)


def S(name: str, bits: int, doc: str = "", positional: bool = False) -> Field:
    return Field(name, Kind.SIMM, bits, doc, positional=positional)


def E(name: str, enum: type[Enum], bits: int, doc: str = "", default: Enum | None = None) -> Field:
    return Field(name, Kind.ENUM, bits, doc, enum=enum, default=default)


def DT(name: str = "dt", doc: str = "element type") -> Field:
    return Field(name, Kind.DTYPE, 4, doc)


ROWS, COLS, STRIDE = 12, 12, 18  # tile extents up to 4095, row strides up to 256 KiB


def _tile2(first: str) -> tuple[Field, ...]:
    return (U("rows", ROWS, "rows of the tile"), U("cols", COLS, "columns of the tile"),
            U("sd", STRIDE, "destination row stride in bytes"),
            U(f"s{first}", STRIDE, f"{first} row stride in bytes (0 repeats the first row)"))


# -- semantics tables -------------------------------------------------------------------------------
# Scalar ALU on 64-bit two's-complement integers; division truncates toward zero (traps on zero).

ALU: dict[str, Callable[[int, int], int]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: int(a / b) if abs(a) < 2**52 and abs(b) < 2**52 else (abs(a) // abs(b)) * (
        1 if (a < 0) == (b < 0) else -1),
    "rem": lambda a, b: a - b * ALU["div"](a, b),
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "shl": lambda a, b: a << (b & 63),
    "shr": lambda a, b: a >> (b & 63),
    "min": min,
    "max": max,
    "slt": lambda a, b: int(a < b),
    "seq": lambda a, b: int(a == b),
}
ALU_IMM = ("add", "mul", "and", "shl", "shr", "slt")
BRANCH: dict[str, Callable[[int, int], bool]] = {
    "beq": lambda a, b: a == b,
    "bne": lambda a, b: a != b,
    "blt": lambda a, b: a < b,
    "bge": lambda a, b: a >= b,
}

# Elementwise binary ops. Floating types compute in float32 (float64 for pow) and round to the
# destination type; integer types wrap; BOOL tiles use the logical ops.
VBINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "max": np.maximum, "min": np.minimum, "pow": np.power,
    "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
}
VCOMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
}


def _gelu_tanh(x: Any) -> Any:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


# Elementwise unary ops: (function, transcendental?). Computed in float64 and rounded to the
# destination type, so results are the correctly rounded value of the math function on the input.
VUNARY: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "mov": (lambda x: x, False),
    "neg": (np.negative, False),
    "abs": (np.abs, False),
    "relu": (lambda x: np.maximum(x, 0), False),
    "not": (lambda x: np.logical_not(x) if x.dtype == np.bool_ else np.invert(x), False),
    "floor": (np.floor, False),
    "ceil": (np.ceil, False),
    "recip": (lambda x: 1.0 / x, True),
    "exp": (np.exp, True),
    "log": (np.log, True),
    "sqrt": (np.sqrt, True),
    "rsqrt": (lambda x: 1.0 / np.sqrt(x), True),
    "tanh": (np.tanh, True),
    "erf": (special.erf, True),
    "gelu": (lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))), True),
    "gelut": (_gelu_tanh, True),
    "sigmoid": (special.expit, True),
    "silu": (lambda x: x * special.expit(x), True),
    "sin": (np.sin, True),
    "cos": (np.cos, True),
}
# Reductions and scans along an axis. Floating sums accumulate in float64, then round.
VREDUCE: dict[str, Callable[..., Any]] = {
    "sum": np.sum, "max": np.max, "min": np.min, "argmax": np.argmax, "argmin": np.argmin,
}
VSCAN: dict[str, Callable[..., Any]] = {"cumsum": np.cumsum, "cummax": np.maximum.accumulate}


# -- the table --------------------------------------------------------------------------------------

_DECLS: list[InstrSpec] = []


def _decl(mnemonic: str, fields: tuple[Field, ...], unit: Unit, cost: Cost, semantics: str, doc: str,
          fn: Callable[..., Any] | None = None, result_bool: bool = False) -> None:
    _DECLS.append(InstrSpec(mnemonic, len(_DECLS), fields, unit, cost, semantics, doc, fn, result_bool))


_decl("nop", (), Unit.SCALAR, Cost.SCALAR, "nop", "Do nothing for one scalar cycle.")
_decl("halt", (), Unit.SCALAR, Cost.SCALAR, "halt", "Stop this core.")
_decl("li", (R("rd"), S("imm", 64, "value", positional=True)), Unit.SCALAR, Cost.SCALAR, "li",
      "rd = imm (64-bit).")
_decl("rdsr", (R("rd"), E("sr", SpecialReg, 4, "special register")), Unit.SCALAR, Cost.SCALAR, "rdsr",
      "rd = a special register: coreid, row, col, ncores, rows, cols.")
for _op in ALU:
    _decl(_op, (R("rd"), R("ra"), R("rb")), Unit.SCALAR, Cost.SCALAR, "alu",
          f"rd = ra {_op} rb on 64-bit integers.", fn=ALU[_op])
for _op in ALU_IMM:
    _decl(f"{_op}i", (R("rd"), R("ra"), S("imm", 32, "immediate", positional=True)), Unit.SCALAR,
          Cost.SCALAR, "alui", f"rd = ra {_op} imm on 64-bit integers.", fn=ALU[_op])
for _op in BRANCH:
    _decl(_op, (R("ra"), R("rb"), Field("target", Kind.TARGET, 32, "label", positional=True)),
          Unit.SCALAR, Cost.SCALAR, "branch", f"Branch to target if ra {_op[1:]} rb.", fn=BRANCH[_op])
_decl("jmp", (Field("target", Kind.TARGET, 32, "label", positional=True),), Unit.SCALAR, Cost.SCALAR,
      "jmp", "Jump to target.")
_decl("loop", (R("ra"), Field("target", Kind.TARGET, 32, "label", positional=True)), Unit.SCALAR,
      Cost.SCALAR, "loop", "Hardware loop step: ra -= 1; branch to target while ra != 0.")

_decl("mma", (R("rd", "FP32 accumulator tile (m x n)"), R("ra", "A tile (m x k)"),
              R("rb", "B tile (k x n), or (n x k) with tb=1"),
              U("m", ROWS, "rows of A and of the result"), U("n", COLS, "columns of the result"),
              U("k", ROWS, "reduction length"),
              U("sd", STRIDE, "result row stride in bytes"), U("sa", STRIDE, "A row stride in bytes"),
              U("sb", STRIDE, "B row stride in bytes"), DT("dt", "operand type: bf16, cf8e4, cf8e5, f32"),
              U("acc", 1, "1: add into the accumulator; 0: overwrite it", default=0),
              U("tb", 1, "1: B is stored transposed (n x k)", default=0),
              R("rbias", "CFP8 biases: bits 0-5 for A, 8-13 for B", default="r0")),
      Unit.MXU, Cost.MATMUL, "mma",
      "Matrix multiply-accumulate: D(f32) = [D +] A @ B, exact products summed in FP32 or wider.")

_BC = (E("bca", Bcast, 2, "broadcast of a", default=Bcast.NONE),
       E("bcb", Bcast, 2, "broadcast of b", default=Bcast.NONE))
for _op, _fn in {**VBINARY, **VCOMPARE}.items():
    _cmp = _op in VCOMPARE
    _decl(f"v{_op}", (R("rd"), R("ra"), R("rb"), *_tile2("a"),
                      U("sb", STRIDE, "b row stride in bytes (0 repeats the first row)"),
                      DT("dt", "operand type" + ("; the result is bool" if _cmp else "")), *_BC),
          Unit.SIMD, Cost.VECTOR, "vbinary", f"Elementwise d = a {_op} b.", fn=_fn, result_bool=_cmp)
    _decl(f"v{_op}s", (R("rd"), R("ra"), Field("imm", Kind.F32, 32, "scalar operand", positional=True),
                       *_tile2("a"), DT("dt", "operand type"),
                       E("bca", Bcast, 2, "broadcast of a", default=Bcast.NONE)),
          Unit.SIMD, Cost.VECTOR, "vbinary_s", f"Elementwise d = a {_op} imm.", fn=_fn, result_bool=_cmp)
for _op, (_ufn, _tr) in VUNARY.items():
    _decl(f"v{_op}", (R("rd"), R("ra"), *_tile2("a"), DT(), E("bca", Bcast, 2, "broadcast of a",
                                                              default=Bcast.NONE)),
          Unit.SIMD, Cost.TRANSCENDENTAL if _tr else Cost.VECTOR, "vunary", f"Elementwise d = {_op}(a).",
          fn=_ufn)
_decl("vsel", (R("rd"), R("rc", "bool condition tile"), R("ra"), R("rb"), U("rows", ROWS), U("cols", COLS),
               U("sd", STRIDE), U("sc", STRIDE), U("sa", STRIDE), U("sb", STRIDE), DT()),
      Unit.SIMD, Cost.VECTOR, "vsel", "Elementwise d = c ? a : b.")
_decl("vfill", (R("rd"), Field("imm", Kind.F32, 32, "value", positional=True), U("rows", ROWS),
                U("cols", COLS), U("sd", STRIDE), DT()),
      Unit.SIMD, Cost.VECTOR, "vfill", "Fill a tile with one value.")
for _op, _rfn in VREDUCE.items():
    _decl(f"vr{_op}", (R("rd"), R("ra"), *_tile2("a"), DT("dt", "source type"),
                       E("axis", Axis, 1, "row: one result per row; col: one per column")),
          Unit.SIMD, Cost.REDUCE, "vreduce",
          f"Reduce a by {_op} along an axis" + ("; the result is i32." if "arg" in _op else "."), fn=_rfn)
for _op, _sfn in VSCAN.items():
    _decl(f"v{_op}", (R("rd"), R("ra"), *_tile2("a"), DT(), E("axis", Axis, 1, "scan direction")),
          Unit.SIMD, Cost.REDUCE, "vscan", f"Inclusive {_op} scan along an axis.", fn=_sfn)
_decl("vtrans", (R("rd"), R("ra"), *_tile2("a"), DT()), Unit.SIMD, Cost.TRANSPOSE, "vtrans",
      "d (cols x rows) = transpose of a (rows x cols).")
_decl("vcvt", (R("rd"), R("ra"), *_tile2("a"), DT("dtd", "destination type"), DT("dts", "source type"),
               E("rnd", Round, 1, "rounding", default=Round.RNE),
               R("rbias", "CFP bias of the destination (bits 0-5) and source (bits 8-13)", default="r0"),
               R("rseed", "stochastic-rounding seed", default="r0")),
      Unit.SIMD, Cost.CONVERT, "vcvt",
      "Convert a tile; CFP8 saturates, converting a NaN to CFP8 traps.")
_decl("vgather", (R("rd"), R("rt", "table in SRAM"), R("ri", "i32 index tile"),
                  U("n", ROWS, "number of indices (rows of d)"), U("cols", COLS, "row length in elements"),
                  U("sd", STRIDE), U("st", STRIDE, "table row stride in bytes"), DT(),
                  U("nt", 16, "rows in the table (indices are bounds-checked)")),
      Unit.SIMD, Cost.GATHER, "vgather", "d[i] = table[index[i]] for each of n indices.")

_decl("dmadim", (U("dim", 2, "dimension 0 (innermost) to 3", positional=True),
                 U("count", 16, "elements in this dimension", positional=True),
                 S("sstride", 36, "source stride in bytes"), S("dstride", 24, "destination stride in bytes"),
                 U("padlo", 8, "destination padding before, in elements", default=0),
                 U("padhi", 8, "destination padding after, in elements", default=0)),
      Unit.DMA, Cost.SCALAR, "dmadim",
      "Set one dimension of this core's DMA shape for the DMAs that follow.")
_decl("dmald", (R("rs", "SRAM destination"), R("rm", "DRAM source"), U("esize", 4, "element bytes: 1,2,4,8"),
                U("ndim", 3, "dimensions used (1-4)"), U("sem", 5, "local semaphore signalled on arrival"),
                Field("pad", Kind.F32, 32, "padding value", default=0.0),
                DT("dt", "element type of the padding value")),
      Unit.DMA, Cost.ISSUE, "dmald", "Asynchronous strided DMA from DRAM into SRAM, padding the destination.")
_decl("dmast", (R("rm", "DRAM destination"), R("rs", "SRAM source"), U("esize", 4, "element bytes: 1,2,4,8"),
                U("ndim", 3, "dimensions used (1-4)"), U("sem", 5, "local semaphore signalled when written")),
      Unit.DMA, Cost.ISSUE, "dmast", "Asynchronous strided DMA from SRAM into DRAM.")
_decl("dmagat", (R("rs", "SRAM destination (rows packed)"), R("rm", "DRAM table"), R("ri", "SRAM i32 indices"),
                 U("n", 16, "number of rows"), U("rowbytes", 20, "bytes per row"),
                 U("tstride", 36, "table row stride in bytes"), U("sem", 5, "semaphore signalled on arrival")),
      Unit.DMA, Cost.ISSUE, "dmagat", "Asynchronous gather of table rows from DRAM by an SRAM index tile.")

_decl("put", (R("rc", "destination core id"), R("rd", "remote SRAM address"), R("rs", "local SRAM address"),
              U("rows", ROWS, "rows", default=1), U("bytes", 21, "bytes per row"),
              U("ss", STRIDE, "source row stride", default=0), U("ds", STRIDE, "destination row stride",
                                                                  default=0),
              E("cast", Cast, 2, "one, row or col multicast", default=Cast.ONE),
              U("seml", 5, "local semaphore signalled when the source is free"),
              U("semr", 5, "remote semaphore signalled on arrival"),
              *_segment()),
      Unit.NET, Cost.ISSUE, "put", "Asynchronous network put of a 2-D block into other cores' SRAM.")
_decl("signal", (R("rc", "core id"), U("sem", 5, "its semaphore", positional=True),
                 E("cast", Cast, 2, "one, row or col multicast", default=Cast.ONE),
                 *_segment()),
      Unit.NET, Cost.ISSUE, "signal", "Increment a semaphore of another core (a zero-byte message).")
_decl("wait", (U("sem", 5, "semaphore", positional=True), U("count", 16, "count to take", positional=True)),
      Unit.SYNC, Cost.SEM, "wait", "Wait until sem >= count, then subtract count.")
_decl("post", (U("sem", 5, "semaphore", positional=True), U("count", 16, "amount", positional=True)),
      Unit.SYNC, Cost.SEM, "post", "Add count to one of this core's semaphores.")
_decl("barrier", (U("id", 5, "barrier id", positional=True), U("count", 16, "cores taking part",
                                                               positional=True)),
      Unit.SYNC, Cost.BARRIER, "barrier", "Wait until `count` cores have arrived at barrier `id`.")


def _layout(spec: InstrSpec) -> InstrSpec:
    lo, out = OPCODE_BITS, []
    for f in spec.fields:
        out.append((f.name, lo, lo + f.bits))
        lo += f.bits
    if lo > WORD_BITS:
        raise AssertionError(f"{spec.mnemonic}: fields need {lo} bits, more than {WORD_BITS}")
    return InstrSpec(spec.mnemonic, spec.opcode, spec.fields, spec.unit, spec.cost, spec.semantics, spec.doc,
                     spec.fn, spec.result_bool, tuple(out))


INSTRUCTIONS: tuple[InstrSpec, ...] = tuple(_layout(s) for s in _DECLS)
BY_MNEMONIC: dict[str, InstrSpec] = {s.mnemonic: s for s in INSTRUCTIONS}
BY_OPCODE: dict[int, InstrSpec] = {s.opcode: s for s in INSTRUCTIONS}
assert len(INSTRUCTIONS) < 2**OPCODE_BITS


@dataclass(frozen=True)
class Instr:
    """One decoded instruction: its spec and field values (enums as members, regs as ints, F32 as float)."""

    spec: InstrSpec
    args: tuple[Any, ...]  # in the order of spec.fields

    def __getitem__(self, name: str) -> Any:
        for f, v in zip(self.spec.fields, self.args, strict=True):
            if f.name == name:
                return v
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: v for f, v in zip(self.spec.fields, self.args, strict=True)}
