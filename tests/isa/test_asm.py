"""The assembler, its error messages, and the disassembler round trip."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa.asm import assemble
from isa.disasm import disassemble, format_cores, write_data_files
from isa.dtypes import DType
from isa.encoding import make
from isa.errors import AsmError
from isa.grammar import grammar_text
from isa.machine import Machine
from isa.objfile import write_object
from isa.presets import dump_toml, load_machine
from isa.program import CodeSection, DebugEntry, Image, Signature, Tensor, TensorKind
from isa.table import INSTRUCTIONS

WEIGHT = bytes(range(12))

PROGRAM = f"""\
; a small program
.machine mesh2x2
.equ N 8
.equ ROWS 0x10
.tensor x input 0x0 f32 [4, 8]
.tensor w weight 0x1000 bf16 [2, 3] file="w.bin" sha256="{hashlib.sha256(WEIGHT).hexdigest()}"
.tensor y output 0x2000 f32 [4, 8]
.signature inputs=x outputs=y

.section main cores=0..2   # three cores share this code
start:
    rdsr r1, sr=coreid
    li r2, N
top:
    .debug op="matmul_1" source="model.py:12"
    mma r3, r4, r5, m=ROWS, n=N, k=8, sd=32, sa=16, sb=16, dt=bf16
    vadds r6, r3, -1.5, rows=1, cols=N, sd=0, sa=0, dt=f32, bca=scalar
    loop r2, top
    jmp .Lout
.Lout: halt
end:

.section "other one" cores=3
    barrier 0, 4
    halt
