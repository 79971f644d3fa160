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
from isa.table import Field, Instr, Kind


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
