"""The binary object file (`.dobj`): an `isa.program.Image` as bytes. Format: docs/objfile.md.

Layout: a 16-byte header (magic, version, section count), a table of sections (tag, offset, length,
flags) that lets a reader skip tags it does not know, the section payloads, and a trailing sha256 of
everything before it. Only `struct` and `json` are used to read it: loading a file never runs code.
Every problem with the bytes raises `isa.errors.ObjectFileError`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from isa.dtypes import DType
from isa.encoding import decode_code, encode_code
from isa.errors import ObjectFileError
from isa.files import write_atomic
from isa.machine import Machine
from isa.presets import machine_from_dict
from isa.program import CodeSection, DebugEntry, Image, Signature, Tensor, TensorKind

MAGIC = b"DOJOOBJ\0"
VERSION = 1
HEADER = struct.Struct("<8sHHI")  # magic, version, number of sections, reserved (0)
ENTRY = struct.Struct("<4sQQI")  # tag, offset, length, flags
CHECKSUM_BYTES = 32  # sha256 of every byte before it
FLAG_REQUIRED = 1  # a reader that does not know this tag must refuse the file
DATA_ALIGN = 64
KNOWN = ("MACH", "CODE", "TENS", "DATA", "SIGN", "DBUG")
REQUIRED = ("MACH", "CODE")


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def check_image(image: Image) -> None:
    """Check what the format relies on: core ids exist and run one section, labels and debug entries
    point into their section, tensor names are unique, tensors lie in the machine's DRAM and weight data
    has its tensor's size."""
    n = image.machine.num_cores
    owner: dict[int, str] = {}
    for s in image.sections:
        for c in s.cores:
            if not 0 <= c < n:
                raise ObjectFileError(f"section {s.name}: core {c} does not exist (machine has {n} cores)")
            if c in owner:
                raise ObjectFileError(f"core {c} runs both section {owner[c]} and section {s.name}")
            owner[c] = s.name
        for label, pc in s.labels:
            if not 0 <= pc <= len(s.code):
                raise ObjectFileError(f"section {s.name}: label {label} points outside the code ({pc})")
    for d in image.debug:
        if not (0 <= d.section < len(image.sections) and 0 <= d.pc < len(image.sections[d.section].code)):
            raise ObjectFileError(f"debug entry ({d.section}, {d.pc}) points to no instruction")
    names = [t.name for t in image.tensors]
    if len(set(names)) != len(names):
        raise ObjectFileError("two tensors have the same name")
    dram = image.machine.dram_bytes
    for t in image.tensors:
        # before anything is allocated: a tensor must lie in the machine's DRAM (a declared 1 TB tensor
        # is an error here, not a gigantic allocation when inputs are set or outputs read)
        if t.address + t.nbytes > dram:
            raise ObjectFileError(f"tensor {t.name} declares {t.nbytes:,} bytes at DRAM address {t.address:,}, "
                                  f"past the end of {image.machine.name}'s {dram:,} bytes of DRAM")
        if t.data is not None and len(t.data) != t.nbytes:
            raise ObjectFileError(f"tensor {t.name}: {len(t.data)} data bytes for {t.nbytes} bytes "
                                  "of storage")


