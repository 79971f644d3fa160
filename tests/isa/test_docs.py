"""The generated ISA reference is up to date, and the hand-written format documents exist."""

from __future__ import annotations

from pathlib import Path

from isa.docgen import DOC_PATH, generate, main
from isa.table import INSTRUCTIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_isa_md_is_not_stale() -> None:
    stale = "docs/isa.md is stale: run `python -m isa.docgen > docs/isa.md`"
    assert DOC_PATH.read_text() == generate(), stale
    assert main(["--check"]) == 0


def test_isa_md_covers_every_instruction() -> None:
    text = generate()
    for spec in INSTRUCTIONS:
        assert f"### `{spec.mnemonic}`" in text
        assert f"- opcode: {spec.opcode} " in text


def test_format_documents_exist() -> None:
    asm = (DOCS / "asm.md").read_text()
    for directive in (".machine", ".tensor", ".signature", ".section", ".debug", ".equ"):
        assert directive in asm
    obj = (DOCS / "objfile.md").read_text()
    for tag in ("MACH", "CODE", "TENS", "DATA", "SIGN", "DBUG", "DOJOOBJ"):
        assert tag in obj
