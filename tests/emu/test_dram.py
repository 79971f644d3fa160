"""DRAM port timing (FCFS, latency, bandwidth, then the mesh) and the lazily paged DRAM store."""

from __future__ import annotations

import random
from math import ceil

import numpy as np
import pytest

from isa.costs import eject_cycles, inject_cycles, link_cycles
from isa.machine import Machine
from isa.presets import load_machine
from runtime_emu.dram import PAGE_BYTES, Dram, DramBoundsError, DramMemory
from runtime_emu.noc import Network


@pytest.fixture(scope="module")
def m4() -> Machine:
    return load_machine("mesh4x4")


def _busy(m: Machine, n: int, port: int = 0) -> int:
    return max(1, ceil(n / m.dram_ports[port].bytes_per_cycle))


# -- timing --------------------------------------------------------------------------------------

def test_load_latency_then_the_mesh(m4: Machine) -> None:
    p = m4.dram_ports[0]
    net = Network(m4)
    dram = Dram(m4, net)
    core, n, t = (2, 3), 4096, 10
    entry = p.entry_router(m4, *core)
    assert entry == (2, 0)
    hops = len(net.xy_path(entry, core))
    d = dram.load(0, core, n, t)
    ready = t + p.latency
    expect = ready + (hops - 1) * m4.hop_latency + link_cycles(n, m4) + m4.hop_latency
    assert d.arrivals == {core: max(expect, ready + _busy(m4, n) + hops * m4.hop_latency)}
    assert d.source_free == t + _busy(m4, n)
    assert dram.port_stats()[p.name].bytes_read == n
    assert dram.port_stats()[p.name].busy_cycles == _busy(m4, n)
    assert sum(s.bytes for s in net.link_stats().values()) == hops * n


def test_load_into_the_entry_router_core(m4: Machine) -> None:
    d = Dram(m4, Network(m4)).load(0, (1, 0), 640, 0)
    lat = m4.dram_ports[0].latency
    assert d.arrivals[(1, 0)] == lat + max(link_cycles(640, m4), _busy(m4, 640))


def test_port_serves_first_come_first_served(m4: Machine) -> None:
    n = 64_000
    dram = Dram(m4, Network(m4))
    # different rows: separate entry routers and links, so only the port is shared
    a = dram.load(0, (0, 2), n, 5)
    b = dram.load(0, (1, 2), n, 0)  # earlier issue, later call: served second
    assert b.source_free == a.source_free + _busy(m4, n)
    assert b.arrivals[(1, 2)] == a.arrivals[(0, 2)] + _busy(m4, n)
    assert dram.port_free(0) == 5 + 2 * _busy(m4, n)
    assert dram.port_stats()["dram0"].busy_cycles == 2 * _busy(m4, n)


def test_port_bandwidth_limits_when_slower_than_a_link() -> None:
    m = load_machine("mesh4x4", ["dram_ports.0.bytes_per_cycle=8"])
    core, n = (3, 2), 8000
    d = Dram(m, Network(m)).load(0, core, n, 0)
    busy = ceil(n / 8)
    assert busy > link_cycles(n, m)
    assert d.arrivals[core] == m.dram_ports[0].latency + busy + 2 * m.hop_latency


def test_load_contends_with_puts(m4: Machine) -> None:
    p = m4.dram_ports[0]
    n = 6400
    alone = Dram(m4, Network(m4)).load(0, (2, 3), n, 0).arrivals[(2, 3)]
    net = Network(m4)
    dram = Dram(m4, net)
    net.send((2, 1), [(2, 3)], 10 * n, p.latency)  # holds (2,1)->(2,2) when the DMA's head gets there
    assert dram.load(0, (2, 3), n, 0).arrivals[(2, 3)] > alone


def test_store_crosses_the_mesh_then_the_port(m4: Machine) -> None:
    p = m4.dram_ports[0]
    net = Network(m4)
    dram = Dram(m4, net)
    core, n, t = (3, 3), 5000, 2
    d = dram.store(0, core, n, t)
    hops = 3
    at_port = t + (hops - 1) * m4.hop_latency + link_cycles(n, m4) + m4.hop_latency
    assert d.source_free == t + link_cycles(n, m4)
    assert d.arrivals == {core: at_port + _busy(m4, n) + p.latency}
    st = dram.port_stats()[p.name]
    assert (st.bytes_read, st.bytes_written, st.busy_cycles) == (0, n, _busy(m4, n))
    # a second store waits for the port if its data arrives while the port is busy
    d2 = dram.store(0, (3, 0), 400_000, t)
    at2 = t + link_cycles(400_000, m4)
    assert d2.arrivals[(3, 0)] == max(at2, at_port + _busy(m4, n)) + _busy(m4, 400_000) + p.latency