def write_object(image: Image) -> bytes:
    """The object-file bytes of `image` (deterministic: equal images give equal bytes)."""
    check_image(image)
    code = struct.pack("<I", len(image.sections))
    for s in image.sections:
        code += _str(s.name) + struct.pack(f"<I{len(s.cores)}I", len(s.cores), *s.cores)
        code += struct.pack("<I", len(s.labels))
        for label, pc in s.labels:
            code += _str(label) + struct.pack("<I", pc)
        code += struct.pack("<I", len(s.code)) + encode_code(s.code)
    data = bytearray()
    tens = []
    for t in image.tensors:
        entry: dict[str, Any] = {"name": t.name, "kind": t.kind.value, "address": t.address,
                                 "dtype": t.dtype.asm, "shape": list(t.shape), "file": t.file,
                                 "sha256": t.sha256, "offset": None, "length": None}
        if t.data is not None:
            data += bytes(-len(data) % DATA_ALIGN)
            entry["offset"], entry["length"] = len(data), len(t.data)
            data += t.data
        tens.append(entry)
    sig = image.signature
    payloads = [
        ("MACH", FLAG_REQUIRED, _json({"hash": image.machine.hash, "machine": image.machine.to_dict()})),
        ("CODE", FLAG_REQUIRED, code),
        ("TENS", FLAG_REQUIRED, _json(tens)),
        ("DATA", FLAG_REQUIRED, bytes(data)),
        ("SIGN", FLAG_REQUIRED, _json({"inputs": list(sig.inputs), "outputs": list(sig.outputs),
                                       "output_tree": sig.output_tree})),
        ("DBUG", 0, _json([[d.section, d.pc, d.op, d.source] for d in image.debug])),
    ]
    offset = HEADER.size + ENTRY.size * len(payloads)
    table, body = b"", b""
    for tag, flags, payload in payloads:
        pad = -offset % 8 if tag != "DATA" else -offset % DATA_ALIGN
        body += bytes(pad)
        offset += pad
        table += ENTRY.pack(tag.encode(), offset, len(payload), flags)
        body += payload
        offset += len(payload)
    out = HEADER.pack(MAGIC, VERSION, len(payloads), 0) + table + body
    return out + hashlib.sha256(out).digest()


# -- reading --------------------------------------------------------------------------------------

