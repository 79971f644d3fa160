"""The network timing rules of DESIGN.md, with expected numbers computed from the machine fields."""

from __future__ import annotations

import random
import time

import pytest

from isa.costs import link_cycles
from isa.machine import Machine
from isa.presets import load_machine
from runtime_emu.noc import Network


@pytest.fixture(scope="module")
def m8() -> Machine:
    return load_machine("mesh8x8")


@pytest.fixture(scope="module")
def tile() -> Machine:
    return load_machine("tile")


def test_xy_path_goes_along_the_row_first(m8: Machine) -> None:
    net = Network(m8)
    path = net.xy_path((1, 1), (4, 3))
    assert path == [((1, 1), (1, 2)), ((1, 2), (1, 3)), ((1, 3), (2, 3)), ((2, 3), (3, 3)), ((3, 3), (4, 3))]
    back = net.xy_path((4, 3), (1, 1))
    assert back == [((4, 3), (4, 2)), ((4, 2), (4, 1)), ((4, 1), (3, 1)), ((3, 1), (2, 1)), ((2, 1), (1, 1))]
    assert net.xy_path((2, 2), (2, 2)) == []
    with pytest.raises(ValueError):
        net.xy_path((0, 0), (8, 0))


def test_disabled_routers_forward() -> None:
    m = load_machine("mesh4x4", ["disabled=[[0, 1], [0, 2]]"])
    net = Network(m)
    assert net.xy_path((0, 0), (0, 3)) == [((0, 0), (0, 1)), ((0, 1), (0, 2)), ((0, 2), (0, 3))]
    d = net.send((0, 0), [(0, 3)], 64, 0)
    assert d.arrivals[(0, 3)] == link_cycles(64, m) + 3 * m.hop_latency


@pytest.mark.parametrize("nbytes", [0, 1, 64, 1000, 4096])
@pytest.mark.parametrize("k", [1, 2, 5, 7])
def test_one_transfer_over_k_hops(m8: Machine, k: int, nbytes: int) -> None:
    net = Network(m8)
    t = 13
    d = net.send((0, 0), [(0, k)], nbytes, t)
    dur = link_cycles(nbytes, m8)
    # the head enters link i at t + (i-1) hops; the last tail leaves at t + (k-1) hops + dur; one more hop
    assert d.arrivals == {(0, k): t + (k - 1) * m8.hop_latency + dur + m8.hop_latency}
    assert d.source_free == t + dur


def test_each_extra_hop_adds_hop_latency(m8: Machine) -> None:
    arrivals = [Network(m8).send((3, 0), [(3, k)], 500, 0).arrivals[(3, k)] for k in range(1, 8)]
    arrivals += [Network(m8).send((3, 7), [(7 - k, 7)], 500, 0).arrivals[(7 - k, 7)] for k in range(1, 4)]
    steps = [b - a for a, b in zip(arrivals[:6], arrivals[1:7], strict=True)]
    assert steps == [m8.hop_latency] * 6


def test_hop_latency_is_a_machine_field() -> None:
    m = load_machine("mesh8x8", ["hop_latency=5", "link_bytes_per_cycle=32"])
    d = Network(m).send((0, 0), [(3, 0)], 100, 0)
    assert d.arrivals[(3, 0)] == link_cycles(100, m) + 3 * 5 == 4 + 15


def test_self_transfer(m8: Machine) -> None:
    d = Network(m8).send((2, 2), [(2, 2)], 300, 7)
    assert d.source_free == d.arrivals[(2, 2)] == 7 + link_cycles(300, m8)


def test_zero_byte_message_occupies_each_link_one_cycle(m8: Machine) -> None:
    net = Network(m8)
    d = net.send((0, 0), [(2, 2)], 0, 0)
    assert d.arrivals[(2, 2)] == 1 + 4 * m8.hop_latency
    stats = net.link_stats()
    assert len(stats) == 4
    assert all(s.busy_cycles == 1 and s.bytes == 0 for s in stats.values())


def test_two_transfers_sharing_a_link_take_longer(m8: Machine) -> None:
    n = 2048
    dur = link_cycles(n, m8)
    alone = Network(m8).send((1, 0), [(1, 4)], n, 0).arrivals[(1, 4)]
    net = Network(m8)
    net.send((1, 0), [(1, 3)], n, 0)  # shares links (1,0)->(1,1) ... (1,2)->(1,3)
    second = net.send((1, 0), [(1, 4)], n, 0)
    assert second.arrivals[(1, 4)] > alone
    # the second waits for the first link to free; then every later link is already free in time
    assert second.source_free == 2 * dur
    assert second.arrivals[(1, 4)] == alone + dur
    # a transfer on disjoint links is not delayed
    assert net.send((5, 0), [(5, 4)], n, 0).arrivals[(5, 4)] == alone


def test_contention_on_a_middle_link(m8: Machine) -> None:
    n = 640
    dur, hop = link_cycles(n, m8), m8.hop_latency
    net = Network(m8)
    net.send((4, 2), [(4, 3)], n, 0)  # holds link (4,2)->(4,3) for [0, dur)
    d = net.send((4, 0), [(4, 5)], n, 0)
    # link 3 of the path starts at max(0 + 2 hops, dur); links 4 and 5 follow one hop apart
    start3 = max(2 * hop, dur)
    assert d.arrivals[(4, 5)] == start3 + 2 * hop + dur + hop
    assert d.source_free == dur