def test_load_ends_at_the_core_ejection_port(m4: Machine) -> None:
    p = m4.dram_ports[0]
    n = 6400
    core = (2, 2)
    alone = Dram(m4, Network(m4)).load(0, core, n, 0).arrivals[core]
    net = Network(m4)
    dram = Dram(m4, net)
    # a put from below holds core (2, 2)'s ejection port (and no link of the DMA's route) when the DMA comes
    put = net.send((3, 2), [core], 10 * n, p.latency)
    got = dram.load(0, core, n, 0).arrivals[core]
    assert got == put.arrivals[core] + eject_cycles(n, m4) > alone
    assert net.port_stats()[(core, "eject")].bytes == 11 * n


def test_the_dram_side_uses_no_router_port(m4: Machine) -> None:
    p = m4.dram_ports[0]
    n = 6400
    entry = (2, 0)
    net = Network(m4)
    dram = Dram(m4, net)
    # the core at the entry router is busy sending and receiving: both its ports are held
    net.send(entry, [(1, 0)], 100 * n, 0)
    net.send((3, 0), [entry], 100 * n, 0)
    load = dram.load(0, (2, 3), n, 0)
    assert load.arrivals[(2, 3)] == Dram(m4, Network(m4)).load(0, (2, 3), n, 0).arrivals[(2, 3)]
    store = dram.store(0, (2, 2), n, p.latency)
    assert store.arrivals[(2, 2)] == Dram(m4, Network(m4)).store(0, (2, 2), n, p.latency).arrivals[(2, 2)]
    ports = net.port_stats()
    assert ports[(entry, "inject")].bytes == ports[(entry, "eject")].bytes == 100 * n
    assert ports[((2, 3), "eject")].bytes == ports[((2, 2), "inject")].bytes == n


def test_store_starts_at_the_core_injection_port(m4: Machine) -> None:
    n = 5000
    core = (1, 2)
    net = Network(m4)
    dram = Dram(m4, net)
    put = net.send(core, [(0, 2)], 4 * n, 0)  # north: shares no link with the store's westward route
    d = dram.store(0, core, n, 0)
    assert d.source_free == put.source_free + inject_cycles(n, m4)


def test_concurrent_loads_into_the_entry_router_core_serialise_on_its_ejection_port(m4: Machine) -> None:
    n = 64_000
    dram = Dram(m4, Network(m4))
    a = dram.load(0, (1, 0), n, 0)
    b = dram.load(0, (1, 0), n, 0)
    lat = m4.dram_ports[0].latency
    assert a.arrivals[(1, 0)] == lat + max(eject_cycles(n, m4), _busy(m4, n))
    # the port has the second DMA ready after its own busy time; the core's ejection port is the bound
    assert b.arrivals[(1, 0)] == lat + 2 * eject_cycles(n, m4)


def test_tile_ports_and_entry_routers() -> None:
    m = load_machine("tile")
    dram = Dram(m, Network(m))
    east = next(i for i, p in enumerate(m.dram_ports) if p.name == "dip_east2")
    core = (40, 95)
    d = dram.load(east, core, 1024, 0)
    entry = m.dram_ports[east].entry_router(m, *core)
    assert entry == (40, 99)
    assert d.arrivals[core] >= m.dram_ports[east].latency + 4 * m.hop_latency
    with pytest.raises(ValueError):
        dram.load(len(m.dram_ports), core, 1, 0)


# -- functional store ----------------------------------------------------------------------------

def test_lazy_pages_on_a_320_gb_address_space() -> None:
    m = load_machine("tile")
    mem = DramMemory(m)
    assert mem.size == m.dram_bytes >= 320 * 10**9
    assert mem.pages_allocated == 0
    top = m.dram_bytes - 8
    mem.write(top, np.arange(8, dtype=np.uint8))
    assert mem.pages_allocated == 1
    assert mem.read(top, 8).tolist() == list(range(8))
    assert not mem.read(10**11, 1 << 20).any()  # untouched: zeros, and no page created
    assert mem.pages_allocated == 1
    # across a page boundary
    mem.write(PAGE_BYTES * 7 - 3, b"abcdef")
    assert mem.pages_allocated == 3
    assert mem.read(PAGE_BYTES * 7 - 3, 6).tobytes() == b"abcdef"
    with pytest.raises(DramBoundsError):
        mem.read(m.dram_bytes - 4, 8)
    with pytest.raises(IndexError):
        mem.write(-1, b"x")
    with pytest.raises(DramBoundsError):
        mem.read_strided(m.dram_bytes - 64, (2, 2), (64, 4), 4)


def test_write_accepts_arrays_of_any_dtype() -> None:
    mem = DramMemory(1 << 24)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    mem.write(100, x)
    assert np.array_equal(mem.read(100, x.nbytes).view(np.float32).reshape(3, 4), x)
    mem.write(1000, x.T)  # a non-contiguous array is written in C order
    assert np.array_equal(mem.read(1000, x.nbytes).view(np.float32).reshape(4, 3), x.T)


