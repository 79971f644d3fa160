"""Run statistics, the report table, utilization, and the Chrome trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isa.costs import link_cycles
from isa.presets import load_machine
from isa.table import Unit
from runtime_emu.dram import Dram
from runtime_emu.noc import Network
from runtime_emu.stats import STALL_CAUSES, CoreStats, RunStats, utilization
from runtime_emu.trace import NETWORK_PID, Trace


def _run() -> RunStats:
    m = load_machine("mesh4x4")
    net = Network(m)
    dram = Dram(m, net)
    net.send((0, 0), [(0, 3)], 1000, 0)  # 3 links
    net.send((0, 0), [(0, 1), (1, 0)], 64, 0)  # 2 links
    dram.load(0, (1, 2), 4000, 0)  # 2 links
    dram.store(0, (2, 0), 300, 0)  # no link
    a, b, idle = CoreStats(), CoreStats(), CoreStats()
    a.instructions, b.instructions = 10, 30
    a.busy["mxu"], b.busy["mxu"], b.busy["dma"] = 600, 200, 100
    a.stall["semaphore"], b.stall["dma"] = 50, 250
    a.sram_high_water, b.sram_high_water = 4096, 70_000
    return RunStats(cycles=1000, cores={0: a, 5: b, 9: idle}, links=net.link_stats(),
                    ports=dram.port_stats(), router_ports=net.port_stats(),
                    op_cycles={"matmul_1": 800, "relu_2": 20})


def test_core_stats_keys() -> None:
    c = CoreStats()
    assert set(c.busy) == {u.value for u in Unit} == {"scalar", "mxu", "simd", "dma", "net", "sync"}
    assert set(c.stall) == set(STALL_CAUSES) == {"dma", "network", "semaphore", "barrier"}
    assert CoreStats().busy is not c.busy


def test_run_stats_summaries() -> None:
    s = _run()
    assert s.instructions == 40
    assert s.noc_bytes == 3 * 1000 + 2 * 64 + 2 * 4000
    assert s.dram_bytes == 4300
    # shares over the two cores that ran, of the whole run
    assert s.busy_share("mxu") == pytest.approx(800 / 2000)
    assert s.busy_share(Unit.DMA) == pytest.approx(100 / 2000)
    assert s.stall_share("dma") == pytest.approx(250 / 2000)
    assert s.stall_share("barrier") == 0
    hot = s.hottest_links(2)
    assert len(hot) == 2 and hot[0][1].busy_cycles >= hot[1][1].busy_cycles
    assert hot[0][1].busy_cycles == link_cycles(4000, load_machine("mesh4x4"))
    assert s.sram_high_water == 70_000
    assert RunStats(cycles=0).busy_share("mxu") == 0.0


def test_to_dict_is_json() -> None:
    d = json.loads(json.dumps(_run().to_dict()))
    assert d["cycles"] == 1000 and d["noc_bytes"] == _run().noc_bytes
    assert "0,0->0,1" in d["links"] and d["links"]["0,0->0,1"]["bytes"] == 1064
    assert d["cores"]["5"]["stall"]["dma"] == 250
    assert d["ports"]["dram0"]["bytes_written"] == 300
    assert d["op_cycles"]["matmul_1"] == 800
    # router ports: both sends and the store leave (0,0) and (2,0) through their injection ports; the
    # DMAs' DRAM side uses none
    assert d["router_ports"]["0,0 inject"]["bytes"] == 1064
    assert d["router_ports"]["2,0 inject"]["bytes"] == 300 and "2,0 eject" not in d["router_ports"]
    assert d["router_ports"]["1,2 eject"]["bytes"] == 4000 and "1,0 inject" not in d["router_ports"]


def test_format_table() -> None:
    m = load_machine("mesh4x4")
    text = _run().format_table(m)
    assert "1,000" in text and "500 ns" in text
    assert "mxu  40.0%" in text
    assert "0,0->0,1" in text and "matmul_1" in text and "70,000" in text


def test_utilization() -> None:
    m = load_machine("d1")
    flops = 10**12
    assert utilization(flops, 10**6, m, "bf16") == pytest.approx(
        flops / (10**6 * m.num_cores * 2 * m.macs_bf16))
    assert utilization(flops, 0, m, "fp32") == 0.0
    assert utilization(1, 1, m, "fp32") > utilization(1, 1, m, "bf16")


def test_trace_events_and_metadata(tmp_path: Path) -> None:
    m = load_machine("tile")
    tr = Trace(m)
    far = m.core_at[(20, 25)]  # on die 1 * 5 + 1
    tr.instr(0, "mm", 0, 1500, {"pc": 3})
    tr.stall(0, "semaphore", 1500, 7)
    tr.instr(far, "vadd", 3, 4)
    tr.transfer("put", "core 0", f"core {far}", 10, 20, 4096)
    tr.transfer("dma_load", "dip_west0", "core 0", 15, 200, 64)
    data = tr.to_json()
    assert data["displayTimeUnit"] == "ns"
    assert data["otherData"]["clock_hz"] == m.clock_hz
    evs = data["traceEvents"]
    for ev in evs:
        assert {"name", "ph", "pid"} <= set(ev)
        if ev["ph"] != "M":
            assert "ts" in ev
    x = [e for e in evs if e["ph"] == "X"]
    assert x[0]["ts"] == 0 and x[0]["dur"] == 1.5 and x[0]["args"] == {"pc": 3}  # 1 cycle = 1 ns
    assert x[1]["name"] == "stall semaphore" and x[1]["ts"] == 1.5
    assert x[2]["pid"] == 1 + 6 and x[2]["tid"] == far
    async_ev = [e for e in evs if e["ph"] in "be"]
    assert len(async_ev) == 4 and all(e["pid"] == NETWORK_PID for e in async_ev)
    meta = [e for e in evs if e["ph"] == "M" and "name" in e["args"]]
    names = {(e["pid"], e.get("tid"), e["args"]["name"]) for e in meta}
    assert (NETWORK_PID, 0, "network") in names and (1, 0, "die 0") in names
    assert (7, far, f"core {far} (20, 25)") in names
    out = tmp_path / "t.json"
    tr.save(out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_trace_without_machine_and_event_limit() -> None:
    tr = Trace(max_events=3)
    tr.instr(2, "a", 0, 1)
    tr.instr(2, "b", 1, 1)
    tr.transfer("put", "core 2", "core 3", 0, 5, 8)  # needs two events: dropped
    tr.stall(2, "dma", 2, 1)
    tr.instr(2, "c", 3, 1)
    assert len(tr) == 3 and tr.dropped == 3
    data = json.loads(json.dumps(tr.to_json()))
    assert data["otherData"]["dropped_events"] == 3
    assert any(e["ph"] == "M" and e["args"].get("name") == "cores" for e in data["traceEvents"])