def test_first_come_first_served_in_call_order(m8: Machine) -> None:
    n = 1000
    dur = link_cycles(n, m8)
    net = Network(m8)
    a = net.send((0, 0), [(0, 1)], n, 10)
    b = net.send((0, 0), [(0, 1)], n, 0)  # issued earlier but called later: it is not served first
    assert a.source_free == 10 + dur
    assert b.source_free == 10 + 2 * dur
    assert b.arrivals[(0, 1)] > a.arrivals[(0, 1)]
    assert net.link_free(((0, 0), (0, 1))) == 10 + 2 * dur


def test_in_order_delivery_between_one_source_and_one_destination(m8: Machine) -> None:
    rng = random.Random(1)
    net = Network(m8)
    src, dst = (1, 1), (6, 5)
    t = 0
    arrivals = []
    for _ in range(300):
        t += rng.randrange(0, 20)
        # interfering traffic crossing parts of the route
        net.send((rng.randrange(8), rng.randrange(8)), [(rng.randrange(8), rng.randrange(8))],
                 rng.randrange(0, 3000), t)
        arrivals.append(net.send(src, [dst], rng.choice([0, 1, 64, 700, 5000]), t).arrivals[dst])
    assert all(a < b for a, b in zip(arrivals, arrivals[1:], strict=False))


def test_multicast_reserves_each_link_once_and_reaches_every_destination(m8: Machine) -> None:
    n = 1500
    src = (2, 2)
    dsts = [(2, c) for c in range(8) if c != 2] + [(r, 2) for r in range(8) if r != 2] + [(5, 6)]
    net = Network(m8)
    d = net.send(src, dsts, n, 4)
    tree = {link for dst in dsts for link in net.xy_path(src, dst)}
    stats = net.link_stats()
    assert set(stats) == tree
    assert all(s.bytes == n and s.busy_cycles == link_cycles(n, m8) for s in stats.values())
    # on an idle network every destination gets what a unicast would give it
    for dst in dsts:
        assert d.arrivals[dst] == Network(m8).send(src, [dst], n, 4).arrivals[dst]
    assert d.source_free == 4 + link_cycles(n, m8)
    # the tree's links are reserved: a later unicast along a branch waits
    later = net.send(src, [(2, 7)], n, 4)
    assert later.source_free == 4 + 2 * link_cycles(n, m8)


def test_multicast_with_the_source_among_destinations(m8: Machine) -> None:
    d = Network(m8).send((0, 0), [(0, 0), (0, 1), (0, 1)], 64, 0)
    assert d.arrivals == {(0, 0): 1, (0, 1): 1 + m8.hop_latency}


def test_multicast_to_a_row_of_twenty_is_cheap() -> None:
    m = load_machine("d1")
    net = Network(m)
    row = [(3, c) for c in range(m.mesh[1])]
    t0 = time.perf_counter()
    for i in range(2000):
        net.send((3, 0), row, 4096, i * 100)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"2000 row multicasts took {elapsed:.2f} s"
    assert sum(s.bytes for s in net.link_stats().values()) == 2000 * 4096 * (m.mesh[1] - 1)


def test_die_crossing_link_uses_d2d_width_and_latency(tile: Machine) -> None:
    dc = tile.die[1]
    a, b, c = (0, dc - 2), (0, dc - 1), (0, dc)
    assert tile.crosses_die(b, c) and not tile.crosses_die(a, b)
    n = 4000
    dur, dur_d = link_cycles(n, tile), link_cycles(n, tile, d2d=True)
    assert dur_d > dur  # the d2d link is narrower
    net = Network(tile)
    one = net.send(b, [c], n, 0)
    assert one.arrivals[c] == dur_d + tile.d2d_latency
    assert net.link_stats()[(b, c)].busy_cycles == dur_d
    # two hops: an ordinary link, then the die edge; the tail leaves the slower link last
    two = Network(tile).send(a, [c], n, 0)
    assert two.arrivals[c] == max(dur, tile.hop_latency + dur_d) + tile.d2d_latency
    # a hop after the die edge starts a die-to-die latency after the head crossed it
    d = (0, dc + 1)
    three = Network(tile).send(b, [d], n, 0)
    assert three.arrivals[d] == max(dur_d, tile.d2d_latency + dur) + tile.hop_latency


def test_link_stats_count_bytes_and_busy_cycles(m8: Machine) -> None:
    net = Network(m8)
    net.send((0, 0), [(0, 2)], 100, 0)
    net.send((0, 1), [(0, 2)], 300, 0)
    s = net.link_stats()
    assert s[((0, 0), (0, 1))].bytes == 100
    assert s[((0, 1), (0, 2))].bytes == 400
    assert s[((0, 1), (0, 2))].busy_cycles == link_cycles(100, m8) + link_cycles(300, m8)


def test_bad_requests(m8: Machine) -> None:
    net = Network(m8)
    with pytest.raises(ValueError):
        net.send((0, 0), [(0, 1)], -1, 0)
    with pytest.raises(ValueError):
        net.send((0, 0), [], 1, 0)
    with pytest.raises(ValueError):
        net.send((0, 0), [(9, 9)], 1, 0)