"""


@pytest.fixture()
def src_dir(tmp_path: Path) -> Path:
    (tmp_path / "w.bin").write_bytes(WEIGHT)
    return tmp_path


def test_assemble_program(src_dir: Path) -> None:
    img = assemble(PROGRAM, base_dir=src_dir)
    assert img.machine.name == "mesh2x2"
    main, other = img.sections
    assert main.cores == (0, 1, 2) and other.cores == (3,) and other.name == "other one"
    assert main.labels == (("start", 0), ("top", 2), ("end", 7))  # .Lout is local: not kept
    assert main.code[2] == make("mma", rd=3, ra=4, rb=5, m=16, n=8, k=8, sd=32, sa=16, sb=16, dt="bf16")
    assert main.code[4] == make("loop", ra=2, target=2)
    assert main.code[5] == make("jmp", target=6)
    assert main.code[3]["imm"] == -1.5
    assert img.debug == (DebugEntry(0, 2, "matmul_1", "model.py:12"),)
    assert img.tensor("w").data == WEIGHT and img.tensor("w").file == "w.bin"
    assert img.signature == Signature(("x",), ("y",))
    assert [t.name for t in img.inputs] == ["x"]


def test_machine_argument_overrides_directive(src_dir: Path) -> None:
    assert assemble(PROGRAM, base_dir=src_dir, machine="mesh4x4").machine.name == "mesh4x4"
    assert assemble(".section s cores=all\n nop\n").machine.name == "d1"
    assert len(assemble(".section s cores=all\n nop\n").sections[0].cores) == 354


def test_machine_toml(tmp_path: Path) -> None:
    m = load_machine("mesh2x2", ["sram_bytes=2097152", "name=big"])
    (tmp_path / "big.toml").write_text(dump_toml(m))
    img = assemble('.machine "big.toml"\n.section s cores=all\n halt\n', base_dir=tmp_path)
    assert img.machine == m


def test_cores_spec() -> None:
    img = assemble(".equ LAST 15\n.section a cores=0, 3, 5..7, 9..LAST\n halt\n", machine="mesh4x4")
    assert img.sections[0].cores == (0, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15)
    assert format_cores(img.sections[0].cores, 16) == "0, 3, 5..7, 9..15"
    assert format_cores(tuple(range(16)), 16) == "all"


BAD = [
    (".section s cores=0\n  ad r1, r2, r3\n", 2, 3, "unknown mnemonic ad; did you mean"),
    (".section s cores=0\n  add r1, r2\n", 2, 3, "missing field rb"),
    (".section s cores=0\n  add r1, r2, r3, r4\n", 2, 19, "positional operand"),
    (".section s cores=0\n  addi r1, r2, 0x80000000\n", 2, 16, "out of range"),
    (".section s cores=0\n  add r1, r2, r32\n", 2, 15, "out of range"),
    (".section s cores=0\n  add r1, r2, 7\n", 2, 15, "expects a register"),
    (".section s cores=0\n  jmp nowhere\n", 2, 7, "unknown label nowhere"),
    (".section s cores=0\nx: nop\n  x: nop\n", 3, 3, "duplicate label x"),
    (".section s cores=0\n  rdsr r1, sr=bogus\n", 2, 15, "unknown value 'bogus'"),
    (".section s cores=0\n  rdsr r1, foo=1\n", 2, 12, "has no field foo"),
    (".section s cores=0\n  rdsr r1, sr=row, sr=col\n", 2, 20, "given twice"),
    (".section s cores=0\n  add r1, r2, r3 r4\n", 2, 18, "expected"),
    (".section s cores=0\n  add r1,\n", 2, 10, "expected"),
    (".section s cores=0\n  wait 1, 2.5\n", 2, 11, "integer"),
    (".section s cores=0\n  vfill r1, 1e39, rows=1, cols=1, sd=0, dt=f32\n", 2, 13, "too large"),
    (".section s cores=0\n  vtrans r1, r2, rows=1, cols=1, sd=0, sa=0, dt=f64\n", 2, 49, "unknown dtype"),
    (".section s cores=0\n  li r1, UNDEF\n", 2, 10, "unknown constant UNDEF"),
    (".section s cores=0\n  .debug op=\"x\"\n", 2, 3, ".debug is not followed"),
    (".bogus 3\n", 1, 1, "unknown directive .bogus"),
    ("  nop\n", 1, 3, "outside a section"),
    (".section s cores=4\n", 1, 18, "core 4 does not exist"),
    (".section s cores=0\n.section t cores=1, 0\n", 2, 10, "core 0 already runs section s"),
    (".section s cores=0, 0\n", 1, 21, "listed twice"),
    (".section s cores=0\n.section s cores=1\n", 2, 10, "section s declared twice"),
    (".equ A 1\n.equ A 2\n", 2, 6, "defined twice"),
    (".tensor t blob 0 f32 [1]\n", 1, 11, "unknown tensor kind blob"),
    (".tensor t input 0 f32 [1]\n.tensor t input 8 f32 [1]\n", 2, 9, "declared twice"),
    (".tensor t input 0x100000000 f32 [1]\n", 1, 17, "does not fit"),
    (".tensor t weight 0 f32 [1] file=\"nope.bin\"\n", 1, 33, "cannot read weight file"),
    (".tensor t input 0 f32 [1] file=\"w.bin\"\n", 1, 32, "only weight tensors"),
    (".signature inputs=q\n", 1, 19, "not a declared tensor"),
    (".section s cores=0\n halt\n.machine mesh4x4\n", 3, 10, ".machine must come before"),
    (".machine nosuch\n", 1, 10, "unknown machine"),
]


@pytest.mark.parametrize("text, line, column, message", BAD, ids=[b[3] for b in BAD])
def test_errors_have_line_and_column(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(AsmError) as e:
        assemble(text, machine="mesh2x2" if ".machine" not in text else None)
    assert message in str(e.value)
    assert (e.value.line, e.value.column) == (line, column), str(e.value)
    assert str(e.value).startswith(f"line {line}, column {column}: ")


def test_weight_file_checks(src_dir: Path) -> None:
    with pytest.raises(AsmError, match="has sha256"):
        assemble('.tensor w weight 0 bf16 [2, 3] file="w.bin" sha256="00"\n', base_dir=src_dir)
    with pytest.raises(AsmError, match="has 12 bytes; tensor w needs 24"):
        assemble('.tensor w weight 0 f32 [2, 3] file="w.bin"\n', base_dir=src_dir)


def test_weight_files_are_read_only_inside_the_assembly_folder(tmp_path: Path) -> None:
    src = tmp_path / "prog"
    (src / "data").mkdir(parents=True)
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(WEIGHT)
    (src / "data" / "w.bin").write_bytes(WEIGHT)
    (src / "link.bin").symlink_to(outside)
    line = '.tensor w weight 0 bf16 [2, 3] file="{}"\n'
    image = assemble(line.format("data/w.bin"), base_dir=src)  # a subfolder is inside
    assert image.tensors[0].data == WEIGHT
    for name in ("../elsewhere.bin", str(outside), "link.bin", "data/../../elsewhere.bin"):
        with pytest.raises(AsmError, match="outside the assembly's folder") as e:
            assemble(line.format(name), base_dir=src)
        assert "copy the file there" in str(e.value)


def test_filename_in_message() -> None:
    with pytest.raises(AsmError, match=r"\(in prog\.s\)"):
        assemble("  nop\n", filename="prog.s")


def test_grammar_lists_every_mnemonic() -> None:
    text = grammar_text()
    for spec in INSTRUCTIONS:
        assert spec.mnemonic in text


def _roundtrip(img: Image, tmp_path: Path, machine: Machine | str | None = None) -> str:
    text = disassemble(img)
    write_data_files(img, tmp_path)
    again = assemble(text, base_dir=tmp_path, machine=machine)
    assert again == img
    assert write_object(again) == write_object(img)
    assert disassemble(again) == text
    return text


def test_disassemble_roundtrip(src_dir: Path, tmp_path: Path) -> None:
    img = assemble(PROGRAM, base_dir=src_dir)
    text = _roundtrip(img, tmp_path / "out")
    assert ".Lout" not in text and ".L0:" in text and '.debug op="matmul_1"' in text


def test_disassemble_built_image(tmp_path: Path) -> None:
    """An image built in memory (no labels, a custom machine, odd names) still round-trips exactly."""
    m = load_machine("mesh2x2", ["name=my machine", "sram_bytes=4096"])
    code = (make("li", rd=1, imm=3), make("bne", ra=1, rb=0, target=3), make("jmp", target=0),
            make("vfill", rd=1, imm=float("nan"), rows=1, cols=1, sd=0, dt="f32"), make("halt"))
    data = bytes(range(8))
    img = Image(
        m, (CodeSection("all", (0, 2, 1), code), CodeSection("b", (3,), (make("jmp", target=99),))),
        (Tensor("layer.0 weight", TensorKind.WEIGHT, 64, (2,), DType.F32, data, "layer.0 weight.bin"),
         Tensor("in", TensorKind.INPUT, 128, (), DType.I32),
         Tensor("out", TensorKind.OUTPUT, 256, (1,), DType.BOOL)),
        Signature(("in",), ("out",), '{"type": "tuple"}'),
        (DebugEntry(0, 1, "op1", ""), DebugEntry(0, 1, "op2", "m.py:3"), DebugEntry(1, 0, "j")),
    )
    text = _roundtrip(img, tmp_path)
    assert '.machine "my_machine.toml"' in text


_PROGRAM = disassemble(Image(load_machine("mesh2x2"), (CodeSection("s0", (0, 1), (
    make("li", rd=1, imm=64), make("vadds", rd=1, ra=1, imm=1.0, rows=2, cols=8, sd=32, sa=32, dt=DType.F32),
    make("halt"))),)))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_PROGRAM)), st.integers(0, 8), st.text(max_size=12))
def test_assembler_on_mutated_text_gives_an_image_or_an_asm_error(at: int, cut: int, insert: str) -> None:
    """A real program's text with a span cut out and random text put in: an Image, or one AsmError naming
    the problem (never another exception)."""
    text = _PROGRAM[:at] + insert + _PROGRAM[at + cut:]
    try:
        assemble(text)
    except AsmError as e:
        assert str(e)  # (the line and column, when the text has them)
