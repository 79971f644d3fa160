"""The planning rules the matrix kernels share (matmul.py, conv.py, depthwise.py, band.py): a given
decision's tile and split checked, the candidate block sizes of a dimension, and the cost of a core's
double-buffered steps beside the DRAM traffic of its region."""

from __future__ import annotations

import json
from math import prod

from dojoc.codegen.context import Ctx
from dojoc.codegen.paths import port_path
from dojoc.errors import MappingError
from dojoc.mapping.model import Bound, OpMapping


def overlapped_bound(ctx: Ctx, compute: float, traffic: float, steps: int, cores: list[int],
                     items: int = 1) -> tuple[int, Bound]:
    """The estimated time of a core's run of `items` accumulator tiles in `steps` double-buffered steps
    while the region moves `traffic` bytes between DRAM and its cores (at the bottleneck of the way: the
    port, or the busiest entry router's first link, codegen/paths.py), rounded, and what bounds it: the
    DRAM ports when a step's load outlasts its compute. Each item ends with the store of its result; with
    two result buffers, item j + 2 waits for item j's store, so a run takes at least half a DMA latency per
    item, and the last store's latency is always exposed."""
    way = port_path(ctx.machine, tuple(cores))
    lat, dram = way.latency, traffic * way.cycles_per_byte
    s = max(steps, 1)
    bound = Bound.DRAM if lat + dram / s > compute / s else Bound.COMPUTE
    stores = (items - 1) * lat / 2
    return round(max(overlapped(compute, dram, steps, lat), stores) + lat), bound


def check_tile(om: OpMapping, tiles: dict[str, int]) -> tuple[int, ...]:
    """The tile fields of a matrix op's given decision, in the order of `tiles` (name -> largest legal
    value); MappingError for one that is missing or out of range."""
    out = []
    for name, limit in tiles.items():
        v = om.tile_of(name)
        if v is None or not 1 <= v <= limit:
            fields = ", ".join(f"\"{k}\": ..." for k in tiles)
            raise MappingError(f"op {om.key}: tile {name}={v} must be between 1 and {limit}; give tile {{{fields}}}")
        out.append(v)
    return tuple(out)


def check_split(om: OpMapping, axes: tuple[tuple[str, int], ...], weight: bool) -> None:
    """MappingError unless a matrix op's given decision has its split equal to the tile counts `axes`
    that its tiles imply, at most one core per item, and residency only for a weight operand."""
    if dict(om.split) != dict(axes):
        raise MappingError(f"op {om.key}: split {json.dumps(dict(om.split))} does not divide the op as its tile "
                           f"does: tile {json.dumps(dict(om.tile))} cuts it into {json.dumps(dict(axes))}; write that "
                           "split (or change the tile)")
    items = prod(n for _, n in axes)
    if len(om.cores) > items:
        raise MappingError(f"op {om.key}: a region of {len(om.cores)} cores for {items} tiles; give at most "
                           f"{items} cores or smaller tiles")
    if om.resident and not weight:
        raise MappingError(f"op {om.key}: resident is true but its operand is not a weight (a parameter); "
                           "set resident to false")


def overlapped(compute: float, dram: float, steps: int, lat: int) -> float:
    """Estimated time of a core's `steps` double-buffered steps, `compute` cycles in all, while the
    region's DMAs need `dram` cycles of the ports. Step i+1's loads are issued as step i starts, so a
    step takes the longer of its compute and its load (DMA latency `lat` plus its share of the ports'
    time); the first load and the last compute do not overlap anything."""
    s = max(steps, 1)
    load, step = lat + dram / s, compute / s
    return load + (s - 1) * max(step, load) + step


DIVISORS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def splits(n: int, align: int = 8, divisors: tuple[int, ...] = DIVISORS) -> list[int]:
    """Candidate block sizes for a dimension of n: n/d for a range of d, rounded up to `align`."""
    out = set()
    for d in divisors:
        b = -(-n // d)
        if b > align:
            b = -(-b // align) * align
        out.add(min(b, n))
    return sorted(out, reverse=True)
