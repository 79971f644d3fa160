"""The canonical assembly text of one instruction, derived from the instruction table.

`format_instr` is what the disassembler prints and what the emulator shows in trap messages; the
assembler (`isa.asm`) reads it back to the same instruction. The text is canonical: positional
fields in declaration order, then *every* keyword field (defaults included) in declaration order.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from isa.dtypes import DType
from isa.table import Field, Instr, InstrSpec, Kind


def format_float(value: float) -> str:
    """A float as assembly text that reads back to exactly the same value ('inf', '-inf', 'nan' too)."""
    if math.isnan(value):
        return "nan"
    return repr(float(value))


def format_value(f: Field, value: Any, labels: dict[int, str] | None = None) -> str:
    """One field value as assembly text (register `r5`, dtype `bf16`, enum `row`, label or integer)."""
    kind = f.kind
    if kind is Kind.REG:
        return f"r{int(value)}"
    if kind is Kind.F32:
        return format_float(value)
    if kind is Kind.DTYPE:
        return value.asm if isinstance(value, DType) else str(value)
    if kind is Kind.ENUM:
        return value.name.lower() if isinstance(value, Enum) else str(value)
    if kind is Kind.TARGET and labels is not None and value in labels:
        return labels[value]
    return str(int(value))


def format_instr(instr: Instr, labels: dict[int, str] | None = None) -> str:
    """The canonical text of `instr`: `mnemonic pos1, pos2, key=value, ...`.

    Targets print as the label name in `labels` (instruction index -> name) when present, else as
    an integer.
    """
    spec = instr.spec
    parts = [format_value(f, v, labels) for f, v in zip(spec.fields, instr.args, strict=True) if f.positional]
    parts += [f"{f.name}={format_value(f, v, labels)}"
              for f, v in zip(spec.fields, instr.args, strict=True) if not f.positional]
    return f"{spec.mnemonic} {', '.join(parts)}" if parts else spec.mnemonic


def syntax(spec: InstrSpec) -> str:
    """The assembly syntax of an instruction, e.g. `mma rd, ra, rb, m=<uimm12>, ..., [acc=0]`."""
    parts = [f.name for f in spec.fields if f.positional]
    for f in spec.fields:
        if f.positional:
            continue
        if f.default is not None:
            dv = f.default.name.lower() if f.kind is Kind.ENUM else f.default
            parts.append(f"[{f.name}={dv}]")
        else:
            parts.append(f"{f.name}=<{kind_text(f)}>")
    return f"{spec.mnemonic} {', '.join(parts)}" if parts else spec.mnemonic


def kind_text(f: Field) -> str:
    """What a field takes, for messages and docs: reg, dtype, enum names, or kind and bits."""
    if f.kind is Kind.REG:
        return "reg"
    if f.kind is Kind.DTYPE:
        return "dtype"
    if f.kind is Kind.ENUM and f.enum is not None:
        return "|".join(m.name.lower() for m in f.enum)
    return f"{f.kind.value}{f.bits}"
