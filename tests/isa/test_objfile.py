"""The object-file format: round trip, atomic save, and every kind of bad file is an ObjectFileError."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa.dtypes import DType
from isa.encoding import make
from isa.errors import ObjectFileError
from isa.objfile import (
    CHECKSUM_BYTES,
    ENTRY,
    FLAG_REQUIRED,
    HEADER,
    MAGIC,
    load_object,
    read_object,
    save_object,
    write_object,
)
from isa.presets import load_machine
from isa.program import CodeSection, DebugEntry, Image, Signature, Tensor, TensorKind


def _image() -> Image:
    m = load_machine("mesh2x2")
    code = (make("li", rd=1, imm=-7), make("loop", ra=1, target=0),
            make("mma", rd=1, ra=2, rb=3, m=8, n=8, k=8, sd=32, sa=16, sb=16, dt="bf16"), make("halt"))
    return Image(
        m, (CodeSection("main", (0, 1, 2), code, (("top", 0), ("end", 4))),
            CodeSection("io", (3,), (make("halt"),))),
        (Tensor("x", TensorKind.INPUT, 0, (2, 3), DType.F32),
         Tensor("w", TensorKind.WEIGHT, 64, (5,), DType.BF16, bytes(range(10)), "w.bin"),
         Tensor("w2", TensorKind.WEIGHT, 128, (3,), DType.U8, b"abc"),
         Tensor("y", TensorKind.OUTPUT, 256, (2, 3), DType.F32)),
        Signature(("x",), ("y",), '{"k": "v"}'),
        (DebugEntry(0, 2, "matmul", "model.py:3"),),
    )


def _reseal(body: bytes) -> bytes:
    """`body` (everything before the checksum) with a valid checksum appended."""
    return body + hashlib.sha256(body).digest()


def _with_extra_section(data: bytes, tag: bytes, flags: int) -> bytes:
    """Insert one more section-table entry (pointing at 4 bytes appended to the body)."""
    body = data[:-CHECKSUM_BYTES]
    magic, version, count, res = HEADER.unpack_from(body)
    table = body[HEADER.size:HEADER.size + ENTRY.size * count]
    rest = body[HEADER.size + ENTRY.size * count:]
    shift = ENTRY.size
    entries = [ENTRY.unpack_from(table, i * ENTRY.size) for i in range(count)]
    new_table = b"".join(ENTRY.pack(t, off + shift, n, f) for t, off, n, f in entries)
    extra_off = HEADER.size + ENTRY.size * (count + 1) + len(rest)
    new_table += ENTRY.pack(tag, extra_off, 4, flags)
    return _reseal(HEADER.pack(magic, version, count + 1, res) + new_table + rest + b"xyzw")


def test_roundtrip_and_determinism() -> None:
    img = _image()
    data = write_object(img)
    assert data.startswith(MAGIC)
    again = read_object(data)
    assert again == img
    assert write_object(again) == data
    assert read_object(data, expect_machine=load_machine("mesh2x2")) == img


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "p.dobj"
    save_object(_image(), path)
    assert load_object(path) == _image()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.dobj"]  # no temporary left behind
    with pytest.raises(ObjectFileError, match="cannot read"):
        load_object(tmp_path / "missing.dobj")


def test_expect_machine() -> None:
    with pytest.raises(ObjectFileError, match="for machine mesh2x2"):
        read_object(write_object(_image()), expect_machine=load_machine("mesh4x4"))


def test_truncated_files() -> None:
    data = write_object(_image())
    for n in list(range(0, 80)) + list(range(80, len(data), 7)):
        with pytest.raises(ObjectFileError):
            read_object(data[:n])


def test_every_corrupted_byte_is_detected() -> None:
    data = write_object(_image())
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        with pytest.raises(ObjectFileError):
            read_object(bytes(bad))


def test_bad_magic_and_version() -> None:
    data = write_object(_image())
    with pytest.raises(ObjectFileError, match="not a dojoc object file"):
        read_object(b"ELF\0\0\0\0\0" + data[8:])
    body = bytearray(data[:-CHECKSUM_BYTES])
    struct.pack_into("<H", body, 8, 99)
    with pytest.raises(ObjectFileError, match="version 99"):
        read_object(_reseal(bytes(body)))
    with pytest.raises(ObjectFileError, match="too short"):
        read_object(b"")


def test_unknown_sections() -> None:
    data = write_object(_image())
    assert read_object(_with_extra_section(data, b"XTRA", 0)) == _image()  # skipped
    with pytest.raises(ObjectFileError, match="does not know"):
        read_object(_with_extra_section(data, b"XTRA", FLAG_REQUIRED))
    with pytest.raises(ObjectFileError, match="twice"):
        read_object(_with_extra_section(data, b"DBUG", 0))


def _replace_section(data: bytes, tag: bytes, payload: bytes) -> bytes:
    """Rebuild the file with one section's payload replaced (and a valid checksum)."""
    body = data[:-CHECKSUM_BYTES]
    _, version, count, _ = HEADER.unpack_from(body)
    entries = [ENTRY.unpack_from(body, HEADER.size + i * ENTRY.size) for i in range(count)]
    blobs = [(t, payload if t == tag else body[off:off + n], f) for t, off, n, f in entries]
    offset = HEADER.size + ENTRY.size * count
    table, rest = b"", b""
    for t, blob, f in blobs:
        table += ENTRY.pack(t, offset, len(blob), f)
        rest += blob
        offset += len(blob)
    return _reseal(HEADER.pack(MAGIC, version, count, 0) + table + rest)


