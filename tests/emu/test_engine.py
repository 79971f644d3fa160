"""The discrete-event engine: cycle accounting, blocking, stall causes, barriers, determinism, timing-only
mode, statistics, traces and inputs. Expected cycles are computed from machine fields, never pasted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from isa.asm import assemble
from isa.costs import cycles as instr_cycles
from isa.costs import link_cycles, matmul_cycles
from isa.dtypes import DType
from isa.machine import Machine
from isa.presets import load_machine
from isa.program import DebugEntry, Image
from runtime_emu import Emulator, InputError, run
from runtime_emu.stats import UNITS

ROOT = Path(__file__).resolve().parents[2]


def mm_program(m: int, n: int, k: int, machine: str = "mesh1x1") -> str:
    return f"""
.machine {machine}
.section main cores=0
    li r1, 0x0
    li r2, 0x8000
    li r3, 0x10000
    mma r3, r1, r2, m={m}, n={n}, k={k}, sd={n * 4}, sa={k * 2}, sb={n * 2}, dt=bf16
    halt
"""


@pytest.mark.parametrize("overrides", [[], ["macs_bf16=64", "mxu_latency=5", "scalar_cycles=3",
                                             "sram_load_bytes_per_cycle=32"]])
@pytest.mark.parametrize("shape", [(64, 96, 128), (5, 7, 9)])
def test_single_core_bf16_matmul_cycles(overrides: list[str], shape: tuple[int, int, int]) -> None:
    machine = load_machine("mesh1x1", overrides)
    m, n, k = shape
    res = run(assemble(mm_program(m, n, k), machine=machine))
    want = 3 * machine.scalar_cycles + matmul_cycles(m, n, k, DType.BF16, False, machine) + machine.scalar_cycles
    assert res.cycles == want
    core = res.stats.cores[0]
    assert core.busy["mxu"] == matmul_cycles(m, n, k, DType.BF16, False, machine)
    assert core.busy["scalar"] == 4 * machine.scalar_cycles
    assert core.instructions == 5 and core.halted_at == res.cycles


def test_busy_plus_stall_is_the_halt_time() -> None:
    text = (ROOT / "examples" / "matmul_1core.s").read_text()
    res = run(assemble(text), timing_only=True)
    c = res.stats.cores[0]
    assert sum(c.busy.values()) + sum(c.stall.values()) == c.halted_at == res.cycles
    assert set(c.busy) == set(UNITS)
    assert c.stall["dma"] > 0 and c.stall["network"] == c.stall["semaphore"] == 0


def _two_core(sender: str, receiver: str, machine: str = "mesh2x2") -> Image:
    return assemble(f".machine {machine}\n.section s cores=0\n{sender}\n.section r cores=1\n{receiver}\n")


def test_wait_completes_at_the_put_arrival() -> None:
    m = load_machine("mesh2x2")
    nbytes = 1000
    image = _two_core("li r1, 1\nli r2, 0\nput r1, r2, r2, rows=1, bytes=1000, seml=0, semr=1\nwait 0, 1\nhalt",
                      "wait 1, 1\nhalt")
    res = run(image)
    issue = 2 * m.scalar_cycles
    arrival = issue + link_cycles(nbytes, m) + m.hop_latency  # one hop, no contention
    recv = res.stats.cores[1]
    assert recv.halted_at == arrival + m.sem_cycles + m.scalar_cycles
    # blocked from cycle 0: waiting on core 0 until it issues the put, then on the network
    assert recv.stall["semaphore"] == issue
    assert recv.stall["network"] == arrival - issue
    send = res.stats.cores[0]
    source_free = issue + link_cycles(nbytes, m)
    assert send.halted_at == source_free + m.sem_cycles + m.scalar_cycles
    assert send.stall["network"] == source_free - (issue + m.issue_cycles)


def test_stall_is_semaphore_until_the_signal_is_sent() -> None:
    m = load_machine("mesh2x2")
    # core 0 spins 50 scalar cycles before it signals: core 1 waits with nothing in flight
    image = _two_core("li r1, 1\nli r2, 25\nspin:\nloop r2, spin\nsignal r1, 3\nhalt", "wait 3, 1\nhalt")
    res = run(image)
    c1 = res.stats.cores[1]
    issue = 2 * m.scalar_cycles + 25 * m.scalar_cycles
    assert c1.stall["semaphore"] == issue
    assert c1.stall["network"] == link_cycles(0, m) + m.hop_latency


def test_barrier_releases_at_last_arrival_plus_tree_round_trip_plus_latency() -> None:
    m = load_machine("mesh2x2", ["barrier_latency=40"])
    lines = [".machine mesh2x2"]
    for cid, spin in enumerate((0, 10, 30, 5)):
        lines += [f".section c{cid} cores={cid}", f"li r1, {spin + 1}", f"s{cid}:", f"loop r1, s{cid}",
                  "barrier 7, 4", "halt"]
    res = run(assemble("\n".join(lines), machine=m))
    arrivals = [(spin + 2) * m.scalar_cycles for spin in (0, 10, 30, 5)]
    # the tree's root is (0, 0), the box's centre rounded down; its farthest corner (1, 1) is 2 hops away
    release = max(arrivals) + 2 * (2 * m.hop_latency) + m.barrier_latency
    for cid, arrived in enumerate(arrivals):
        c = res.stats.cores[cid]
        assert c.stall["barrier"] == release - arrived
        assert c.halted_at == release + m.sem_cycles + m.scalar_cycles
    assert res.cycles == release + m.sem_cycles + m.scalar_cycles


def test_post_and_wait_on_one_core() -> None:
    res = run(assemble(".machine mesh1x1\n.section a cores=0\npost 4, 3\nwait 4, 2\nwait 4, 1\nhalt\n"))
    m = load_machine("mesh1x1")
    assert res.cycles == 3 * m.sem_cycles + m.scalar_cycles
    assert sum(res.stats.cores[0].stall.values()) == 0


# -- determinism and timing-only ------------------------------------------------------------------

def _inputs(image: Image, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(t.shape).astype(ml_dtypes.bfloat16) for t in image.inputs}


@pytest.mark.parametrize("name", ["matmul_4x4.s", "dma_double_buffer.s"])
def test_deterministic_and_timing_only_agrees(name: str) -> None:
    path = ROOT / "examples" / name
    image = assemble(path.read_text(), base_dir=path.parent)
    x = _inputs(image, 3)
    first, second = run(image, x), run(image, x)
    timing = run(image, x, timing_only=True)
    assert first.cycles == second.cycles == timing.cycles
    assert first.stats.to_dict() == second.stats.to_dict()
    for k, v in first.outputs.items():
        np.testing.assert_array_equal(v, second.outputs[k])
    # timing-only moves the same bytes over the same links and ports at the same times
    a, b = first.stats.to_dict(), timing.stats.to_dict()
    for key in ("links", "ports", "cycles", "instructions", "noc_bytes", "dram_bytes"):
        assert a[key] == b[key], key


def test_spmd_cores_in_lockstep_are_exact() -> None:
    """16 cores running one scalar-heavy section with puts: the same cycles as a hand count."""
    path = ROOT / "examples" / "matmul_4x4.s"
    image = assemble(path.read_text(), base_dir=path.parent)
    res = run(image, timing_only=True)
    assert res.stats.instructions == sum(c.instructions for c in res.stats.cores.values())
    assert len(res.stats.cores) == 16
    assert res.cycles == max(c.halted_at for c in res.stats.cores.values())


# -- statistics, debug attribution, trace ---------------------------------------------------------

def test_op_cycles_from_debug_entries_and_flops(tmp_path: Path) -> None:
    text = mm_program(32, 32, 32, "mesh2x2").replace("cores=0", "cores=0,1")
    image = assemble(text)
    image = dataclasses.replace(image, debug=(DebugEntry(0, 3, "matmul_1"), DebugEntry(0, 0, "setup"),
                                              DebugEntry(0, 1, "setup")))
    res = run(image, trace=True)
    m = image.machine
    mma = image.sections[0].code[3]
    assert res.stats.op_cycles == {"matmul_1": 2 * instr_cycles(mma, m), "setup": 4 * m.scalar_cycles}
    assert getattr(res.stats, "flops") == 2 * 2 * 32 * 32 * 32  # noqa: B009
    assert res.trace is not None
    path = tmp_path / "t.json"
    res.trace.save(path)
    events = json.loads(path.read_text())["traceEvents"]
    instrs = [e for e in events if e.get("cat") == "instr"]
    assert len(instrs) == res.stats.instructions == 10
    assert {e["name"] for e in instrs} == {"li", "mma", "halt"}


def test_sram_high_water() -> None:
    res = run(assemble(".machine mesh1x1\n.section a cores=0\nli r1, 0x1000\n"
                       "vfill r1, 1.0, rows=4, cols=8, sd=64, dt=f32\nhalt\n"))
    assert res.stats.cores[0].sram_high_water == 0x1000 + 3 * 64 + 32


def test_tile_machine_allocates_only_what_runs() -> None:
    m = load_machine("tile")
    far = m.num_cores - 1
    image = assemble(f".machine tile\n.section s cores=0\nli r1, {far}\nli r2, 0x100\n"
                     "put r1, r2, r2, rows=1, bytes=256, seml=0, semr=0\nwait 0, 1\nhalt\n"
                     f".section r cores={far}\nwait 0, 1\nhalt\n")
    emu = Emulator(image)
    res = emu.run()
    assert res.cycles > m.d2d_latency  # crosses die edges
    allocated = [cid for cid in range(m.num_cores) if cid in (0, far) and emu.core(cid).sram.allocated]
    assert allocated == [0, far]
    assert len(res.stats.cores) == 2


# -- inputs ---------------------------------------------------------------------------------------

def _mm_image() -> Image:
    path = ROOT / "examples" / "matmul_1core.s"
    return assemble(path.read_text(), base_dir=path.parent)


def test_inputs_by_position_and_by_name_agree() -> None:
    image = _mm_image()
    x = _inputs(image, 4)
    by_name = run(image, x).outputs["c"]
    by_pos = run(image, [x["a"], x["b"].astype(np.float32)]).outputs["c"]
    np.testing.assert_array_equal(by_name, by_pos)
    assert by_name.dtype == np.float32 and by_name.shape == (64, 96)


@pytest.mark.parametrize("bad,words", [
    ({"a": np.zeros((64, 128))}, ("missing", "'b'")),
    ({"a": np.zeros((64, 128)), "b": np.zeros((128, 96)), "z": np.zeros(1)}, ("unknown", "'z'")),
    ({"a": np.zeros((64, 127)), "b": np.zeros((128, 96))}, ("'a'", "[64, 127]", "[64, 128]")),
    ([np.zeros((64, 128))], ("2 inputs", "got 1")),
])
def test_input_mismatch_is_a_clear_error(bad: object, words: tuple[str, ...]) -> None:
    emu = Emulator(_mm_image())
    with pytest.raises(InputError) as info:
        emu.set_inputs(bad)  # type: ignore[arg-type]
    for w in words:
        assert w in str(info.value)


def test_integer_input_must_fit() -> None:
    image = assemble(".machine mesh1x1\n.tensor t input 0x0 i8 [3]\n.section a cores=0\nhalt\n")
    with pytest.raises(InputError, match="do not fit i8"):
        Emulator(image).set_inputs([np.array([1, 2, 300])])
    with pytest.raises(InputError, match="non-integer"):
        Emulator(image).set_inputs([np.array([1.5, 2, 3])])


def test_run_twice_is_an_error() -> None:
    emu = Emulator(assemble(mm_program(8, 8, 8)))
    emu.run()
    with pytest.raises(Exception, match="runs once"):
        emu.run()


def test_machine_fields_drive_costs() -> None:
    fast: Machine = load_machine("mesh1x1")
    slow = load_machine("mesh1x1", ["scalar_cycles=4"])
    text = ".machine mesh1x1\n.section a cores=0\nli r1, 10\nl:\nloop r1, l\nhalt\n"
    assert run(assemble(text, machine=slow)).cycles == 4 * run(assemble(text, machine=fast)).cycles


def _barrier_cycles(cores: list[int], machine: Machine) -> int:
    """Cycles of a program where `cores` meet at one barrier and halt (every core arrives together)."""
    lines = [f".section b cores={','.join(map(str, cores))}", f"barrier 0, {len(cores)}", "halt"]
    return int(run(assemble("\n".join(lines), machine=machine), timing_only=True).cycles)


@pytest.mark.parametrize("overrides", [[], ["hop_latency=3"]])
def test_barrier_latency_follows_the_span_of_its_cores(overrides: list[str]) -> None:
    m = load_machine("mesh8x8", overrides)
    core, hop = m.core_at, m.hop_latency
    base = m.sem_cycles + m.scalar_cycles  # the barrier's own cost, then the halt
    # one core: no tree, only the constant
    assert _barrier_cycles([core[(5, 5)]], m) == m.barrier_latency + base
    # a 2 x 2 block: root at its top-left router, 2 hops to the far corner, there and back
    block = [core[(r, c)] for r in (4, 5) for c in (4, 5)]
    assert _barrier_cycles(block, m) == 2 * 2 * hop + m.barrier_latency + base
    # the whole mesh: root (3, 3), 8 hops to (7, 7); only the bounding box counts, not the count
    assert _barrier_cycles(list(range(m.num_cores)), m) == 2 * 8 * hop + m.barrier_latency + base
    assert _barrier_cycles([core[(0, 0)], core[(7, 7)]], m) == 2 * 8 * hop + m.barrier_latency + base


def test_barrier_across_a_die_edge_pays_the_die_to_die_latency() -> None:
    m = load_machine("mesh2x2", ["mesh=[2, 4]", "die_shape=[2, 2]"])
    core = m.core_at
    # cores (0, 1) and (0, 2) sit either side of the edge; the root (0, 1) reaches (0, 2) over it
    assert _barrier_cycles([core[(0, 1)], core[(0, 2)]], m) == (
        2 * m.d2d_latency + m.barrier_latency + m.sem_cycles + m.scalar_cycles)
