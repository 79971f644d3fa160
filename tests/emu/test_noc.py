"""The network timing rules of DESIGN.md, with expected numbers computed from the machine fields."""

from __future__ import annotations

import random
import time

import pytest

from isa.asm import assemble
from isa.costs import eject_cycles, inject_cycles, link_cycles
from isa.machine import Machine, assumptions
from isa.presets import load_machine
from runtime_emu import run
from runtime_emu.noc import Network
from runtime_emu.stats import LinkStats


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


# -- router ports: injection and ejection ----------------------------------------------------------

def test_port_widths_are_machine_fields_defaulting_to_a_link(m8: Machine) -> None:
    assert m8.inject_bytes_per_cycle == m8.eject_bytes_per_cycle == m8.link_bytes_per_cycle
    assert inject_cycles(1000, m8) == eject_cycles(1000, m8) == link_cycles(1000, m8)
    assert {"inject_bytes_per_cycle", "eject_bytes_per_cycle"} <= {name for name, _ in assumptions()}


def test_neighbours_putting_into_one_core_serialise_on_its_ejection_port() -> None:
    m = load_machine("mesh4x4")
    n = 64 * 1024
    dur, hop = link_cycles(n, m), m.hop_latency
    dst = (1, 1)
    srcs = [(0, 1), (1, 0), (1, 2), (2, 1)]  # four neighbours, four different links into (1, 1)
    one = Network(m).send(srcs[0], [dst], n, 0).arrivals[dst]
    assert one == dur + hop
    net = Network(m)
    got = [net.send(s, [dst], n, 0) for s in srcs]
    # each head reaches the router after one hop; the ejection port takes them one after another
    assert [d.arrivals[dst] for d in got] == [hop + k * eject_cycles(n, m) for k in range(1, 5)]
    assert all(d.source_free == inject_cycles(n, m) for d in got)  # the senders' own ports are free
    last = got[-1].arrivals[dst]
    assert 3.9 < last / one < 4.1
    assert 4 * n / last == pytest.approx(m.eject_bytes_per_cycle, rel=0.01)


def test_one_core_putting_to_its_neighbours_serialises_on_its_injection_port() -> None:
    m = load_machine("mesh4x4")
    n = 64 * 1024
    hop = m.hop_latency
    src = (1, 1)
    dsts = [(0, 1), (1, 0), (1, 2), (2, 1)]
    net = Network(m)
    got = [net.send(src, [d], n, 0) for d in dsts]
    ends = [k * inject_cycles(n, m) for k in range(1, 5)]
    assert [d.source_free for d in got] == ends
    assert [d.arrivals[dst] for d, dst in zip(got, dsts, strict=True)] == [e + hop for e in ends]
    assert 4 * n / got[-1].arrivals[dsts[-1]] == pytest.approx(m.inject_bytes_per_cycle, rel=0.01)


def test_ports_serve_first_come_first_served_in_call_order(m8: Machine) -> None:
    n = 1000
    dur_in, dur_out, hop = inject_cycles(n, m8), eject_cycles(n, m8), m8.hop_latency
    net = Network(m8)
    # into one core from two sides: the later call waits at the ejection port even though issued earlier
    a = net.send((3, 2), [(3, 3)], n, 10)
    b = net.send((2, 3), [(3, 3)], n, 0)
    assert a.arrivals[(3, 3)] == 10 + hop + dur_out
    assert b.arrivals[(3, 3)] == 10 + hop + 2 * dur_out
    assert b.source_free == dur_in  # its own injection port and link were free
    # out of one core in two directions: the same at the injection port
    c = net.send((6, 6), [(6, 7)], n, 10)
    d = net.send((6, 6), [(7, 6)], n, 0)
    assert c.source_free == 10 + dur_in
    assert d.source_free == 10 + 2 * dur_in
    assert d.arrivals[(7, 6)] == d.source_free + hop


def test_a_narrower_port_limits_every_transfer() -> None:
    m = load_machine("mesh8x8", ["inject_bytes_per_cycle=16", "eject_bytes_per_cycle=32"])
    n = 4096
    d = Network(m).send((0, 0), [(0, 3)], n, 0)
    assert d.source_free == inject_cycles(n, m) == n // 16
    # the links downstream of the narrow port are busy for their own time (the router buffers)
    assert d.arrivals[(0, 3)] == inject_cycles(n, m) + 3 * m.hop_latency
    m2 = load_machine("mesh8x8", ["eject_bytes_per_cycle=16"])
    d2 = Network(m2).send((0, 0), [(0, 3)], n, 0)
    assert d2.arrivals[(0, 3)] == 3 * m2.hop_latency + eject_cycles(n, m2)
    assert d2.source_free == link_cycles(n, m2)