@pytest.mark.parametrize("tag, payload, message", [
    (b"MACH", b"{not json", "not valid JSON"),
    (b"MACH", json.dumps({"hash": "0", "machine": {"name": "x"}}).encode(), "recorded hash"),
    (b"MACH", json.dumps({"hash": "0", "machine": {"mesh": "big"}}).encode(), "mesh"),
    (b"TENS", b'[{"name": 3}]', "malformed"),
    (b"TENS", b'[1, 2]', "TENS[0]"),
    (b"SIGN", b'{"inputs": "x", "outputs": [], "output_tree": ""}', "SIGN.inputs"),
    (b"DBUG", b'[[0, 99, "op", ""]]', "points to no instruction"),
    (b"CODE", b"\x01\x00\x00\x00", "truncated"),
    (b"CODE", struct.pack("<I", 0) + b"junk", "stray bytes"),
    (b"CODE", struct.pack("<IIs", 1, 1, b"s") + struct.pack("<II", 1, 9) + struct.pack("<II", 0, 0),
     "does not exist"),
])
def test_malformed_sections(tag: bytes, payload: bytes, message: str) -> None:
    with pytest.raises(ObjectFileError, match=re.escape(message)):
        read_object(_replace_section(write_object(_image()), tag, payload))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzzed_payloads_only_raise_objectfileerror(data: st.DataObject) -> None:
    """Random edits behind a valid checksum: either a valid image or an ObjectFileError, nothing else."""
    raw = bytearray(write_object(_image())[:-CHECKSUM_BYTES])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(HEADER.size, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        read_object(_reseal(bytes(raw)))
    except ObjectFileError:
        pass


def test_write_rejects_inconsistent_images() -> None:
    img = _image()
    bad = Image(img.machine, img.sections + (CodeSection("dup", (0,), ()),))
    with pytest.raises(ObjectFileError, match="core 0 runs both"):
        write_object(bad)


def test_a_tensor_past_the_machines_dram_is_refused_before_allocation() -> None:
    img = _image()
    huge = Tensor("x", TensorKind.INPUT, 0, (1 << 20, 1 << 20), DType.F32)  # 4 TiB
    bad = Image(img.machine, img.sections, (huge,) + img.tensors[1:], img.signature, img.debug)
    with pytest.raises(ObjectFileError, match="tensor x declares 4,398,046,511,104 bytes at DRAM address 0, "
                                              "past the end of mesh2x2's"):
        write_object(bad)
    # the same declaration in a file's TENS section: the reader refuses it before anything is allocated
    data = write_object(img)
    body = data[:-CHECKSUM_BYTES]
    count = HEADER.unpack_from(body)[2]
    entries = [ENTRY.unpack_from(body, HEADER.size + i * ENTRY.size) for i in range(count)]
    off, n = next((o, k) for t, o, k, _ in entries if t == b"TENS")
    tens = json.loads(body[off:off + n])
    tens[0]["shape"] = [1 << 20, 1 << 20]
    with pytest.raises(ObjectFileError, match="past the end of mesh2x2's"):
        read_object(_replace_section(data, b"TENS", json.dumps(tens).encode()))