class _Reader:
    """Bounds-checked little-endian reads from one section."""

    def __init__(self, data: bytes, tag: str) -> None:
        self.data, self.pos, self.tag = data, 0, tag

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ObjectFileError(f"section {self.tag} is truncated (needs {n} bytes at {self.pos})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def str(self) -> str:
        return self.take(self.u32()).decode()


def _typed(value: Any, tp: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, tp) or isinstance(value, bool) and tp is not bool:
        raise ObjectFileError(f"{what}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__}")
    return value


def _load_json(payload: bytes, tag: str) -> Any:
    try:
        return json.loads(payload.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ObjectFileError(f"section {tag} is not valid JSON ({e})") from None


def _sections(data: bytes) -> dict[str, bytes]:
    if len(data) < HEADER.size + CHECKSUM_BYTES:
        raise ObjectFileError(f"file too short to be an object file ({len(data)} bytes)")
    magic, version, count, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ObjectFileError(f"not a dojoc object file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ObjectFileError(f"object file version {version} is not supported (this dojoc reads {VERSION})")
    body, digest = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise ObjectFileError("object file is corrupt or truncated (checksum mismatch)")
    table_end = HEADER.size + ENTRY.size * count
    if table_end > len(body):
        raise ObjectFileError(f"section table of {count} entries runs past the end of the file")
    out: dict[str, bytes] = {}
    for i in range(count):
        raw, offset, length, flags = ENTRY.unpack_from(body, HEADER.size + ENTRY.size * i)
        try:
            tag = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ObjectFileError(f"section {i} has a non-ASCII tag {raw!r}") from None
        if offset < table_end or offset + length > len(body):
            raise ObjectFileError(f"section {tag} ({length} bytes at {offset}) lies outside the file")
        if tag in out:
            raise ObjectFileError(f"section {tag} appears twice")
        if tag not in KNOWN:
            if flags & FLAG_REQUIRED:
                raise ObjectFileError(f"object file needs section {tag}, which this dojoc does not know")
            continue
        out[tag] = body[offset:offset + length]
    for tag in REQUIRED:
        if tag not in out:
            raise ObjectFileError(f"object file has no {tag} section")
    return out


def _machine(payload: bytes) -> Machine:
    d = _typed(_load_json(payload, "MACH"), dict, "MACH")
    machine = machine_from_dict(_typed(d.get("machine"), dict, "MACH machine"))
    if machine.hash != d.get("hash"):
        raise ObjectFileError(f"machine description {machine.name} does not match its recorded hash "
                              "(written by an incompatible dojoc?)")
    return machine


def _code(payload: bytes) -> tuple[CodeSection, ...]:
    r = _Reader(payload, "CODE")
    sections = []
    for _ in range(r.u32()):
        name = r.str()
        cores = tuple(r.u32() for _ in range(r.u32()))
        labels = tuple((r.str(), r.u32()) for _ in range(r.u32()))
        code = decode_code(r.take(16 * r.u32()))
        sections.append(CodeSection(name, cores, code, labels))
    if r.pos != len(payload):
        raise ObjectFileError(f"section CODE has {len(payload) - r.pos} stray bytes at its end")
    return tuple(sections)


def _tensors(payload: bytes, data: bytes) -> tuple[Tensor, ...]:
    out = []
    for i, e in enumerate(_typed(_load_json(payload, "TENS"), list, "TENS")):
        w = f"TENS[{i}]"
        _typed(e, dict, w)
        shape = tuple(_typed(s, int, f"{w}.shape") for s in _typed(e["shape"], list, f"{w}.shape"))
        if min(shape, default=0) < 0 or _typed(e["address"], int, f"{w}.address") < 0:
            raise ObjectFileError(f"{w}: negative address or dimension")
        blob = None
        if e["offset"] is not None:
            off, n = _typed(e["offset"], int, f"{w}.offset"), _typed(e["length"], int, f"{w}.length")
            if off < 0 or n < 0 or off + n > len(data):
                raise ObjectFileError(f"{w}: data ({n} bytes at {off}) lies outside the DATA section")
            blob = data[off:off + n]
        file = e["file"]
        t = Tensor(_typed(e["name"], str, f"{w}.name"), TensorKind(e["kind"]), e["address"], shape,
                   DType.from_asm(_typed(e["dtype"], str, f"{w}.dtype")), blob,
                   None if file is None else _typed(file, str, f"{w}.file"))
        if t.sha256 != e["sha256"]:
            raise ObjectFileError(f"tensor {t.name}: data does not match its sha256")
        out.append(t)
    return tuple(out)


def _signature(payload: bytes | None) -> Signature:
    if payload is None:
        return Signature()
    d = _typed(_load_json(payload, "SIGN"), dict, "SIGN")
    names = [tuple(_typed(n, str, f"SIGN.{k}") for n in _typed(d[k], list, f"SIGN.{k}"))
             for k in ("inputs", "outputs")]
    return Signature(names[0], names[1], _typed(d["output_tree"], str, "SIGN.output_tree"))


def _debug(payload: bytes | None) -> tuple[DebugEntry, ...]:
    if payload is None:
        return ()
    out = []
    for e in _typed(_load_json(payload, "DBUG"), list, "DBUG"):
        s, pc, op, src = _typed(e, list, "DBUG entry")
        out.append(DebugEntry(_typed(s, int, "DBUG section"), _typed(pc, int, "DBUG pc"),
                              _typed(op, str, "DBUG op"), _typed(src, str, "DBUG source")))
    return tuple(out)


def read_object(data: bytes, *, expect_machine: Machine | None = None) -> Image:
    """The Image in object-file bytes; raises ObjectFileError for any bad, truncated or corrupt file.

    With `expect_machine`, also raises ObjectFileError when the file was built for a machine whose
    description hash differs.
    """
    try:
        sec = _sections(bytes(data))
        machine = _machine(sec["MACH"])
        image = Image(machine, _code(sec["CODE"]), _tensors(sec.get("TENS", b"[]"), sec.get("DATA", b"")),
                      _signature(sec.get("SIGN")), _debug(sec.get("DBUG")))
        check_image(image)
    except ObjectFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any malformed content is a bad file, never a crash
        raise ObjectFileError(f"malformed object file: {type(e).__name__}: {e}") from None
    if expect_machine is not None and expect_machine.hash != machine.hash:
        raise ObjectFileError(f"object file is for machine {machine.name} (hash {machine.hash[:12]}), "
                              f"not {expect_machine.name} (hash {expect_machine.hash[:12]})")
    return image


def save_object(image: Image, path: str | Path) -> None:
    """Write `image` as an object file at `path`, atomically."""
    write_atomic(path, write_object(image))


def load_object(path: str | Path, *, expect_machine: Machine | None = None) -> Image:
    """Read an object file; a missing or unreadable file is an ObjectFileError too."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ObjectFileError(f"cannot read object file {path}: {e.strerror or e}") from None
    return read_object(data, expect_machine=expect_machine)
