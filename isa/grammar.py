"""The lark grammar of dojoc assembly, generated from the instruction table.

Every mnemonic of `isa.table.INSTRUCTIONS` is a literal alternative of the MNEMONIC terminal and
every field name a literal alternative of the KEY terminal, so adding an instruction to the table
extends the grammar with no change here. The grammar checks the shape of each line (labels,
directives, `mnemonic operand, ..., key=value`); which operands an instruction takes and their
ranges are checked by `isa.asm` against the table, with messages that name the field.

The language is described in docs/asm.md.
"""

from __future__ import annotations

import json
import re
from functools import cache

from lark import Lark

from isa.table import INSTRUCTIONS

DIRECTIVES = (".machine", ".tensor", ".signature", ".section", ".debug", ".equ")

# A name: labels, tensors, sections, .equ constants, dtypes and enum values. Names starting with
# `.L` are assembler-local labels (resolved, not kept in the image). A dot may not be followed by a
# dot, so `A..B` reads as a range.
NAME_RE = r"(?:[A-Za-z_$]|\.L)(?:[\w$]|\.(?!\.))*"
_END = r"(?![\w$.])"  # a word ends here
REG_RE = r"r\d+" + _END
NUMBER_RE = (r"[+-]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|inf|nan)(?![\w$])")
STRING_RE = r'"(?:[^"\\\n]|\\.)*"'
_RESERVED = {"cores", "all", "inf", "nan"}


def _alternation(words: set[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w)))


def mnemonics() -> list[str]:
    """Every mnemonic, in opcode order."""
    return [s.mnemonic for s in INSTRUCTIONS]


def field_names() -> set[str]:
    """Every field name of every instruction (the keys of `key=value` operands)."""
    return {f.name for s in INSTRUCTIONS for f in s.fields}


def grammar_text() -> str:
    """The lark grammar (LALR, contextual lexer) derived from the instruction table."""
    mnemonic_re = f"(?:{_alternation(set(mnemonics()))})(?![\\w$.:])"
    key_re = f"(?:{_alternation(field_names())})(?=[ \\t]*=)"
    return rf"""
start: (_line? _NL)* _line?

_line: label+ | label* _stmt
label: NAME ":"
_stmt: instr | bad_instr | machine_dir | tensor_dir | signature_dir | section_dir | debug_dir | equ_dir

instr: MNEMONIC (_operand ("," _operand)*)?
bad_instr: NAME (_operand ("," _operand)*)?
_operand: value | kwarg
kwarg: (KEY | NAME) "=" value  // NAME: so that an unknown field gets a precise message
?value: REG | NUMBER | NAME

machine_dir: ".machine" (STRING | PATH)
tensor_dir: ".tensor" _tname NAME value NAME shape opt*
shape: "[" (value ("," value)*)? "]"
opt: NAME "=" (STRING | value)
signature_dir: SIGNATURE sig_item*
sig_item: NAME "=" _tname ("," _tname)*
section_dir: ".section" _tname "cores" "=" cores
cores: "all" -> cores_all
     | core_item ("," core_item)*
core_item: value (".." value)?
debug_dir: DEBUG opt*
equ_dir: ".equ" NAME value
_tname: NAME | STRING

SIGNATURE: ".signature"
DEBUG: ".debug"
MNEMONIC.3: /{mnemonic_re}/
KEY.3: /{key_re}/
REG.2: /{REG_RE}/
NUMBER.2: /{NUMBER_RE}/
NAME: /{NAME_RE}/
STRING: /{STRING_RE}/
PATH: /[^\s"#;=,]+/

COMMENT: /[;#][^\n]*/
WS: /[ \t\f\r]+/
_NL: /\n/
%ignore COMMENT
%ignore WS
"""


@cache
def parser() -> Lark:
    """The (cached) LALR parser of the generated grammar."""
    return Lark(grammar_text(), parser="lalr", lexer="contextual", maybe_placeholders=False)


# Human descriptions of terminals, for error messages.
TERMINAL_TEXT = {
    "MNEMONIC": "an instruction",
    "KEY": "a field name (key=value)",
    "REG": "a register (r0..r31)",
    "NUMBER": "a number",
    "NAME": "a name",
    "STRING": 'a string ("...")',
    "PATH": "a preset name or a .toml path",
    "_NL": "end of line",
    "$END": "end of input",
}


def quote_name(name: str) -> str:
    """`name` as assembly text: bare when it reads back as a plain name, else a JSON string."""
    if (re.fullmatch(NAME_RE, name) and name not in _RESERVED and not re.fullmatch(r"r\d+", name)
            and not name.startswith(".L")):
        return name
    return json.dumps(name, ensure_ascii=False)


def quote_string(text: str) -> str:
    """A string as an assembly STRING literal (JSON escapes)."""
    return json.dumps(text, ensure_ascii=False)
