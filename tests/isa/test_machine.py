"""The machine description: presets follow MACHINE.md, TOML round-trips, overrides are checked."""

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa.errors import MachineError
from isa.machine import MAX_MESH_POSITIONS, Machine, assumptions
from isa.presets import PRESETS, dump_toml, load_machine, machine_from_dict


def test_d1_follows_the_public_numbers() -> None:
    m = load_machine("d1")
    assert m.num_cores == 354
    assert m.clock_hz == 2_000_000_000
    assert m.sram_bytes == 1_310_720  # exactly 1.25 MiB
    assert (m.sram_load_bytes_per_cycle, m.sram_store_bytes_per_cycle) == (200, 135)
    assert (m.macs_bf16, m.macs_cfp8, m.macs_fp32) == (256, 256, 16)
    assert m.simd_bytes == 64 and m.link_bytes_per_cycle == 64
    # 362 TFLOPS BF16 and 22.6 TFLOPS FP32 per D1, derived, not typed in
    assert round(m.num_cores * m.clock_hz * m.peak_flops_per_core_cycle("bf16") / 1e12) == 362
    assert round(m.num_cores * m.clock_hz * m.peak_flops_per_core_cycle("fp32") / 1e12, 1) == 22.7
    (port,) = m.dram_ports
    assert port.capacity == 32 * 10**9 and port.bytes_per_cycle * m.clock_hz == 800 * 10**9
    assert "assumption" in m.description


def test_tile_is_five_by_five_d1() -> None:
    t = load_machine("tile")
    assert t.num_cores == 25 * 354
    assert t.die == (18, 20)
    assert t.crosses_die((17, 0), (18, 0)) and not t.crosses_die((16, 0), (17, 0))
    assert len(t.dram_ports) == 10


@pytest.mark.parametrize("name", list(PRESETS))
def test_toml_round_trip(name: str) -> None:
    m = load_machine(name)
    back = machine_from_dict(tomllib.loads(dump_toml(m)))
    assert back == m and back.hash == m.hash


def test_toml_file_and_overrides(tmp_path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(dump_toml(load_machine("mesh4x4")))
    m = load_machine(str(path), ["sram_bytes=2097152", "mesh=[8, 8]", "dram_ports.0.latency=300"])
    assert (m.sram_bytes, m.mesh, m.dram_ports[0].latency) == (2097152, (8, 8), 300)
    assert m.hash != load_machine("mesh4x4").hash


@pytest.mark.parametrize("override, words", [
    ("nosuch=1", "unknown machine field nosuch"),
    ("sram_bytes=abc", "sram_bytes"),
    ("sram_bytes", "field=value"),
    ("dram_ports.5.latency=1", "no element 5"),
    ("mesh=[0, 4]", "positive"),
    ("disabled=[[9, 9]]", "outside mesh"),
])
def test_bad_overrides_name_the_problem(override: str, words: str) -> None:
    with pytest.raises(MachineError, match=words.replace("[", r"\[")):
        load_machine("mesh4x4", [override])


def test_unknown_machine_and_bad_file(tmp_path) -> None:
    with pytest.raises(MachineError, match="unknown machine"):
        load_machine("d2")
    bad = tmp_path / "bad.toml"
    bad.write_text("mesh = [")
    with pytest.raises(MachineError, match="not valid TOML"):
        load_machine(str(bad))


def test_core_ids_skip_disabled_cores() -> None:
    m = load_machine("d1")
    assert len(m.coords) == 354 and (2, 3) not in m.core_at
    assert m.coords[m.core_at[(17, 19)]] == (17, 19)


def test_assumptions_are_listed() -> None:
    names = {n for n, _ in assumptions()}
    assert {"hop_latency", "mesh", "dram_ports.latency", "transcendental_passes"} <= names
    assert "clock_hz" not in names


def test_machine_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Machine().sram_bytes = 1  # type: ignore[misc]


_SET_VALUES = st.one_of(st.integers(-10**12, 10**12).map(str), st.text(max_size=12), st.sampled_from([
    "[[0,0]]", "[[99,99]]", "[[-1,0]]", "[1,2]", "[0,0]", "[100000,100000]", "[2000,600]", "[1,1]", "0", "-1",
    "1e9", "true", '"x"', "[]", "[[1,2,3]]", "{}", "[[0,0],[0,0]]"]))
_SET_FIELDS = st.sampled_from([
    "mesh", "sram_bytes", "disabled", "dram_ports.0.first", "dram_ports.0.last", "dram_ports.0.capacity",
    "dram_ports.0.bytes_per_cycle", "link_bytes_per_cycle", "hop_latency", "die_shape", "semaphores",
    "simd_bytes", "macs_bf16", "inject_bytes_per_cycle", "barrier_latency", "dram_ports.5.first", "nope"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_SET_FIELDS, _SET_VALUES), min_size=1, max_size=3))
def test_random_set_overrides_give_a_machine_or_one_machine_error(sets: list[tuple[str, str]]) -> None:
    """`--set field=value` under random input: a valid machine or a MachineError, nothing else, and no
    description builds more state than a bounded mesh (a 100000 x 100000 mesh once exhausted memory)."""
    try:
        m = load_machine("mesh4x4", [f"{f}={v}" for f, v in sets])
    except MachineError:
        return
    assert len(m.coords) == m.num_cores <= MAX_MESH_POSITIONS


def test_machines_beyond_what_dojoc_can_model_are_refused() -> None:
    with pytest.raises(MachineError, match="10,000,000,000 positions, more than the 1,048,576"):
        load_machine("mesh4x4", ["mesh=[100000,100000]"])
    with pytest.raises(MachineError, match="sram_bytes 1,000,000,000,000 is above"):
        load_machine("mesh4x4", ["sram_bytes=1000000000000"])