def test_multicast_injects_once_and_ejects_at_every_destination(m8: Machine) -> None:
    n = 2048
    dur = link_cycles(n, m8)
    net = Network(m8)
    row = [(4, c) for c in range(8) if c != 4]
    d = net.send((4, 4), row, n, 0)
    assert d.source_free == inject_cycles(n, m8)
    ports = net.port_stats()
    assert ports[((4, 4), "inject")].bytes == n
    assert all(ports[(dst, "eject")].bytes == n for dst in row)
    assert len(ports) == 1 + len(row)
    # a put into one of them afterwards waits for that destination's ejection port
    late = net.send((5, 0), [(4, 0)], n, 0)
    assert late.arrivals[(4, 0)] == d.arrivals[(4, 0)] + eject_cycles(n, m8)
    assert d.arrivals[(4, 0)] == 3 * m8.hop_latency + dur + m8.hop_latency


def test_port_stats_are_not_link_stats(m8: Machine) -> None:
    net = Network(m8)
    net.send((0, 0), [(0, 2)], 100, 0)
    net.send((1, 1), [(1, 1)], 300, 0)  # to itself: both ports of one router, no link
    ports = net.port_stats()
    assert ports[((0, 0), "inject")] == LinkStats(100, inject_cycles(100, m8))
    assert ports[((0, 2), "eject")] == LinkStats(100, eject_cycles(100, m8))
    assert ports[((1, 1), "inject")].bytes == ports[((1, 1), "eject")].bytes == 300
    assert sum(s.bytes for s in net.link_stats().values()) == 2 * 100


def test_a_transfer_can_leave_out_either_port(m8: Machine) -> None:
    n = 640
    net = Network(m8)
    net.send((2, 0), [(2, 0)], 10 * n, 0)  # holds both ports of router (2, 0)
    # without the source's injection port, the head enters the first link at t
    load = net.send((2, 0), [(2, 2)], n, 0, inject=False)
    assert load.arrivals[(2, 2)] == 2 * m8.hop_latency + link_cycles(n, m8)
    # without the destination's ejection port, the arrival is the links' rule alone
    store = net.send((2, 3), [(2, 0)], n, 0, eject=False)
    assert store.arrivals[(2, 0)] == 3 * m8.hop_latency + link_cycles(n, m8)
    assert ((2, 0), "eject") in net.port_stats() and net.port_stats()[((2, 0), "eject")].bytes == 10 * n


def test_combining_depth_over_the_bounding_box(m8: Machine, tile: Machine) -> None:
    hop = m8.hop_latency
    net = Network(m8)
    assert net.combining_depth([(3, 3)]) == 0
    assert net.combining_depth([(0, 0), (1, 1)]) == 2 * hop  # root (0, 0), farthest corner (1, 1)
    assert net.combining_depth([(0, 0), (7, 7), (2, 5)]) == 8 * hop  # root (3, 3), corner (7, 7)
    assert net.combining_depth([(2, 2), (2, 6)]) == 2 * hop  # a row: root (2, 4)
    # a box across a die edge pays the die-to-die latency once on the way to the far corner
    dc = tile.die[1]
    tnet = Network(tile)
    depth = tnet.combining_depth([(0, dc - 2), (1, dc + 1)])  # root (0, dc - 1), at the edge
    assert depth == tile.d2d_latency + 2 * tile.hop_latency  # one link across the edge, one on, one down


def _run_cycles(sections: list[tuple[int, list[str]]], m: Machine) -> int:
    text = "".join(f".section s{i} cores={cid}\n" + "".join(f"{line}\n" for line in body)
                   for i, (cid, body) in enumerate(sections))
    return int(run(assemble(text, machine=m), timing_only=True).cycles)


def _put(dst: int, nbytes: int) -> list[str]:
    return [f"li r1, {dst}", "li r2, 0x0", f"put r1, r2, r2, rows=1, bytes={nbytes}, seml=0, semr=1"]


@pytest.mark.parametrize("inward", [True, False])
def test_a_core_ports_bound_a_program_on_mesh4x4(inward: bool) -> None:
    """The case of issue #6: four neighbours put 64 KiB into one core at once (or one core to each of
    them): about four times the time of one transfer, about 64 B/cycle through the core, not 4 x 64."""
    m = load_machine("mesh4x4")
    n = 64 * 1024
    core = m.core_at[(1, 1)]
    others = [m.core_at[rc] for rc in ((0, 1), (1, 0), (1, 2), (2, 1))]

    def program(k: int) -> list[tuple[int, list[str]]]:
        if inward:
            sends = [(o, [*_put(core, n), "wait 0, 1", "halt"]) for o in others[:k]]
            return [*sends, (core, [f"wait 1, {k}", "halt"])]
        body = [line for o in others[:k] for line in _put(o, n)]
        return [(core, [*body, f"wait 0, {k}", "halt"]), *[(o, ["wait 1, 1", "halt"]) for o in others[:k]]]

    one, four = _run_cycles(program(1), m), _run_cycles(program(4), m)
    assert 3.8 < four / one < 4.1
    width = m.eject_bytes_per_cycle if inward else m.inject_bytes_per_cycle
    assert 4 * n / four == pytest.approx(width, rel=0.03)
