"""The assembler: dojoc assembly text (docs/asm.md) -> `isa.program.Image`.

Parsing uses the lark grammar generated from the instruction table (`isa.grammar`); operands are
checked against the table here, so no instruction needs code of its own. Every error is an
`isa.errors.AsmError` carrying the line and column and saying what was expected.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from isa.dtypes import DType
from isa.encoding import check_field
from isa.errors import AsmError, DojocError, EncodingError
from isa.grammar import DIRECTIVES, TERMINAL_TEXT, mnemonics, parser
from isa.machine import Machine
from isa.presets import load_machine
from isa.program import CodeSection, DebugEntry, Image, Signature, Tensor, TensorKind
from isa.table import BY_MNEMONIC, Field, Instr, InstrSpec, Kind
from isa.text import kind_text, syntax

LOCAL_PREFIX = ".L"  # labels with this prefix are resolved but not kept in CodeSection.labels


class _Err(Exception):
    """An error at a token, turned into AsmError with the file name by `assemble`."""

    def __init__(self, message: str, tok: Any = None) -> None:
        super().__init__(message)
        self.line: int | None = getattr(tok, "line", None)
        self.column: int | None = getattr(tok, "column", None)


def parse_number(text: str) -> int | float:
    """A number token: decimal or 0x/0b integer, or a float (also inf, -inf, nan)."""
    sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    low = body.lower()
    if low.startswith("0x"):
        return sign * int(body[2:], 16)
    if low.startswith("0b"):
        return sign * int(body[2:], 2)
    if low in ("inf", "nan") or any(c in low for c in ".e"):
        return sign * float(low)
    return sign * int(body, 10)


def _string(tok: Any) -> str:
    try:
        value = json.loads(str(tok))
    except json.JSONDecodeError as e:
        raise _Err(f"bad string literal {tok}: {e.msg}", tok) from None
    assert isinstance(value, str)
    return value


def _tname(tok: Any) -> str:
    return _string(tok) if tok.type == "STRING" else str(tok)


@dataclass
class _Section:
    name: str
    cores: tuple[int, ...]
    tok: Any
    code: list[Instr | None] = field(default_factory=list)
    pending: list[tuple[int, InstrSpec, list[Any]]] = field(default_factory=list)  # unresolved targets
    labels: dict[str, tuple[int, Any]] = field(default_factory=dict)
    debug: list[tuple[Token, str, str]] = field(default_factory=list)  # .debug lines not yet attached


class _Assembler:
    def __init__(self, base_dir: Path | None, machine: Machine | str | None) -> None:
        self.base_dir = base_dir if base_dir is not None else Path(".")
        self.machine_arg = load_machine(machine) if isinstance(machine, str) else machine
        self.machine: Machine | None = None
        self.machine_tok: Any = None
        self.equ: dict[str, int | float] = {}
        self.tensors: dict[str, Tensor] = {}
        self.signature: Signature | None = None
        self.sig_tokens: dict[str, list[tuple[Any, str]]] = {}
        self.sections: list[CodeSection] = []
        self.section_names: set[str] = set()
        self.core_owner: dict[int, str] = {}
        self.debug: list[DebugEntry] = []
        self.cur: _Section | None = None

    # -- machine ----------------------------------------------------------------------------
    def _data_path(self, file: str, tok: Token) -> Path:
        """`file` inside the assembly's folder (subfolders included); a path that leaves it (`../`, an
        absolute path elsewhere, a symbolic link out) is refused, so assembly only reads what it ships with."""
        base = self.base_dir.resolve()
        path = (self.base_dir / file).resolve()
        if path != base and base not in path.parents:
            raise _Err(f"weight file {file!r} is outside the assembly's folder {base}: data files are read only "
                       "from that folder and its subfolders; copy the file there", tok)
        return path

    def get_machine(self) -> Machine:
        if self.machine is None:
            self.machine = self.machine_arg or load_machine("d1")
        return self.machine

    def do_machine_dir(self, t: Tree) -> None:
        tok = t.children[0]
        if self.machine_tok is not None:
            raise _Err(f".machine given twice (first at line {self.machine_tok.line})", tok)
        if self.machine is not None:
            raise _Err(".machine must come before any .tensor or .section", tok)
        self.machine_tok = tok
        if self.machine_arg is not None:  # the caller's machine overrides the directive
            self.machine = self.machine_arg
            return
        spec = _tname(tok)
        if spec.endswith(".toml") and not Path(spec).is_absolute():
            spec = str(self.base_dir / spec)
        try:
            self.machine = load_machine(spec)
        except DojocError as e:
            raise _Err(str(e), tok) from None

    # -- values -----------------------------------------------------------------------------
    def number(self, tok: Any, what: str = "a number") -> int | float:
        if isinstance(tok, Token) and tok.type == "NUMBER":
            return parse_number(str(tok))
        if isinstance(tok, Token) and tok.type == "NAME" and str(tok) in self.equ:
            return self.equ[str(tok)]
        if isinstance(tok, Token) and tok.type == "NAME":
            raise _Err(f"unknown constant {tok}; expected {what} (define it with .equ)", tok)
        raise _Err(f"expected {what}, got {tok}", tok)

    def integer(self, tok: Any, what: str = "an integer") -> int:
        v = self.number(tok, what)
        if isinstance(v, float):
            raise _Err(f"expected {what}, got {tok}", tok)
        return v

    def do_equ_dir(self, t: Tree) -> None:
        name, value = t.children
        if str(name) in self.equ:
            raise _Err(f".equ {name} defined twice", name)
        self.equ[str(name)] = self.number(value)

    # -- tensors and signature --------------------------------------------------------------
    def do_tensor_dir(self, t: Tree) -> None:
        name_tok, kind_tok, addr_tok, dt_tok, shape, *opts = t.children
        name = _tname(name_tok)
        if name in self.tensors:
            raise _Err(f"tensor {name} declared twice", name_tok)
        try:
            kind = TensorKind(str(kind_tok))
        except ValueError:
            raise _Err(f"unknown tensor kind {kind_tok}; expected one of "
                       f"{', '.join(k.value for k in TensorKind)}", kind_tok) from None
        address = self.integer(addr_tok, "an address")
        if address < 0:
            raise _Err(f"tensor address {address} is negative", addr_tok)
        try:
            dtype = DType.from_asm(str(dt_tok))
        except KeyError:
            raise _Err(f"unknown dtype {dt_tok}; expected one of {', '.join(d.asm for d in DType)}",
                       dt_tok) from None
        dims = []
        for d in shape.children:
            n = self.integer(d, "a dimension")
            if n < 0:
                raise _Err(f"dimension {n} is negative", d)
            dims.append(n)
        options = self.options(opts, {"file", "sha256"})
        tensor = Tensor(name, kind, address, tuple(dims), dtype)
        m = self.get_machine()
        if address + tensor.nbytes > m.dram_bytes:
            raise _Err(f"tensor {name} ({tensor.nbytes} bytes at {address:#x}) does not fit in the "
                       f"{m.dram_bytes} bytes of DRAM of machine {m.name}", addr_tok)
        data, file = None, None
        if "file" in options:
            ftok, file = options["file"]
            if kind is not TensorKind.WEIGHT:
                raise _Err(f"only weight tensors take file= (tensor {name} is {kind.value})", ftok)
            path = self._data_path(file, ftok)
            try:
                size = path.stat().st_size  # before reading: a file of the wrong size is never loaded
                if size == tensor.nbytes:
                    data = path.read_bytes()
            except OSError as e:
                raise _Err(f"cannot read weight file {path}: {e.strerror or e}", ftok) from None
            if data is None or len(data) != tensor.nbytes:
                raise _Err(f"weight file {path} has {size} bytes; tensor {name} needs {tensor.nbytes}", ftok)
            if "sha256" in options:
                stok, want = options["sha256"]
                got = hashlib.sha256(data).hexdigest()
                if got != want.lower():
                    raise _Err(f"weight file {path} has sha256 {got}, not {want}", stok)
        elif "sha256" in options:
            raise _Err("sha256= needs file=", options["sha256"][0])
        self.tensors[name] = Tensor(name, kind, address, tuple(dims), dtype, data, file)

    def options(self, opts: list[Any], allowed: set[str]) -> dict[str, tuple[Any, str]]:
        out: dict[str, tuple[Any, str]] = {}
        for o in opts:
            key, val = o.children
            if str(key) not in allowed:
                raise _Err(f"unknown option {key}; expected {' or '.join(sorted(allowed))}", key)
            if str(key) in out:
                raise _Err(f"option {key} given twice", key)
            out[str(key)] = (val, _string(val) if val.type == "STRING" else str(val))
        return out

    def do_signature_dir(self, t: Any) -> None:
        kw, *items = t.children
        if self.signature is not None:
            raise _Err(".signature given twice", kw)
        fields: dict[str, Any] = {}
        for item in items:
            key, *names = item.children
            if str(key) not in ("inputs", "outputs", "tree"):
                raise _Err(f"unknown .signature key {key}; expected inputs, outputs or tree", key)
            if str(key) in fields:
                raise _Err(f"{key} given twice", key)
            if str(key) == "tree":
                if len(names) != 1 or names[0].type != "STRING":
                    raise _Err('tree= takes one string (the JSON of the output pytree)', key)
                fields["tree"] = _string(names[0])
            else:
                fields[str(key)] = [(n, _tname(n)) for n in names]
        self.signature = Signature(tuple(n for _, n in fields.get("inputs", ())),
                                   tuple(n for _, n in fields.get("outputs", ())), fields.get("tree", ""))
        self.sig_tokens = {k: v for k, v in fields.items() if k != "tree"}

    def check_signature(self) -> None:
        for key, kind in (("inputs", TensorKind.INPUT), ("outputs", TensorKind.OUTPUT)):
            for tok, name in self.sig_tokens.get(key, ()):
                if name not in self.tensors:
                    raise _Err(f"signature {key[:-1]} {name} is not a declared tensor", tok)
                if self.tensors[name].kind is not kind:
                    raise _Err(f"signature {key[:-1]} {name} is a {self.tensors[name].kind.value} tensor, "
                               f"not {kind.value}", tok)

    # -- sections ---------------------------------------------------------------------------
    def do_section_dir(self, t: Tree) -> None:
        self.close_section()
        name_tok, cores = t.children
        name = _tname(name_tok)
        if name in self.section_names:
            raise _Err(f"section {name} declared twice", name_tok)
        m = self.get_machine()
        ids: list[int] = []
        if cores.data == "cores_all":
            ids = list(range(m.num_cores))
        else:
            for item in cores.children:
                lo = self.integer(item.children[0], "a core id")
                hi = self.integer(item.children[-1], "a core id")
                if hi < lo:
                    raise _Err(f"empty core range {lo}..{hi}", item.children[0])
                for c in range(lo, hi + 1):
                    if not 0 <= c < m.num_cores:
                        raise _Err(f"core {c} does not exist on machine {m.name} "
                                   f"(cores 0..{m.num_cores - 1})", item.children[0])
                    if c in ids:
                        raise _Err(f"core {c} listed twice", item.children[0])
                    ids.append(c)
        for c in ids:
            if c in self.core_owner:
                raise _Err(f"core {c} already runs section {self.core_owner[c]}", name_tok)
            self.core_owner[c] = name
        self.section_names.add(name)
        self.cur = _Section(name, tuple(ids), name_tok)

    def section(self, tok: Any, what: str) -> _Section:
        if self.cur is None:
            raise _Err(f"{what} outside a section; start one with `.section NAME cores=...`", tok)
        return self.cur

    def do_label(self, t: Tree) -> None:
        tok = t.children[0]
        sec = self.section(tok, f"label {tok}")
        if str(tok) in sec.labels:
            raise _Err(f"duplicate label {tok} (first defined at line {sec.labels[str(tok)][1].line})", tok)
        sec.labels[str(tok)] = (len(sec.code), tok)

    def do_debug_dir(self, t: Any) -> None:
        kw, *items = t.children
        opts = self.options(items, {"op", "source"})
        sec = self.section(kw, ".debug")
        if "op" not in opts:
            raise _Err('.debug needs op="..."', kw)
        sec.debug.append((kw, opts["op"][1], opts.get("source", (kw, ""))[1]))

    def do_bad_instr(self, t: Tree) -> None:
        tok = t.children[0]
        close = difflib.get_close_matches(str(tok), mnemonics(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise _Err(f"unknown mnemonic {tok}{hint}", tok)

    def do_instr(self, t: Tree) -> None:
        mtok, *ops = t.children
        sec = self.section(mtok, f"instruction {mtok}")
        spec = BY_MNEMONIC[str(mtok)]
        positional = [f for f in spec.fields if f.positional]
        given: dict[str, Any] = {}
        seen_kw = False
        for op in ops:
            if isinstance(op, Tree):  # key=value
                key, val = op.children
                seen_kw = True
                names = [f.name for f in spec.fields]
                if str(key) not in names:
                    close = difflib.get_close_matches(str(key), names, n=3)
                    raise _Err(f"{spec.mnemonic} has no field {key}; its fields are "
                               f"{', '.join(names) or 'none'}"
                               + (f" (did you mean {', '.join(close)}?)" if close else ""), key)
                if str(key) in given:
                    raise _Err(f"field {key} of {spec.mnemonic} given twice", key)
                given[str(key)] = val
            else:
                if seen_kw:
                    raise _Err(f"positional operand after key=value operands; syntax: {syntax(spec)}", op)
                n = sum(1 for f in positional if f.name in given)
                if n >= len(positional):
                    raise _Err(f"{spec.mnemonic} takes {len(positional)} positional operand(s), got more; "
                               f"syntax: {syntax(spec)}", op)
                given[positional[n].name] = op
        args: list[Any] = []
        pending = False
        for f in spec.fields:
            if f.name in given:
                tok = given[f.name]
                value = self.field_value(spec, f, tok)
                if f.kind is Kind.TARGET and isinstance(value, Token):
                    pending = True
                    args.append(value)
                    continue
                try:
                    args.append(check_field(spec, f, value))
                except EncodingError as e:
                    raise _Err(str(e), tok) from None
            elif f.default is not None:
                args.append(check_field(spec, f, f.default))
            else:
                raise _Err(f"missing field {f.name} of {spec.mnemonic}"
                           + (f" ({f.doc})" if f.doc else "") + f"; syntax: {syntax(spec)}", mtok)
        pc = len(sec.code)
        if pending:
            sec.pending.append((pc, spec, args))
            sec.code.append(None)
        else:
            sec.code.append(Instr(spec, tuple(args)))
        for _tok, op_name, source in sec.debug:
            self.debug.append(DebugEntry(len(self.sections), pc, op_name, source))
        sec.debug.clear()

    def field_value(self, spec: InstrSpec, f: Field, tok: Token) -> Any:
        kind, where = f.kind, f"field {f.name} of {spec.mnemonic}"
        if kind is Kind.REG:
            if tok.type != "REG":
                raise _Err(f"{where} expects a register (r0..r31), got {tok}", tok)
            return str(tok)
        if kind in (Kind.DTYPE, Kind.ENUM):
            if tok.type != "NAME":
                raise _Err(f"{where} expects {kind_text(f)}, got {tok}", tok)
            return str(tok)
        if kind is Kind.TARGET and tok.type == "NAME":
            return tok  # a label (or else a constant), resolved when the section ends
        if kind is Kind.F32:
            return self.number(tok, f"a number for {where}")
        return self.integer(tok, f"an integer for {where}")

    def close_section(self) -> None:
        sec = self.cur
        if sec is None:
            return
        if sec.debug:
            raise _Err(".debug is not followed by an instruction in its section", sec.debug[0][0])
        for pc, spec, args in sec.pending:
            resolved = []
            for f, v in zip(spec.fields, args, strict=True):
                if isinstance(v, Token):
                    tok = v
                    if str(tok) in sec.labels:
                        v = sec.labels[str(tok)][0]
                    elif str(tok) in self.equ:
                        v = self.integer(tok, f"a label or an integer for field {f.name} of {spec.mnemonic}")
                    else:
                        close = difflib.get_close_matches(str(tok), list(sec.labels), n=3)
                        raise _Err(f"unknown label {tok} in section {sec.name}"
                                   + (f" (did you mean {', '.join(close)}?)" if close else ""), tok)
                    try:
                        v = check_field(spec, f, v)
                    except EncodingError as e:
                        raise _Err(str(e), tok) from None
                resolved.append(v)
            sec.code[pc] = Instr(spec, tuple(resolved))
        code = tuple(i for i in sec.code if i is not None)
        labels = tuple((n, pc) for n, (pc, _) in sec.labels.items() if not n.startswith(LOCAL_PREFIX))
        self.sections.append(CodeSection(sec.name, sec.cores, code, labels))
        self.cur = None

    def run(self, tree: Tree) -> Image:
        for stmt in tree.children:
            getattr(self, f"do_{stmt.data}")(stmt)
        self.close_section()
        self.check_signature()
        sig = self.signature or Signature()
        return Image(self.get_machine(), tuple(self.sections), tuple(self.tensors.values()), sig,
                     tuple(self.debug))


def _describe(names: Collection[Any]) -> str:
    p = parser()
    by_name = {t.name: t for t in p.terminals}
    out = []
    names = {str(x) for x in names}
    if "_NL" in names:
        names.discard("$END")
    for n in sorted(names):
        if n in TERMINAL_TEXT:
            out.append(TERMINAL_TEXT[n])
        elif n in by_name and by_name[n].pattern.type == "str":
            out.append(repr(by_name[n].pattern.value))
        else:
            out.append(n)
    return ", ".join(dict.fromkeys(out)) or "nothing"


def _syntax_error(e: UnexpectedInput, text: str) -> tuple[str, int | None, int | None]:
    line: int | None = getattr(e, "line", None)
    col: int | None = getattr(e, "column", None)
    if isinstance(e, UnexpectedCharacters):
        rest = text[e.pos_in_stream:].split("\n", 1)[0]
        word = rest.split()[0] if rest.split() else rest
        if word.startswith(".") and "MNEMONIC" in e.allowed:
            return f"unknown directive {word}; expected one of {', '.join(DIRECTIVES)}", line, col
        return f"unexpected {word!r}; expected {_describe(e.allowed)}", line, col
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            return f"unexpected end of input; expected {_describe(e.expected)}", text.count("\n") + 1, None
        if str(tok).startswith(".") and "MNEMONIC" in e.expected:
            return f"unknown directive {tok}; expected one of {', '.join(DIRECTIVES)}", line, col
        got = "end of line" if tok.type == "_NL" else repr(str(tok))
        return f"unexpected {got}; expected {_describe(e.expected)}", line, col
    if isinstance(e, UnexpectedEOF):
        return f"unexpected end of input; expected {_describe(e.expected)}", text.count("\n") + 1, None
    return str(e), line, col


def assemble(text: str, *, base_dir: Path | None = None, machine: Machine | str | None = None,
             filename: str = "<asm>") -> Image:
    """Assemble dojoc assembly `text` into an Image.

    `base_dir` is where weight files (`file=`) and `.machine` TOML paths are looked up (default: the
    current directory); `machine` (a Machine, preset name or TOML path) overrides the `.machine`
    directive; the default machine is d1. Raises AsmError with line and column on any error.
    """
    where = "" if filename == "<asm>" else f" (in {filename})"
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the parse tree is millions of young objects: collecting them repeatedly halves the speed
    try:
        try:
            tree = parser().parse(text if text.endswith("\n") else text + "\n")
        except UnexpectedInput as e:
            msg, line, col = _syntax_error(e, text)
            raise AsmError(msg + where, line, col) from None
        try:
            return _Assembler(Path(base_dir) if base_dir is not None else None, machine).run(tree)
        except _Err as e:
            raise AsmError(f"{e}{where}", e.line, e.column) from None
    finally:
        if gc_was_enabled:
            gc.enable()
