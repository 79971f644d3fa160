"""Generate docs/isa.md from the instruction table: `python -m isa.docgen > docs/isa.md`.

`python -m isa.docgen --check` exits non-zero when docs/isa.md differs from what the table gives.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

from isa.dtypes import DType
from isa.table import INSTRUCTIONS, OPCODE_BITS, WORD_BITS, Cost, Field, InstrSpec, Kind, Unit
from isa.text import syntax

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "isa.md"

# One line per cost rule (the functions are in isa/costs.py); an unknown rule prints its name only.
COST_TEXT = {
    "scalar": "`scalar_cycles`",
    "matmul": "max(M,N,K rounded up to 8 MACs / MACs per cycle at the operand type, bytes read / SRAM load "
              "bandwidth, bytes written / SRAM store bandwidth) + `mxu_latency`",
    "vector": "max(elements x element size / `simd_bytes` passes, SRAM load and store time) + `simd_latency`",
    "transcendental": "as vector, with `transcendental_passes` passes per vector",
    "reduce": "as vector over the source tile, writing one result per row or column (or the whole scan)",
    "transpose": "as vector over the tile (read and write once)",
    "convert": "as vector at the wider of the two element sizes",
    "gather": "as vector over n x cols elements, plus reading the n i32 indices",
    "issue": "`issue_cycles` to issue; the transfer runs asynchronously (DMA port and network timing)",
    "sem": "`sem_cycles`; time spent waiting is counted as a stall",
    "barrier": "`sem_cycles`; release after the last arrival plus the round trip of a combining tree over the "
               "participants' bounding box (2 x the largest path latency from its centre router to a corner: "
               "`hop_latency` per link, `d2d_latency` per die crossing) plus the constant `barrier_latency`; "
               "waiting counted as a stall",
}


def _range(f: Field) -> str:
    if f.kind is Kind.REG:
        return "r0..r31"
    if f.kind is Kind.SIMM:
        return f"-2^{f.bits - 1}..2^{f.bits - 1}-1"
    if f.kind in (Kind.UIMM, Kind.TARGET):
        return f"0..{(1 << f.bits) - 1}" if f.bits <= 20 else f"0..2^{f.bits}-1"
    if f.kind is Kind.F32:
        return "float32"
    if f.kind is Kind.DTYPE:
        return "dtype"
    assert f.enum is not None
    return ", ".join(f"`{m.name.lower()}`" for m in f.enum)


def _default(f: Field) -> str:
    if f.positional:
        return "positional"
    if f.default is None:
        return "required"
    return f"`{f.default.name.lower() if isinstance(f.default, Enum) else f.default}`"


def _instr(spec: InstrSpec) -> list[str]:
    out = [f"### `{spec.mnemonic}`", "", spec.doc, "",
           f"- syntax: `{syntax(spec)}`",
           f"- opcode: {spec.opcode} (0x{spec.opcode:02x})",
           f"- unit: {spec.unit.value}; cost rule: {spec.cost.value}; semantics: `{spec.semantics}`"
           + ("; the result is bool" if spec.result_bool else ""), ""]
    if spec.fields:
        out += ["| field | kind | bits | values | operand | doc |", "|---|---|---|---|---|---|"]
        for f, (_, lo, hi) in zip(spec.fields, spec.layout, strict=True):
            out.append(f"| `{f.name}` | {f.kind.value} | [{lo}, {hi}) | {_range(f)} | {_default(f)} | "
                       f"{f.doc.replace('|', '/')} |")
        out.append("")
    return out


def _enums() -> list[type[Enum]]:
    seen: list[type[Enum]] = []
    for s in INSTRUCTIONS:
        for f in s.fields:
            if f.enum is not None and f.enum not in seen:
                seen.append(f.enum)
    return seen


def generate() -> str:
    """The full text of docs/isa.md."""
    out = ["# The dojoc instruction set", "",
           "<!-- Generated from isa/table.py by `python -m isa.docgen > docs/isa.md`; do not edit. -->", "",
           f"Every instruction is one {WORD_BITS}-bit little-endian word: bits [0, {OPCODE_BITS}) hold the "
           "opcode and the fields follow at the bit ranges listed below (all other bits are zero). "
           "Registers are 5 bits (r0 reads as zero), signed immediates are two's complement, float "
           "immediates are IEEE float32 bits, dtypes and enums are their codes. Assembly syntax is "
           "described in docs/asm.md: positional operands first, then `key=value` operands in any "
           "order; operands shown in brackets have a default and may be omitted.", "",
           "## Summary", "", "| opcode | mnemonic | unit | cost | description |", "|---|---|---|---|---|"]
    out += [f"| {s.opcode} | [`{s.mnemonic}`](#{s.mnemonic}) | {s.unit.value} | {s.cost.value} | {s.doc} |"
            for s in INSTRUCTIONS]
    out += ["", "## Units", "", "| unit | |", "|---|---|"]
    out += [f"| {u.value} | {', '.join(s.mnemonic for s in INSTRUCTIONS if s.unit is u)} |" for u in Unit]
    out += ["", "## Cost rules", "",
            "Cycles an instruction occupies its core, derived from the machine description "
            "(`isa/costs.py`); stalls are measured by the emulator, not part of the cost.", "",
            "| rule | cycles |", "|---|---|"]
    out += [f"| {c.value} | {COST_TEXT.get(c.value, c.value)} |" for c in Cost]
    out += ["", "## Instructions", ""]
    for s in INSTRUCTIONS:
        out += _instr(s)
    out += ["## Data types", "", "| name | code | bytes | float | CFP (bias operand) |",
            "|---|---|---|---|---|"]
    out += [f"| `{d.asm}` | {d.value} | {d.itemsize} | {'yes' if d.is_float else 'no'} | "
            f"{'yes' if d.is_cfp else 'no'} |" for d in DType]
    out += ["", "## Enumerations", ""]
    for e in _enums():
        fields = sorted({f.name for s in INSTRUCTIONS for f in s.fields if f.enum is e})
        out += [f"### {e.__name__}", "", (e.__doc__ or "").strip(), "",
                f"Fields: {', '.join(f'`{n}`' for n in fields)}", "", "| name | code |", "|---|---|"]
        out += [f"| `{m.name.lower()}` | {m.value} |" for m in e]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print docs/isa.md; with --check, compare it with the file instead (exit 1 when stale)."""
    args = sys.argv[1:] if argv is None else argv
    text = generate()
    if "--check" in args:
        current = DOC_PATH.read_text() if DOC_PATH.is_file() else ""
        if current != text:
            print(f"{DOC_PATH} is stale: run `python -m isa.docgen > docs/isa.md`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
