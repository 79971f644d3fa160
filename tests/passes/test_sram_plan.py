"""The memory plan (dojoc/codegen/sram.py): scratch from 0 up, blocks from the top down, code between."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dojoc
import dojoc.codegen.lower as lower
from dojoc.codegen import sram
from dojoc.codegen.sram import CodeOverflow, SramPlan
from dojoc.errors import SramOverflowError
from isa.presets import load_machine
from isa.table import WORD_BYTES

KIB = 1024


def plan(size: int = 1024 * KIB) -> SramPlan:
    return SramPlan(size, code_reserve=64 * KIB, scratch_limit=size // 2, scratch_min=64 * KIB)


def test_residents_take_what_scratch_never_reached() -> None:
    """No fixed halves: after an op of 100 KiB of scratch, residents may take all but it and the code gap."""
    p = plan()
    p.alloc(100 * KIB, "tile")
    p.begin_op()
    assert p.resident_free() == 1024 * KIB - 100 * KIB - 64 * KIB
    addr = p.alloc_resident(700 * KIB)
    assert addr == 324 * KIB and p.resident == 700 * KIB
    assert p.alloc_resident(200 * KIB) is None  # it would reach into the gap kept for code
    # the next op's scratch stays below the resident bytes and the code gap
    assert p.scratch_free() == 324 * KIB - 64 * KIB
    with pytest.raises(SramOverflowError, match="big tile"):
        p.alloc(300 * KIB, "big tile")


def test_residents_leave_later_ops_a_working_set() -> None:
    p = plan()
    assert p.resident_free() == 1024 * KIB - 64 * KIB - 64 * KIB
    assert p.resident_free(scratch=200 * KIB) == 1024 * KIB - 200 * KIB - 64 * KIB  # the op's own buffers first


def test_a_held_value_has_one_address_below_every_cores_blocks() -> None:
    a, b = plan(), plan()
    b.alloc_resident(128 * KIB)  # only b has a resident weight
    x = sram.hold([a, b], 64 * KIB, "x")
    assert x == 1024 * KIB - 128 * KIB - 64 * KIB and a.held == b.held == 64 * KIB
    y = sram.hold([a, b], 32 * KIB, "y")
    assert y == x - 32 * KIB
    for p in (a, b):
        p.release(x)
    assert a.held == b.held == 32 * KIB
    # x's gap takes the next value that fits; a resident never goes there (it is live during x's ops too)
    assert sram.hold([a, b], 64 * KIB, "z") == x
    assert b.alloc_resident(16 * KIB) == y - 16 * KIB


def test_code_goes_in_the_gap_between_scratch_and_blocks() -> None:
    p = plan()
    p.alloc(100 * KIB, "tile")
    p.alloc_resident(800 * KIB)
    assert p.code_gap == 124 * KIB
    p.place_code(100 * KIB)
    assert p.peak == 100 * KIB + 800 * KIB + 100 * KIB


def test_a_stream_longer_than_its_gap_compiles_again_with_a_wider_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a code gap too narrow for the program, the compile runs again keeping what the code took free,
    and the planned SRAM peak counts the code."""
    calls: list[dict[int, int]] = []
    inner = lower._lower

    def spy(*args: object) -> object:
        calls.append(dict(args[6]))  # type: ignore[call-overload]
        return inner(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sram, "CODE_SHARE", 4096)
    monkeypatch.setattr(lower, "_lower", spy)
    torch.manual_seed(0)
    # a weight of 2 MiB on 16 cores of 169 KiB: three resident chunks of 32 KiB fill all but 2 KiB of the room
    # beside the op's 71 KiB of scratch, less than the code
    lin, x = torch.nn.Linear(1024, 1024, bias=False).eval(), torch.randn(16, 1024)
    machine = dataclasses.replace(load_machine("mesh4x4"), sram_bytes=169 * KIB)
    mapping = {"ops": [{"op": "linear", "kernel": "summa", "cores": "0-15", "split": {"rows": 4, "cols": 4},
                        "tile": {"k": 64, "buffers": 2, "waves": 1}, "resident": True}]}
    prog = dojoc.compile(lin, (x,), machine=machine, precision="bf16", mapping=mapping)
    out = prog(x).float()
    assert torch.corrcoef(torch.stack([out.flatten(), lin(x).flatten()]))[0, 1] > 0.999
    code = {c: len(s.code) * WORD_BYTES for s in prog.image.sections for c in s.cores}
    assert calls[0] == {} and len(calls) == 2 and calls[1]
    assert all(calls[1].get(c, n) >= n for c, n in code.items())
    assert prog.lowered.sram_peak_bytes >= max(code.values())


def test_only_the_cores_short_of_code_room_get_a_wider_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """One core's long stream (beside a disabled core it computes its neighbour's slices too) widens that
    core's gap, and those of the cores near their own, by their code and a slack; the others keep the
    default and their residents."""
    calls: list[dict[int, int]] = []

    def fake(*args: object) -> str:
        calls.append(dict(args[6]))  # type: ignore[call-overload]
        if len(calls) == 1:
            raise CodeOverflow({3: (160_000, 100_000)}, {3: 160_000, 4: 99_000})  # 4 came near its gap
        return "lowered"

    monkeypatch.setattr(lower, "_lower", fake)
    assert lower.lower_graph(None, None) == "lowered"  # type: ignore[arg-type]
    assert calls == [{}, {c: sram.aligned(n + n // sram.CODE_SLACK) for c, n in ((3, 160_000), (4, 99_000))}]


def test_code_that_never_fits_is_one_error_naming_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(*args: object) -> str:
        raise CodeOverflow({5: (900_000, 10_000), 6: (20_000, 10_000)})

    monkeypatch.setattr(lower, "_lower", fake)
    with pytest.raises(SramOverflowError, match="code of core 5 takes 900,000 bytes"):
        lower.lower_graph(None, None)  # type: ignore[arg-type]


def test_the_report_gives_each_cores_sram() -> None:
    """report.sram: per core that runs code, its plan by kind of bytes; the parts add up to the core's peak,
    whose maximum is the SRAM peak; the code is the core's stream; it round-trips and sums."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256)).eval()
    x = torch.randn(64, 256)
    machine = load_machine("mesh4x4")
    prog = dojoc.compile(model, (x,), machine=machine, precision="bf16")
    _, report = prog.run(x)
    code = {c: len(s.code) * WORD_BYTES for s in prog.image.sections for c in s.cores}
    rows = {r["core"]: r for r in report.sram}
    assert set(rows) == set(code) and all(rows[c]["code"] == n for c, n in code.items())
    peaks = {c: r["code"] + r["resident"] + r["scratch"] + r["held"] for c, r in rows.items()}
    assert all(r["free"] == machine.sram_bytes - peaks[c] >= 0 for c, r in rows.items())
    assert max(peaks.values()) == report.sram_peak_bytes
    assert any(r["resident"] > 0 for r in rows.values()) and all(r["scratch"] > 0 for r in rows.values())
    assert dojoc.Report.from_dict(report.to_dict()).sram == report.sram
    assert (report + report).sram == report.sram
    tight = min(rows.values(), key=lambda r: (r["free"], r["core"]))
    assert f"SRAM tightest core {tight['core']}:" in report.format()
