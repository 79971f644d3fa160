"""The disassembler: an `isa.program.Image` -> assembly text that assembles back to the same Image.

Branch targets with no label get assembler-local labels `.L0`, `.L1`, ... (resolved by the
assembler but not kept in the image, so the round trip is exact). Weight data is not printed: each
weight refers to its file by name and sha256, and `write_data_files` writes those files (and, for a
machine that is not an unmodified preset, its TOML description) next to the assembly.
"""

from __future__ import annotations

import re
from pathlib import Path

from isa.errors import DojocError
from isa.files import write_atomic
from isa.grammar import quote_name, quote_string
from isa.presets import PRESETS, dump_toml, load_machine
from isa.program import CodeSection, Image, TensorKind
from isa.table import Kind
from isa.text import format_instr


def _is_preset(image: Image) -> bool:
    name = image.machine.name
    return name in PRESETS and load_machine(name) == image.machine


def machine_file(image: Image) -> str:
    """The TOML file name the disassembly refers to when the machine is not an unmodified preset."""
    return re.sub(r"[^\w.-]", "_", image.machine.name) + ".toml"


def data_file(name: str) -> str:
    """The default weight file name of a tensor with no recorded file."""
    return re.sub(r"[^\w.-]", "_", name) + ".bin"


def format_cores(cores: tuple[int, ...], num_cores: int) -> str:
    """A core list as `all`, or comma-separated ids with ascending runs as `a..b`."""
    if cores == tuple(range(num_cores)):
        return "all"
    parts, i = [], 0
    while i < len(cores):
        j = i
        while j + 1 < len(cores) and cores[j + 1] == cores[j] + 1:
            j += 1
        parts.append(str(cores[i]) if i == j else f"{cores[i]}..{cores[j]}")
        i = j + 1
    return ", ".join(parts)


def _labels(section: CodeSection) -> tuple[dict[int, str], dict[int, list[str]]]:
    """(name used for each target, all label names defined at each pc)."""
    at: dict[int, list[str]] = {}
    for name, pc in section.labels:
        at.setdefault(pc, []).append(name)
    names = {pc: ns[0] for pc, ns in at.items()}
    local = 0
    for ins in section.code:
        for f, v in zip(ins.spec.fields, ins.args, strict=True):
            if f.kind is Kind.TARGET and v not in names and 0 <= v <= len(section.code):
                names[v] = f".L{local}"
                at.setdefault(v, []).append(names[v])
                local += 1
    return names, at


def disassemble(image: Image) -> str:
    """Assembly text for `image`; assembling it (with the same machine, and the weight files from
    `write_data_files`) gives an equal Image and equal object bytes."""
    m = image.machine
    out = [f"; dojoc assembly: machine {m.name} ({m.num_cores} cores), hash {m.hash[:16]}"]
    out.append(f".machine {m.name}" if _is_preset(image) else f".machine {quote_string(machine_file(image))}")
    for t in image.tensors:
        shape = "[" + ", ".join(str(d) for d in t.shape) + "]"
        line = f".tensor {quote_name(t.name)} {t.kind.value} {t.address:#x} {t.dtype.asm} {shape}"
        if t.kind is TensorKind.WEIGHT and t.data is not None:
            line += f" file={quote_string(t.file or data_file(t.name))} sha256=\"{t.sha256}\""
        out.append(line)
    sig = image.signature
    items = [f"{k}={','.join(quote_name(n) for n in names)}"
             for k, names in (("inputs", sig.inputs), ("outputs", sig.outputs)) if names]
    if sig.output_tree:
        items.append(f"tree={quote_string(sig.output_tree)}")
    if items:
        out.append(".signature " + " ".join(items))
    for si, s in enumerate(image.sections):
        out.append("")
        out.append(f".section {quote_name(s.name)} cores={format_cores(s.cores, m.num_cores)}")
        names, at = _labels(s)
        debug: dict[int, list[str]] = {}
        for d in image.debug:
            if d.section == si:
                src = f" source={quote_string(d.source)}" if d.source else ""
                debug.setdefault(d.pc, []).append(f"    .debug op={quote_string(d.op)}{src}")
        for pc, ins in enumerate(s.code):
            out += [f"{name}:" for name in at.get(pc, ())]
            out += debug.get(pc, [])
            out.append("    " + format_instr(ins, names))
        out += [f"{name}:" for name in at.get(len(s.code), ())]
    return "\n".join(out) + "\n"


def write_data_files(image: Image, directory: str | Path) -> list[Path]:
    """Write the files the disassembly refers to (weight data, and a machine TOML when the machine is not
    an unmodified preset) into `directory`; returns their paths."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    if not _is_preset(image):
        path = root / machine_file(image)
        write_atomic(path, dump_toml(image.machine).encode())
        written.append(path)
    for t in image.tensors:
        if t.kind is not TensorKind.WEIGHT or t.data is None:
            continue
        rel = Path(t.file or data_file(t.name))
        if rel.is_absolute() or ".." in rel.parts:
            raise DojocError(f"tensor {t.name}: refusing to write data file {rel} outside {root}")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, t.data)
        written.append(path)
    return written
