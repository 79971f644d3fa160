"""The hand-written kernels of examples/ as tests: results against numpy, cycles against the cost rules.

Every expected cycle count here is computed from the machine's fields with `isa.costs` and the timing
rules of docs/timing.md (network and DRAM ports), never pasted. Trap programs live in examples/traps/.
"""

from __future__ import annotations

import re
from math import ceil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from isa.asm import assemble
from isa.costs import cycles as instr_cycles
from isa.costs import eject_cycles, inject_cycles, link_cycles, matmul_cycles
from isa.dtypes import DType
from isa.machine import Machine
from isa.presets import load_machine
from isa.program import Image
from isa.table import Instr
from isa.text import format_instr
from runtime_emu import Emulator
from runtime_emu.traps import Trap, TrapKind

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TRAPS = EXAMPLES / "traps"


# -- helpers ----------------------------------------------------------------------------------------

def load(path: Path, machine: Machine | str | None = None, text: str | None = None) -> Image:
    """Assemble an example (or a variant of its text) for its own machine or `machine`."""
    return assemble(path.read_text() if text is None else text, base_dir=path.parent, machine=machine,
                    filename=str(path))


def asm(text: str, machine: Machine | str) -> Image:
    return assemble(text, machine=machine)


def run(image: Image, inputs: dict[str, np.ndarray] | None = None, **kwargs: Any) -> Any:
    emu = Emulator(image, **kwargs)
    if inputs is not None:
        emu.set_inputs(inputs)
    return emu.run()


def random_inputs(image: Image, seed: int = 0) -> dict[str, np.ndarray]:
    """Normal random values for every input tensor, in its storage type (bf16 via ml_dtypes)."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in image.inputs:
        x = rng.standard_normal(t.shape).astype(np.float32)
        out[t.name] = x.astype(t.dtype.storage)
    return out


def f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def assert_fp32_matmul(got: np.ndarray, want64: np.ndarray) -> None:
    """`got` (f32) equals the float64 reference rounded once to f32, within 1 ulp."""
    got = np.asarray(got)
    assert got.dtype == np.float32 and got.shape == want64.shape
    np.testing.assert_array_max_ulp(got, want64.astype(np.float32), maxulp=1)


# -- the single-core matmul -------------------------------------------------------------------------

def test_matmul_1core_matches_numpy() -> None:
    image = load(EXAMPLES / "matmul_1core.s")
    x = random_inputs(image, seed=1)
    res = run(image, x)
    # bf16 products are exact in float64; the sum is rounded once to FP32
    assert_fp32_matmul(res.outputs["c"], f64(x["a"]) @ f64(x["b"]))


def _dma_load_done(m: Machine, t: int, port_free: int, eject_free: int, nbytes: int) -> tuple[int, int, int]:
    """docs/timing.md "Load" for a core at its port's entry router: (arrival, new port_free, new eject_free)."""
    port = m.dram_ports[0]
    busy = max(1, ceil(nbytes / port.bytes_per_cycle))
    start = max(t, port_free)
    ready = start + port.latency
    ejected = max(ready, eject_free) + eject_cycles(nbytes, m)  # into the core through its ejection port
    return max(ejected, ready + busy), start + busy, ejected


def _dma_store_done(m: Machine, t: int, port_free: int, inject_free: int, nbytes: int) -> tuple[int, int]:
    """docs/timing.md "Store" for a core at its port's entry router: (write complete, new inject_free)."""
    port = m.dram_ports[0]
    busy = max(1, ceil(nbytes / port.bytes_per_cycle))
    at_port = max(t, inject_free) + inject_cycles(nbytes, m)  # out of the core through its injection port
    return max(at_port, port_free) + busy + port.latency, at_port


def predict_matmul_1core(image: Image) -> int:
    """Walk the straight-line kernel: each instruction occupies its cost rule's cycles, DMAs complete
    by the DRAM-port and network rules, a `wait` stalls until its semaphore is satisfied."""
    m = image.machine
    (section,) = image.sections
    code = section.code
    shape: dict[int, int] = {}
    t = 0
    port_free = eject_free = inject_free = 0
    sem_ready: dict[int, list[int]] = {}
    for ins in code:
        name = ins.spec.mnemonic
        if name == "dmadim":
            shape[ins["dim"]] = ins["count"]
        elif name in ("dmald", "dmast"):
            n = ins["esize"]
            for d in range(ins["ndim"]):
                n *= shape[d]
            if name == "dmald":
                done, port_free, eject_free = _dma_load_done(m, t, port_free, eject_free, n)
            else:
                done, inject_free = _dma_store_done(m, t, port_free, inject_free, n)
            sem_ready.setdefault(ins["sem"], []).append(done)
        if name == "wait":
            arrivals = sorted(sem_ready.pop(ins["sem"]))
            assert len(arrivals) == ins["count"]
            t = max(t, arrivals[-1]) + m.sem_cycles
            continue
        if name == "halt":
            return t + m.scalar_cycles
        t += instr_cycles(ins, m)
    raise AssertionError("the kernel does not halt")


