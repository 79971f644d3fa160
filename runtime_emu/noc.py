"""The network on chip: XY routing, cut-through link reservations, multicast trees.

Timing rule (DESIGN.md "Cost rules", detailed in docs/timing.md). For a path of links l1..ln and a
send of `nbytes` at cycle t:

    start_1 = max(t, free(l1))
    start_i = max(start_{i-1} + lat(l_{i-1}), free(l_i))
    end_i   = start_i + dur(l_i)          dur = isa.costs.link_cycles(nbytes, d2d=crosses_die(l))
    free(l_i) := end_i
    arrival = max_i end_i + lat(l_n)      (the tail leaves the slowest link, one more hop to eject)
    source_free = end_1

`lat` is `machine.hop_latency`, or `machine.d2d_latency` for a link that crosses a die edge.
Requests are served in call order (the engine calls in (issue cycle, core id) order): a link
reserved by an earlier call delays a later one, never the reverse. A multicast reserves each link
of the union of its XY paths once, parent links first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from isa.costs import link_cycles
from isa.machine import Machine
from runtime_emu.stats import RC, Link, LinkStats

__all__ = ["RC", "Link", "Delivery", "Network"]

_CACHE_LIMIT = 1 << 16  # cached multicast trees (paths are cached without limit: one per pair used)

# One link of a cached path or tree: (link, crosses a die edge, hop latency after it, parent index).
_Hop = tuple[Link, bool, int]
_Node = tuple[Link, bool, int, int]
_Tree = tuple[tuple[_Node, ...], tuple[tuple[RC, int], ...]]  # (links parent-first, (dst, last link index))


@dataclass(frozen=True)
class Delivery:
    """When a transfer's source may be reused, and when it has arrived at each destination."""

    source_free: int
    arrivals: dict[RC, int]