def _ref_view(ref: np.ndarray, off: int, counts: tuple[int, ...], strides: tuple[int, ...],
              esize: int) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(ref[off:], (*counts, esize), (*strides, 1))


@pytest.mark.parametrize("seed", range(6))
def test_strided_matches_numpy_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = 3 * PAGE_BYTES + 12345  # crosses pages, exercises the one-page and the span paths
    base = PAGE_BYTES - 777
    mem = DramMemory(1 << 30)
    ref = rng.integers(0, 256, size, dtype=np.uint8)
    mem.write(base, ref)
    for _ in range(40):
        ndim = int(rng.integers(1, 5))
        esize = int(rng.choice([1, 2, 4, 8]))
        counts = tuple(int(c) for c in rng.integers(1, 9, ndim))
        strides = tuple(int(s) for s in rng.integers(-3000, 3000, ndim))
        lo = sum(min(0, (c - 1) * s) for c, s in zip(counts, strides, strict=True))
        hi = sum(max(0, (c - 1) * s) for c, s in zip(counts, strides, strict=True)) + esize
        if rng.random() < 0.3:  # a big stride: the span crosses pages
            strides = (int(rng.integers(PAGE_BYTES // 8, PAGE_BYTES // 2)),) + strides[1:]
            lo = sum(min(0, (c - 1) * s) for c, s in zip(counts, strides, strict=True))
            hi = sum(max(0, (c - 1) * s) for c, s in zip(counts, strides, strict=True)) + esize
        if hi - lo > size:
            continue
        off = int(rng.integers(-lo, size - hi + 1))
        got = mem.read_strided(base + off, counts, strides, esize)
        assert got.shape == (*counts, esize) and got.dtype == np.uint8
        assert np.array_equal(got, _ref_view(ref, off, counts, strides, esize))
        if len(set(zip(counts, strides, strict=True))) == ndim and all(s != 0 for s in strides):
            # write new values where no two elements alias (checked on the reference)
            view = _ref_view(ref, off, counts, strides, esize)
            addrs = off + sum(np.indices(counts)[d] * strides[d] for d in range(ndim))
            elems = (addrs[..., None] + np.arange(esize)).ravel()
            if len(np.unique(elems)) == elems.size:
                new = rng.integers(0, 256, view.shape, dtype=np.uint8)
                mem.write_strided(base + off, counts, strides, esize, new)
                ref[elems] = new.ravel()
    assert np.array_equal(mem.read(base, size), ref)


def test_strided_far_apart_paths() -> None:
    """Rows far apart: the row loop (few contiguous rows) and the page-grouped index path."""
    mem = DramMemory(64 << 30)
    gib = 1 << 30
    rows = np.arange(3 * 100, dtype=np.uint8).reshape(3, 100)
    mem.write_strided(5, (3, 25), (gib, 4), 4, rows)
    assert mem.pages_allocated == 3
    assert np.array_equal(mem.read_strided(5, (3, 25), (gib, 4), 4).reshape(3, 100), rows)
    assert mem.read(gib + 5, 100).tolist() == rows[1].tolist()
    # 4-D, many far-apart elements with a gap inside each row: the index path
    counts, strides, esize = (2, 3, 20, 5), (3 * gib, gib // 4, 10 * PAGE_BYTES, 8), 2
    data = np.random.default_rng(0).integers(0, 256, (*counts, esize), dtype=np.uint8)
    mem.write_strided(gib, counts, strides, esize, data)
    assert np.array_equal(mem.read_strided(gib, counts, strides, esize), data)
    idx = random.Random(0)
    for _ in range(20):
        i = tuple(idx.randrange(c) for c in counts)
        a = gib + sum(j * s for j, s in zip(i, strides, strict=True))
        assert mem.read(a, esize).tolist() == data[i].tolist()


def test_strided_contiguous_fast_path_and_zero_counts() -> None:
    mem = DramMemory(1 << 26)
    x = np.arange(4 * 300 * 2, dtype=np.uint8)
    mem.write_strided(PAGE_BYTES - 100, (4, 300), (600, 2), 2, x)
    assert np.array_equal(mem.read(PAGE_BYTES - 100, x.size), x)
    assert mem.read_strided(0, (3, 0), (8, 4), 4).shape == (3, 0, 4)
    mem.write_strided(0, (0,), (4,), 4, b"")
    with pytest.raises(ValueError):
        mem.read_strided(0, (1, 1, 1, 1, 1), (1, 1, 1, 1, 1), 1)
    with pytest.raises(ValueError):
        mem.write_strided(0, (2,), (4,), 4, b"abc")


def test_zero_stride_read_broadcasts() -> None:
    mem = DramMemory(1 << 22)
    mem.write(64, np.array([7, 8], dtype=np.uint8))
    got = mem.read_strided(64, (3, 2), (0, 1), 1)
    assert got.reshape(3, 2).tolist() == [[7, 8]] * 3