def test_matmul_1core_cycles_follow_the_cost_rules() -> None:
    image = load(EXAMPLES / "matmul_1core.s")
    m = image.machine
    res = run(image, random_inputs(image))
    assert res.cycles == predict_matmul_1core(image)
    # and the mma is the cost rule's matmul_cycles of its shape
    (mma,) = [i for i in image.sections[0].code if i.spec.mnemonic == "mma"]
    assert instr_cycles(mma, m) == matmul_cycles(64, 96, 128, DType.BF16, False, m)
    # the prediction moves with the machine: a slower port and a slower matrix unit
    slow = load_machine("mesh1x1", ["macs_bf16=64", "dram_ports.0.latency=500",
                                    "dram_ports.0.bytes_per_cycle=50"])
    image2 = load(EXAMPLES / "matmul_1core.s", machine=slow)
    res2 = run(image2, random_inputs(image2), timing_only=True)
    assert res2.cycles == predict_matmul_1core(image2) > res.cycles


# -- the 4 x 4 SUMMA matmul -------------------------------------------------------------------------

def test_matmul_4x4_matches_numpy() -> None:
    image = load(EXAMPLES / "matmul_4x4.s")
    assert len(image.sections) == 1 and len(image.sections[0].cores) == 16
    x = random_inputs(image, seed=2)
    res = run(image, x)
    a, b = f64(x["a"]), f64(x["b"])
    # C(i,j) accumulates A(i,k) @ B(k,j) for k = 0..3, rounding to FP32 after each step
    want = np.zeros((128, 128), dtype=np.float32)
    for k in range(4):
        want = (f64(want) + a[:, 32 * k:32 * k + 32] @ b[32 * k:32 * k + 32, :]).astype(np.float32)
    np.testing.assert_array_max_ulp(res.outputs["c"], want, maxulp=1)


def test_matmul_4x4_multicast_crosses_each_link_once() -> None:
    image = load(EXAMPLES / "matmul_4x4.s")
    res = run(image, random_inputs(image), timing_only=True)
    m = image.machine
    rows, cols = m.mesh
    blk_in, blk_out = 32 * 32 * 2, 32 * 32 * 4
    # each A block is multicast along its row and each B block along its column: a tree of cols - 1
    # (rows - 1) links that carries the block once per link
    puts = rows * cols * ((cols - 1) + (rows - 1)) * blk_in
    # DMAs enter and leave at the west edge router of the core's row: col links each way
    dmas = sum(c for _ in range(rows) for c in range(cols)) * (2 * blk_in + blk_out)
    assert res.stats.noc_bytes == puts + dmas


def test_timing_only_gives_the_same_cycles() -> None:
    for name in ("matmul_1core.s", "matmul_4x4.s", "dma_double_buffer.s"):
        image = load(EXAMPLES / name)
        x = random_inputs(image)
        assert run(image, x).cycles == run(image, x, timing_only=True).cycles, name


# -- the network: contention and hops ----------------------------------------------------------------

def _put_program(senders: dict[int, int], nbytes: int, count: int = 1) -> str:
    """Each sender core puts `count` blocks of `nbytes` to its receiver; receivers wait and halt.

    Every sender section has the same instructions, so all of them issue in the same cycle.
    """
    lines = []
    for src, dst in senders.items():
        lines += [f".section send{src} cores={src}", f"li r1, {dst}", "li r2, 0x0"]
        lines += [f"put r1, r2, r2, rows=1, bytes={nbytes}, seml=0, semr=1"] * count
        lines += [f"wait 0, {count}", "halt"]
    for dst in sorted(set(senders.values())):
        n = count * sum(1 for d in senders.values() if d == dst)
        lines += [f".section recv{dst} cores={dst}", f"wait 1, {n}", "halt"]
    return "\n".join(lines) + "\n"


def _cycles(text: str, machine: Machine) -> int:
    return int(run(asm(text, machine), timing_only=True).cycles)