class Network:
    """The mesh of routers and links of one machine, with the reservations of every transfer so far."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._rows, self._cols = machine.mesh
        self._free: dict[Link, int] = {}
        self._local_free: dict[RC, int] = {}  # the local (core) port of each router
        self._stats: dict[Link, LinkStats] = {}
        self._paths: dict[tuple[RC, RC], tuple[_Hop, ...]] = {}
        self._trees: dict[tuple[RC, tuple[RC, ...]], _Tree] = {}

    # -- routes -------------------------------------------------------------------------------
    def _check(self, rc: RC) -> None:
        r, c = rc
        if not (0 <= r < self._rows and 0 <= c < self._cols):
            raise ValueError(f"router {rc} is outside the {self._rows} x {self._cols} mesh")

    def _path(self, src: RC, dst: RC) -> tuple[_Hop, ...]:
        key = (src, dst)
        hops = self._paths.get(key)
        if hops is None:
            self._check(src)
            self._check(dst)
            m = self.machine
            out: list[_Hop] = []
            r, c = src
            tr, tc = dst
            step = 1 if tc > c else -1
            while c != tc:  # X first, in the source row
                a, c = (r, c), c + step
                d2d = m.crosses_die(a, (r, c))
                out.append(((a, (r, c)), d2d, m.d2d_latency if d2d else m.hop_latency))
            step = 1 if tr > r else -1
            while r != tr:  # then Y, in the destination column
                a, r = (r, c), r + step
                d2d = m.crosses_die(a, (r, c))
                out.append(((a, (r, c)), d2d, m.d2d_latency if d2d else m.hop_latency))
            hops = self._paths[key] = tuple(out)
        return hops

    def xy_path(self, src: RC, dst: RC) -> list[Link]:
        """The dimension-ordered route: along the source row to the destination column, then along it.

        Disabled cores' routers forward like any other; an empty list when src == dst.
        """
        return [h[0] for h in self._path((src[0], src[1]), (dst[0], dst[1]))]

    def path_latency(self, src: RC, dst: RC) -> int:
        """Sum of the hop latencies along the XY route (what a head pays with no contention)."""
        return sum(h[2] for h in self._path((src[0], src[1]), (dst[0], dst[1])))

    def _tree(self, src: RC, dsts: tuple[RC, ...]) -> _Tree:
        """The multicast tree: links parent-first with their parent's index, and each dst's last link."""
        key = (src, dsts)
        tree = self._trees.get(key)
        if tree is None:
            index: dict[Link, int] = {}
            nodes: list[_Node] = []
            leaves: list[tuple[RC, int]] = []
            for dst in dsts:
                parent = -1
                for link, d2d, lat in self._path(src, dst):
                    j = index.get(link)
                    if j is None:  # XY routes from one source are prefix-closed: the union is a tree
                        j = index[link] = len(nodes)
                        nodes.append((link, d2d, lat, parent))
                    parent = j
                leaves.append((dst, parent))  # parent == -1: dst is the source itself
            if len(self._trees) >= _CACHE_LIMIT:
                self._trees.clear()
            tree = self._trees[key] = (tuple(nodes), tuple(leaves))
        return tree

    # -- transfers ----------------------------------------------------------------------------
    def send(self, src: RC, dsts: Sequence[RC], nbytes: int, t: int) -> Delivery:
        """Reserve the links of a transfer of `nbytes` from `src` to every router of `dsts`, at cycle t.

        A destination equal to `src` is a local copy: it arrives at t + link_cycles(nbytes).
        Repeated destinations are counted once. Zero-byte messages occupy each link one cycle.
        """
        if nbytes < 0:
            raise ValueError(f"a transfer cannot carry {nbytes} bytes")
        if not dsts:
            raise ValueError("a transfer needs at least one destination")
        m = self.machine
        durs = (link_cycles(nbytes, m), link_cycles(nbytes, m, d2d=True))
        src = (src[0], src[1])
        uniq = tuple(dict.fromkeys((d[0], d[1]) for d in dsts))
        if len(uniq) == 1:
            return self._unicast(src, uniq[0], nbytes, t, durs)
        return self._multicast(src, uniq, nbytes, t, durs)

    def _reserve(self, link: Link, start: int, dur: int, nbytes: int) -> None:
        self._free[link] = start + dur
        st = self._stats.get(link)
        if st is None:
            st = self._stats[link] = LinkStats()
        st.bytes += nbytes
        st.busy_cycles += dur

    def _unicast(self, src: RC, dst: RC, nbytes: int, t: int, durs: tuple[int, int]) -> Delivery:
        hops = self._path(src, dst)
        if not hops:
            # Source and destination share a router (a put to itself, or a DMA into the core at its
            # port's entry router): the data goes through that router's local port, which moves one
            # link width per cycle like any port, so such transfers serialise on it. It is not a link
            # between routers, so it adds nothing to the link statistics (noc_bytes).
            f = self._local_free.get(src, 0)
            done = (t if t >= f else f) + durs[0]
            self._local_free[src] = done
            return Delivery(done, {dst: done})
        free = self._free
        ready = t  # when the head can enter the next link
        last_end = 0
        first_end = -1
        lat = 0
        for link, d2d, lat in hops:
            f = free.get(link, 0)
            start = ready if ready >= f else f
            dur = durs[d2d]
            end = start + dur
            self._reserve(link, start, dur, nbytes)
            if first_end < 0:
                first_end = end
            if end > last_end:
                last_end = end
            ready = start + lat
        return Delivery(first_end, {dst: last_end + lat})

    def _multicast(self, src: RC, dsts: tuple[RC, ...], nbytes: int, t: int,
                   durs: tuple[int, int]) -> Delivery:
        nodes, leaves = self._tree(src, dsts)
        free = self._free
        n = len(nodes)
        ready = [0] * n  # when the head may enter a child of node j
        tail = [0] * n  # the latest link end on the route up to and including node j
        source_free = t + durs[0] if any(j < 0 for _, j in leaves) else 0
        for j, (link, d2d, lat, parent) in enumerate(nodes):
            r = t if parent < 0 else ready[parent]
            f = free.get(link, 0)
            start = r if r >= f else f
            dur = durs[d2d]
            end = start + dur
            self._reserve(link, start, dur, nbytes)
            ready[j] = start + lat
            if parent < 0:
                tail[j] = end
                if end > source_free:
                    source_free = end
            else:
                tp = tail[parent]
                tail[j] = end if end > tp else tp
        arrivals = {dst: (t + durs[0] if j < 0 else tail[j] + nodes[j][2]) for dst, j in leaves}
        return Delivery(source_free, arrivals)

    # -- state --------------------------------------------------------------------------------
    def link_free(self, link: Link) -> int:
        """The cycle at which `link` is next free (0 when never used)."""
        return self._free.get(link, 0)

    def link_stats(self) -> dict[Link, LinkStats]:
        """Bytes and busy cycles of every link used so far (the live objects, updated by later sends)."""
        return self._stats
