"""The network on chip: XY routing, cut-through reservations of router ports and links, multicast trees.

Timing rule (DESIGN.md "Cost rules", detailed in docs/timing.md). For a send of `nbytes` at cycle t from
router s over the path of links l1..ln to router d:

    inj     = max(t, free(inject(s)))     the injection port, busy [inj, inj + dur_inj)
    start_1 = max(inj, free(l1))          the head enters the first link as it starts on the port
    start_i = max(start_{i-1} + lat(l_{i-1}), free(l_i))
    end_i   = start_i + dur(l_i)          dur = isa.costs.link_cycles(nbytes, d2d=crosses_die(l))
    free(l_i) := end_i
    ej      = max(start_n + lat(l_n), free(eject(d)))     the ejection port, a last link
    arrival = max(max_i end_i + lat(l_n), inj + dur_inj + sum_i lat(l_i), ej + dur_ej)
    source_free = inj + dur_inj           the tail has left the source

`lat` is `machine.hop_latency`, or `machine.d2d_latency` for a link that crosses a die edge; the
ports' durations are `isa.costs.inject_cycles` and `eject_cycles`. Without contention (and ports as
wide as a link) the ports change nothing: arrival = t + hop latencies + dur.
Requests are served in call order (the engine calls in (issue cycle, core id) order): a port or link
reserved by an earlier call delays a later one, never the reverse. A multicast injects once, reserves
each link of the union of its XY paths once, parent links first, and ejects at every destination.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from isa.costs import eject_cycles, inject_cycles, link_cycles
from isa.machine import Machine
from runtime_emu.stats import RC, Link, LinkStats, RouterPort

__all__ = ["RC", "Link", "RouterPort", "Delivery", "Network"]

_CACHE_LIMIT = 1 << 16  # cached multicast trees and transfer sizes (paths without limit: one per pair used)

# One link of a cached path or tree: (link id, crosses a die edge, hop latency after it, parent index).
_Hop = tuple[int, bool, int]
_Node = tuple[int, bool, int, int]
# A cached route: (its links, the source's and destination's router index, the sum of its hop latencies,
# and for a route on one die (every link as wide, no negative latency) its (link id, latency) pairs, else None)
_Route = tuple[tuple[_Hop, ...], int, int, int, tuple[tuple[int, int], ...] | None]
_PORTS = ("inject", "eject")
# (links parent-first, (dst, last link index, the route's total hop latency))
_Tree = tuple[tuple[_Node, ...], tuple[tuple[RC, int, int], ...]]


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
        # links by id, in the order first used: when each is next free, its bytes and reserved cycles (flat
        # lists: a transfer's walk indexes them instead of hashing links)
        self._ids: dict[Link, int] = {}
        self._links: list[Link] = []
        self._lfree: list[int] = []
        self._lbytes: list[int] = []
        self._lbusy: list[int] = []
        # router ports by router index (row * cols + col), injection (core -> router) at 0 and ejection
        # (router -> core) at 1: when each is next free, its bytes and reserved cycles, and the routers in
        # the order their port was first used (for port_stats; every reservation lasts at least a cycle)
        nr = self._rows * self._cols
        self._pfree: tuple[list[int], list[int]] = ([0] * nr, [0] * nr)
        self._pbytes: tuple[list[int], list[int]] = ([0] * nr, [0] * nr)
        self._pbusy: tuple[list[int], list[int]] = ([0] * nr, [0] * nr)
        self._porder: tuple[list[int], list[int]] = ([], [])
        self._paths: dict[tuple[RC, RC], _Route] = {}
        self._trees: dict[tuple[RC, tuple[RC, ...]], _Tree] = {}
        self._depths: dict[tuple[int, int, int, int], int] = {}  # combining-tree depth per bounding box
        self._durs: dict[int, tuple[int, int, int, int]] = {}  # link, d2d link, inject, eject cycles by size

    # -- routes -------------------------------------------------------------------------------
    def _check(self, rc: RC) -> None:
        r, c = rc
        if not (0 <= r < self._rows and 0 <= c < self._cols):
            raise ValueError(f"router {rc} is outside the {self._rows} x {self._cols} mesh")

    def _path(self, src: RC, dst: RC) -> tuple[_Hop, ...]:
        route = self._paths.get((src, dst))
        return (route if route is not None else self._route(src, dst))[0]

    def _route(self, src: RC, dst: RC) -> _Route:
        """The cached route from src to dst (tuples: they key the cache)."""
        key = (src, dst)
        route = self._paths.get(key)
        if route is None:
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
                out.append((self._link_id((a, (r, c))), d2d, m.d2d_latency if d2d else m.hop_latency))
            step = 1 if tr > r else -1
            while r != tr:  # then Y, in the destination column
                a, r = (r, c), r + step
                d2d = m.crosses_die(a, (r, c))
                out.append((self._link_id((a, (r, c))), d2d, m.d2d_latency if d2d else m.hop_latency))
            cols = self._cols
            plain = not any(d2d or lat < 0 for _, d2d, lat in out)
            route = self._paths[key] = (tuple(out), src[0] * cols + src[1], tr * cols + tc,
                                        sum(h[2] for h in out),
                                        tuple((link, lat) for link, _, lat in out) if plain else None)
        return route

    def _link_id(self, link: Link) -> int:
        i = self._ids.get(link)
        if i is None:
            i = self._ids[link] = len(self._links)
            self._links.append(link)
            self._lfree.append(0)
            self._lbytes.append(0)
            self._lbusy.append(0)
        return i

    def xy_path(self, src: RC, dst: RC) -> list[Link]:
        """The dimension-ordered route: along the source row to the destination column, then along it.

        Disabled cores' routers forward like any other; an empty list when src == dst.
        """
        return [self._links[h[0]] for h in self._path((src[0], src[1]), (dst[0], dst[1]))]

    def path_latency(self, src: RC, dst: RC) -> int:
        """Sum of the hop latencies along the XY route (what a head pays with no contention)."""
        return self._route((src[0], src[1]), (dst[0], dst[1]))[3]

    def _tree(self, src: RC, dsts: tuple[RC, ...]) -> _Tree:
        """The multicast tree: links parent-first with their parent's index, and each dst's last link."""
        key = (src, dsts)
        tree = self._trees.get(key)
        if tree is None:
            index: dict[int, int] = {}
            nodes: list[_Node] = []
            leaves: list[tuple[RC, int, int]] = []
            for dst in dsts:
                parent = -1
                for link, d2d, lat in self._path(src, dst):
                    j = index.get(link)
                    if j is None:  # XY routes from one source are prefix-closed: the union is a tree
                        j = index[link] = len(nodes)
                        nodes.append((link, d2d, lat, parent))
                    parent = j
                # parent == -1: dst is the source itself; the route's total hop latency, for the port's tail
                leaves.append((dst, parent, self._route(src, dst)[3]))
            if len(self._trees) >= _CACHE_LIMIT:
                self._trees.clear()
            tree = self._trees[key] = (tuple(nodes), tuple(leaves))
        return tree

    # -- transfers ----------------------------------------------------------------------------
    def send(self, src: RC, dsts: Sequence[RC], nbytes: int, t: int, *, inject: bool = True,
             eject: bool = True) -> Delivery:
        """Reserve the ports and links of a transfer of `nbytes` from `src` to every router of `dsts`, at t.

        The data enters through `src`'s injection port and leaves through each destination's ejection
        port; `inject=False` (`eject=False`) leaves out the source (destination) side's port, for a
        DMA whose DRAM side is served by the DRAM port's own model (runtime_emu/dram.py). A destination
        equal to `src` goes from one port of that router to the other. Repeated destinations are counted
        once. Zero-byte messages occupy each port and link one cycle.
        """
        if nbytes < 0:
            raise ValueError(f"a transfer cannot carry {nbytes} bytes")
        if not dsts:
            raise ValueError("a transfer needs at least one destination")
        src = (src[0], src[1])
        uniq = ((dsts[0][0], dsts[0][1]),) if len(dsts) == 1 else tuple(dict.fromkeys((d[0], d[1]) for d in dsts))
        if len(uniq) == 1:
            source_free, arrival = self.unicast(src, uniq[0], nbytes, t, inject, eject)
            return Delivery(source_free, {uniq[0]: arrival})
        self._check(src)  # before its port is reserved (the tree checks every route)
        durs = self._durations(nbytes)
        if inject:
            head = self._reserve(0, src[0] * self._cols + src[1], t, durs[2], nbytes)
            tail = self._pfree[0][src[0] * self._cols + src[1]]
        else:
            head, tail = t, -1
        return self._multicast(src, uniq, nbytes, head, tail, durs, durs[3] if eject else -1)

    def _durations(self, nbytes: int) -> tuple[int, int, int, int]:
        """Cycles a transfer of `nbytes` holds a link, a die-to-die link, an injection and an ejection port."""
        durs = self._durs.get(nbytes)
        if durs is None:
            if len(self._durs) >= _CACHE_LIMIT:
                self._durs.clear()
            m = self.machine
            durs = self._durs[nbytes] = (link_cycles(nbytes, m), link_cycles(nbytes, m, d2d=True),
                                         inject_cycles(nbytes, m), eject_cycles(nbytes, m))
        return durs

    def _reserve(self, kind: int, router: int, ready: int, dur: int, nbytes: int) -> int:
        """Reserve a router port (0 injection, 1 ejection) like a link, first come first served; returns
        its start (its end is then its next free cycle)."""
        free = self._pfree[kind]
        f = free[router]
        start = ready if ready >= f else f
        free[router] = start + dur
        busy = self._pbusy[kind]
        if not busy[router]:
            self._porder[kind].append(router)
        busy[router] += dur
        self._pbytes[kind][router] += nbytes
        return start

    def unicast(self, src: RC, dst: RC, nbytes: int, t: int, inject: bool = True,
                eject: bool = True) -> tuple[int, int]:
        """`send` to one destination, for the engine's hot paths: returns (source_free, arrival).

        `src` and `dst` must be tuples and `nbytes` >= 0 (the callers' values are)."""
        route = self._paths.get((src, dst))
        if route is None:
            route = self._route(src, dst)
        hops, si, di, total, plain = route
        durs = self._durs.get(nbytes)
        if durs is None:
            durs = self._durations(nbytes)
        if inject:  # the injection port (as _reserve): `ready` is when the head may enter the first link
            free = self._pfree[0]
            f = free[si]
            ready = t if t >= f else f
            dur = durs[2]
            inj_end = first_end = free[si] = ready + dur
            busy = self._pbusy[0]
            if not busy[si]:
                self._porder[0].append(si)
            busy[si] += dur
            self._pbytes[0][si] += nbytes
        else:
            ready, inj_end, first_end = t, -1, -1
        free, lbytes, lbusy = self._lfree, self._lbytes, self._lbusy
        last_end = ready  # the latest link end
        lat = 0
        if plain is not None and plain:
            # every link takes `dur` and the head never goes back in time, so each link ends no earlier than
            # the one before: the last link's end is the latest, and the first's is known before the walk
            dur = durs[0]
            if first_end < 0:
                f = free[plain[0][0]]
                first_end = (ready if ready >= f else f) + dur
            for link, lat in plain:
                f = free[link]
                if f > ready:
                    ready = f  # the head enters the link
                last_end = free[link] = ready + dur
                lbytes[link] += nbytes
                lbusy[link] += dur
                ready += lat
        else:
            for link, d2d, lat in hops:
                f = free[link]
                start = ready if ready >= f else f
                dur = durs[d2d]
                end = free[link] = start + dur
                lbytes[link] += nbytes
                lbusy[link] += dur
                if first_end < 0:
                    first_end = end
                if end > last_end:
                    last_end = end
                ready = start + lat
        tail = last_end + lat
        # a port narrower than the links: its tail still has every hop to go (without a port, inj_end is -1
        # and this never exceeds the tail, which has crossed every hop after a link of >= 1 cycle)
        if inj_end + total > tail:
            tail = inj_end + total
        if eject:  # the ejection port (as _reserve) is a last link that the head reaches at `ready`
            free = self._pfree[1]
            f = free[di]
            dur = durs[3]
            end = free[di] = (ready if ready >= f else f) + dur
            busy = self._pbusy[1]
            if not busy[di]:
                self._porder[1].append(di)
            busy[di] += dur
            self._pbytes[1][di] += nbytes
            if end > tail:
                tail = end
        return (first_end if first_end >= 0 else ready), tail

    def _multicast(self, src: RC, dsts: tuple[RC, ...], nbytes: int, head: int, inj_end: int,
                   durs: tuple[int, int, int, int], dur_out: int) -> Delivery:
        """As `unicast`, over the tree: each link once, parent first; one ejection per destination."""
        nodes, leaves = self._tree(src, dsts)
        free, lbytes, lbusy = self._lfree, self._lbytes, self._lbusy
        n = len(nodes)
        ready = [0] * n  # when the head may enter a child of node j
        tail = [0] * n  # the latest link end on the route up to and including node j
        source_free = inj_end
        for j, (link, d2d, lat, parent) in enumerate(nodes):
            r = head if parent < 0 else ready[parent]
            f = free[link]
            start = r if r >= f else f
            dur = durs[d2d]
            end = free[link] = start + dur
            lbytes[link] += nbytes
            lbusy[link] += dur
            ready[j] = start + lat
            if parent < 0:
                tail[j] = end
                if inj_end < 0 and end > source_free:
                    source_free = end  # no injection port: the tail has left the source with its links
            else:
                tp = tail[parent]
                tail[j] = end if end > tp else tp
        arrivals = {}
        cols = self._cols
        for dst, j, route in leaves:
            if j < 0:  # the source itself: straight from the injection port to the ejection port
                at, t_end = head, max(head, inj_end)
            else:
                at, t_end = ready[j], tail[j] + nodes[j][2]
                if inj_end + route > t_end:  # the injection port's tail after every hop (as in unicast)
                    t_end = inj_end + route
            if dur_out >= 0:  # the ejection port: a last link that the head reaches at `at`
                end = self._reserve(1, dst[0] * cols + dst[1], at, dur_out, nbytes) + dur_out
                if end > t_end:
                    t_end = end
            arrivals[dst] = t_end
        return Delivery(source_free if source_free >= 0 else head, arrivals)

    # -- barriers -----------------------------------------------------------------------------
    def combining_depth(self, routers: Sequence[RC]) -> int:
        """Depth of a combining tree over `routers`: the largest XY path latency from the centre router
        of their bounding box to its corners (hop latency per on-die link, die-to-die latency per link
        that crosses a die edge). A barrier's arrivals climb it and its release comes back down."""
        r0 = min(r for r, _ in routers)
        r1 = max(r for r, _ in routers)
        c0 = min(c for _, c in routers)
        c1 = max(c for _, c in routers)
        box = (r0, c0, r1, c1)
        depth = self._depths.get(box)
        if depth is None:
            root = ((r0 + r1) // 2, (c0 + c1) // 2)
            depth = self._depths[box] = max(self.path_latency(root, corner)
                                            for corner in ((r0, c0), (r0, c1), (r1, c0), (r1, c1)))
        return depth

    def barrier_cycles(self, routers: Sequence[RC]) -> int:
        """Cycles from a barrier's last arrival to its release over cores at `routers`: the combining
        tree's round trip (up to the root and back down) plus the machine's constant `barrier_latency`."""
        return 2 * self.combining_depth(routers) + self.machine.barrier_latency

    # -- state --------------------------------------------------------------------------------
    def link_free(self, link: Link) -> int:
        """The cycle at which `link` is next free (0 when never used)."""
        i = self._ids.get(link)
        return 0 if i is None else self._lfree[i]

    def link_stats(self) -> dict[Link, LinkStats]:
        """Bytes and busy cycles of every link used so far (a snapshot: later sends do not change it)."""
        return {link: LinkStats(b, c) for link, b, c in zip(self._links, self._lbytes, self._lbusy, strict=True)
                if c}

    def link_bytes(self) -> int:
        """Bytes carried so far over all links (noc bytes)."""
        return sum(self._lbytes)

    def port_stats(self) -> dict[RouterPort, LinkStats]:
        """Bytes and busy cycles of every router port used so far, keyed ((row, col), "inject" or "eject").

        Ports are not links: their bytes are not part of `link_stats` (nor of noc_bytes)."""
        out: dict[RouterPort, LinkStats] = {}
        cols = self._cols
        for kind, name in enumerate(_PORTS):
            nbytes, busy = self._pbytes[kind], self._pbusy[kind]
            out.update((((i // cols, i % cols), name), LinkStats(nbytes[i], busy[i])) for i in self._porder[kind])
        return out