@pytest.mark.parametrize("overrides", [[], ["hop_latency=3", "link_bytes_per_cycle=32"]])
def test_each_hop_adds_the_hop_latency(overrides: list[str]) -> None:
    m = load_machine("mesh8x8", overrides)
    core = m.core_at
    along_row = [_cycles(_put_program({0: core[(0, d)]}, 1000), m) for d in range(1, 8)]
    along_col = [_cycles(_put_program({0: core[(d, 0)]}, 1000), m) for d in range(1, 8)]
    corner = _cycles(_put_program({0: core[(3, 4)]}, 1000), m)  # 4 hops in X, then 3 in Y
    for series in (along_row, along_col):
        assert [b - a for a, b in zip(series, series[1:], strict=False)] == [m.hop_latency] * 6
    assert corner == along_row[6]
    # one hop costs the link time of the bytes plus one hop latency, on top of a fixed overhead
    assert along_row[0] - _cycles(_put_program({0: core[(0, 1)]}, 0), m) == (
        link_cycles(1000, m) - link_cycles(0, m))


@pytest.mark.parametrize("overrides", [[], ["link_bytes_per_cycle=16"]])
def test_two_transfers_over_one_link_take_longer_than_one(overrides: list[str]) -> None:
    m = load_machine("mesh4x4", overrides)
    nbytes = 4096
    dur, lat = link_cycles(nbytes, m), m.hop_latency
    # core 1 -> core 3 crosses links (0,1)->(0,2)->(0,3)
    alone = _cycles(_put_program({1: 3}, nbytes), m)
    # core 0 -> core 2 also crosses (0,1)->(0,2); core 0 is served first (same cycle, lower id)
    shared = _cycles(_put_program({0: 2, 1: 3}, nbytes), m)
    # core 0 -> core 4 goes down column 0 and shares no link with core 1 -> core 3
    disjoint = _cycles(_put_program({0: 4, 1: 3}, nbytes), m)
    assert disjoint == alone
    assert shared > alone
    # docs/timing.md: core 1's head waits until core 0's tail has left the shared link
    assert shared - alone == dur + lat
    # two puts from one core over the same link: the second follows the first
    twice = _cycles(_put_program({0: 1}, nbytes, count=2), m)
    once = _cycles(_put_program({0: 1}, nbytes), m)
    assert twice - once == dur


# -- DMA double buffering ---------------------------------------------------------------------------

def _variant(path: Path, drop: str) -> str:
    """The kernel's text without the lines tagged `[drop]`."""
    return "".join(line for line in path.read_text().splitlines(keepends=True) if f"[{drop}]" not in line)


def test_double_buffer_matches_numpy() -> None:
    image = load(EXAMPLES / "dma_double_buffer.s")
    x = random_inputs(image, seed=3)
    res = run(image, x)
    a, b = f64(x["a"]), f64(x["b"])
    want = np.zeros((32, 64), dtype=np.float32)
    for c in range(8):
        want = (f64(want) + a[:, 64 * c:64 * c + 64] @ b[64 * c:64 * c + 64, :]).astype(np.float32)
    np.testing.assert_array_max_ulp(res.outputs["c"], want, maxulp=1)


def test_double_buffer_overlaps_transfer_and_compute() -> None:
    path = EXAMPLES / "dma_double_buffer.s"
    image = load(path)
    total = run(image, random_inputs(image), timing_only=True).cycles
    transfer_img = load(path, text=_variant(path, "compute"))
    transfer = run(transfer_img, random_inputs(transfer_img), timing_only=True).cycles
    compute_img = load(path, text=_variant(path, "transfer"))
    compute = run(compute_img, random_inputs(compute_img), timing_only=True).cycles
    assert not any(i.spec.mnemonic.startswith("dma") for i in compute_img.sections[0].code)
    assert not any(i.spec.mnemonic == "mma" for i in transfer_img.sections[0].code)
    assert max(transfer, compute) < total < transfer + compute
    # the compute alone is the cost rules' sum over its instructions (no stalls without DMAs)
    m = image.machine
    mma = next(i for i in compute_img.sections[0].code if i.spec.mnemonic == "mma")
    assert compute >= 8 * matmul_cycles(32, 64, 64, DType.BF16, True, m) == 8 * instr_cycles(mma, m)


# -- traps ------------------------------------------------------------------------------------------

# file, trap kind, core, pc, mnemonic, words the message must contain, run options
TRAP_CASES: list[tuple[str, TrapKind, int, int | tuple[int, ...], str, tuple[str, ...], dict[str, Any]]] = [
    ("oob_sram.s", TrapKind.OOB_SRAM, 0, 1, "vfill", (), {}),
    ("oob_dram.s", TrapKind.OOB_DRAM, 0, 3, "dmald", (), {}),
    ("bad_operand.s", TrapKind.BAD_OPERAND, 0, 3, "mma", ("i8",), {}),
    ("illegal_branch.s", TrapKind.ILLEGAL, 0, 1, "jmp", ("outside the code section",), {}),
    ("no_halt.s", TrapKind.ILLEGAL, 0, 2, "", ("end of its code section",), {}),
    ("race_dma.s", TrapKind.RACE, 0, 4, "vadds", (), {}),
    ("race_put.s", TrapKind.RACE, 1, 4, "vfill", (), {}),
    ("put_overwrite.s", TrapKind.RACE, 0, 3, "vfill", (), {}),
    ("deadlock.s", TrapKind.DEADLOCK, 0, 1, "wait", ("core 0", "sem 3", "core 1", "sem 5"), {}),
    ("watchdog.s", TrapKind.WATCHDOG, 0, (0, 1), "", ("10000",), {"max_cycles": 10000}),
    ("nan_cfp8.s", TrapKind.FORMAT, 0, 4, "vcvt", ("NaN",), {}),
]


def _instr_text(image: Image, core: int, pc: int) -> tuple[str, ...]:
    """The texts a trap may show for the instruction at `pc` ("" past the end of the section)."""
    for s in image.sections:
        if core in s.cores:
            if pc >= len(s.code):
                return ("",)
            ins: Instr = s.code[pc]
            return format_instr(ins), format_instr(ins, {i: name for name, i in s.labels})
    raise AssertionError(f"core {core} runs no section")


@pytest.mark.parametrize("case", TRAP_CASES, ids=[c[0] for c in TRAP_CASES])
def test_trap(case: tuple[Any, ...]) -> None:
    name, kind, core, pc, mnemonic, words, options = case
    image = load(TRAPS / name)
    with pytest.raises(Trap) as info:
        run(image, {}, **options)
    trap = info.value
    assert trap.kind is kind, str(trap)
    assert trap.core == core, str(trap)
    assert trap.pc in (pc if isinstance(pc, tuple) else (pc,)), str(trap)
    assert trap.instr in _instr_text(image, trap.core, trap.pc), str(trap)
    if mnemonic:
        assert trap.instr.split()[0] == mnemonic
    text = str(trap)
    assert f"core {core}" in text and f"pc {trap.pc}" in text and trap.instr in text
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in {text!r}"


def test_every_trap_kind_has_a_program() -> None:
    assert {c[1] for c in TRAP_CASES} == set(TrapKind)
    assert sorted(p.name for p in TRAPS.glob("*.s")) == sorted(c[0] for c in TRAP_CASES)


@pytest.mark.parametrize("case", TRAP_CASES, ids=[c[0] for c in TRAP_CASES])
def test_dojoc_run_reports_a_trap_as_one_error_line(case: tuple[Any, ...], tmp_path: Path) -> None:
    from dojoc.cli import cli

    name, kind, core, _, _, _, options = case
    runner = CliRunner()
    obj = tmp_path / "trap.dobj"
    res = runner.invoke(cli, ["asm", str(TRAPS / name), "-o", str(obj)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out.npz"
    args = ["run", str(obj), "--output", str(out)]
    if "max_cycles" in options:
        args += ["--max-cycles", str(options["max_cycles"])]
    res = runner.invoke(cli, args)
    assert res.exit_code != 0
    assert isinstance(res.exception, SystemExit), res.exception  # no uncaught exception
    err = res.stderr.strip().splitlines()
    assert err and err[0].startswith("error: ")
    assert sum(1 for line in err if line.startswith("error:")) == 1
    assert "Traceback" not in res.stderr + res.stdout
    assert kind.value in err[0] and re.search(rf"\bcore {core}\b", res.stderr)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["trap.dobj"]


def test_dojoc_run_trap_in_a_real_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    obj = tmp_path / "deadlock.dobj"
    cmd = [sys.executable, "-m", "dojoc.cli"]
    subprocess.run([*cmd, "asm", str(TRAPS / "deadlock.s"), "-o", str(obj)], check=True, capture_output=True)
    proc = subprocess.run([*cmd, "run", str(obj)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert sum(1 for line in proc.stderr.splitlines() if line.startswith("error:")) == 1
