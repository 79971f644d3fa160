"""Measure each figure of the machine description on the emulator, and write docs/validation.md.

Every figure is measured the same way: generate two (or more) small assembly programs that differ only
in the amount of one kind of work, run them on the emulator, and divide the difference in work by the
difference in cycles. Nothing is computed from the cost formulas; the "described" column is read from
the `Machine` fields (`isa/machine.py`) of the preset the measurement runs on.

Usage: python benchmarks/microbench.py [-o docs/validation.md]. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from math import ceil
from pathlib import Path

from isa.asm import assemble
from isa.machine import Machine
from isa.presets import load_machine
from runtime_emu import Emulator

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    figure: str
    described: float
    measured: float
    unit: str
    machine: str
    how: str
    field: str

    @property
    def ok(self) -> bool:
        return abs(self.measured - self.described) <= 0.02 * abs(self.described) + 1e-9


def cycles(text: str, machine: Machine) -> int:
    """Cycles of one program (timing-only: the programs' control flow does not depend on data)."""
    emu = Emulator(assemble(text, machine=machine), timing_only=True)
    emu.set_inputs({})
    return int(emu.run().cycles)


def prog(*sections: tuple[str, list[str]]) -> str:
    out = []
    for cores, body in sections:
        out.append(f".section s{len(out)} cores={cores}")
        out += [f"        {line}" for line in body]
    return "\n".join(out) + "\n"


# -- compute ----------------------------------------------------------------------------------------

def mma_prog(m: int, n: int, k: int, dt: str, width: int) -> str:
    a, b, c = 0, m * k * width, m * k * width + k * n * width
    op = f"mma r3, r1, r2, m={m}, n={n}, k={k}, sd={n * 4}, sa={k * width}, sb={n * width}, dt={dt}"
    return prog(("0", [f"li r1, {a}", f"li r2, {b}", f"li r3, {c}", op, "halt"]))


def macs_per_cycle(machine: Machine, dt: str, width: int, mn: int) -> float:
    k1, k2 = 256, 512
    c1 = cycles(mma_prog(mn, mn, k1, dt, width), machine)
    c2 = cycles(mma_prog(mn, mn, k2, dt, width), machine)
    return mn * mn * (k2 - k1) / (c2 - c1)


def vector_rate(machine: Machine, op: str, rows: tuple[int, int], nbytes_per_row: int) -> float:
    """Bytes (per `nbytes_per_row` x rows) per cycle of one vector op, from two tile heights."""
    def text(r: int) -> str:
        body = {
            "vadd": f"vadd r3, r1, r2, rows={r}, cols=256, sd=1024, sa=1024, sb=1024, dt=f32",
            "vrsum": f"vrsum r3, r1, rows={r}, cols=256, sd=4, sa=1024, dt=f32, axis=row",
            "vfill": f"vfill r3, 0.0, rows={r}, cols=256, sd=1024, dt=f32",
        }[op]
        return prog(("0", ["li r1, 0x0", "li r2, 0x40000", "li r3, 0x80000", body, "halt"]))
    c1, c2 = cycles(text(rows[0]), machine), cycles(text(rows[1]), machine)
    return (rows[1] - rows[0]) * nbytes_per_row / (c2 - c1)


# -- network ----------------------------------------------------------------------------------------

def put_prog(senders: dict[int, int], nbytes: int, cast: str = "one",
             receivers: list[int] | None = None) -> str:
    """Each sender puts `nbytes` to its destination (with `cast`); receivers wait for what they get."""
    secs: list[tuple[str, list[str]]] = []
    got: dict[int, int] = {}
    for src, dst in senders.items():
        secs.append((str(src), [f"li r1, {dst}", "li r2, 0x0",
                                f"put r1, r2, r2, rows=1, bytes={nbytes}, cast={cast}, seml=0, semr=1",
                                "wait 0, 1", "halt"]))
        for r in (receivers if receivers is not None else [dst]):
            got[r] = got.get(r, 0) + 1
    for r, n in sorted(got.items()):
        secs.append((str(r), [f"wait 1, {n}", "halt"]))
    return prog(*secs)


def link_bandwidth(machine: Machine, src: int, dst: int) -> float:
    n1, n2 = 64 * 1024, 128 * 1024
    c1 = cycles(put_prog({src: dst}, n1), machine)
    c2 = cycles(put_prog({src: dst}, n2), machine)
    return (n2 - n1) / (c2 - c1)


def hop_latency(machine: Machine) -> float:
    core = machine.core_at
    far = machine.mesh[1] - 1
    c1 = cycles(put_prog({0: core[(0, 1)]}, 256), machine)
    cf = cycles(put_prog({0: core[(0, far)]}, 256), machine)
    return (cf - c1) / (far - 1)


def multicast_ratio(machine: Machine, nbytes: int) -> tuple[float, float]:
    """Row multicast to row 0, and 7 unicasts one after another, each over one unicast to the farthest."""
    core = machine.core_at
    cols = machine.mesh[1]
    row = [core[(0, c)] for c in range(1, cols)]
    uni = cycles(put_prog({0: row[-1]}, nbytes), machine)
    multi = cycles(put_prog({0: 0}, nbytes, cast="row", receivers=row), machine)
    return multi / uni, cycles(fan_prog(0, row, nbytes), machine) / uni


def shared_link_step(machine: Machine, nbytes: int, flows: int) -> float:
    """Extra cycles per extra flow when 1..flows cores of row 0 all send to the last core of the row."""
    core = machine.core_at
    dst = core[(0, machine.mesh[1] - 1)]
    t1 = cycles(put_prog({core[(0, 0)]: dst}, nbytes), machine)
    tn = cycles(put_prog({core[(0, c)]: dst for c in range(flows)}, nbytes), machine)
    return (tn - t1) / (flows - 1)


def fan_prog(src: int, dsts: list[int], nbytes: int) -> str:
    """`src` puts `nbytes` to each of `dsts` back to back, then waits until every source is free."""
    body = ["li r2, 0x0"]
    for d in dsts:
        body += [f"li r1, {d}", f"put r1, r2, r2, rows=1, bytes={nbytes}, seml=0, semr=1"]
    recv = [(str(d), ["wait 1, 1", "halt"]) for d in dsts]
    return prog((str(src), [*body, f"wait 0, {len(dsts)}", "halt"]), *recv)


def neighbours(machine: Machine, rc: tuple[int, int], n: int) -> list[int]:
    """Core ids of the first `n` of the neighbours of `rc` (north, west, east, south)."""
    r, c = rc
    return [machine.core_at[(r + dr, c + dc)] for dr, dc in ((-1, 0), (0, -1), (0, 1), (1, 0))[:n]]


def port_bandwidth(machine: Machine, flows: int, inward: bool) -> float:
    """Bytes per cycle through core (1,1)'s ejection port (`flows` neighbours put into it) or its
    injection port (it puts to `flows` neighbours): total bytes of 128 KiB minus 64 KiB per flow."""
    core = machine.core_at[(1, 1)]
    others = neighbours(machine, (1, 1), flows)

    def text(nbytes: int) -> str:
        return put_prog(dict.fromkeys(others, core), nbytes) if inward else fan_prog(core, others, nbytes)

    n1, n2 = 64 * 1024, 128 * 1024
    return flows * (n2 - n1) / (cycles(text(n2), machine) - cycles(text(n1), machine))


# -- DMA --------------------------------------------------------------------------------------------

def dma_prog(cores: str, nbytes: int, post_instead: bool = False) -> str:
    elems = nbytes // 4
    issue = "post 0, 1" if post_instead else "dmald r1, r2, esize=4, ndim=1, sem=0, dt=f32"
    return prog((cores, ["li r1, 0x0", "li r2, 0x0", f"dmadim 0, {elems}, sstride=4, dstride=4", issue,
                         "wait 0, 1", "halt"]))


def dma_rounds(cores: str, nbytes: int, rounds: int) -> str:
    """Each core issues `rounds` DMAs of `nbytes` back to back (into distinct SRAM), then waits for all."""
    body = ["li r1, 0x0", "li r2, 0x0", f"dmadim 0, {nbytes // 4}, sstride=4, dstride=4"]
    for _ in range(rounds):
        body += ["dmald r1, r2, esize=4, ndim=1, sem=0, dt=f32", f"addi r1, r1, {nbytes}"]
    return prog((cores, [*body, f"wait 0, {rounds}", "halt"]))


def dma_latency(machine: Machine) -> float:
    return cycles(dma_prog("all", 4), machine) - cycles(dma_prog("all", 4, post_instead=True), machine)


def dma_bandwidth(machine: Machine, core: int) -> float:
    n1, n2 = 64 * 1024, 128 * 1024
    c = str(core)
    return (n2 - n1) / (cycles(dma_prog(c, n2), machine) - cycles(dma_prog(c, n1), machine))


def barrier_cost(machine: Machine, box: tuple[int, int, int, int] | None = None) -> float:
    """Barrier then halt minus halt alone, over the cores of `box` (r0, c0, r1, c1; None: all cores)."""
    if box is None:
        cores = "all"
        n = machine.num_cores
    else:
        r0, c0, r1, c1 = box
        ids = [machine.core_at[(r, c)] for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)
               if (r, c) in machine.core_at]
        cores, n = ",".join(map(str, ids)), len(ids)
    with_b = cycles(prog((cores, [f"barrier 0, {n}", "halt"])), machine)
    without = cycles(prog((cores, ["halt"])), machine)
    return with_b - without


def tree_root(box: tuple[int, int, int, int]) -> tuple[int, int]:
    """The described root of a barrier's combining tree over a box (r0, c0, r1, c1): its centre router,
    rounded down."""
    r0, c0, r1, c1 = box
    return (r0 + r1) // 2, (c0 + c1) // 2


def tree_depth(machine: Machine, box: tuple[int, int, int, int]) -> int:
    """The described depth of a barrier's combining tree over a box: from its root to the farthest
    corner, hop_latency per link, d2d_latency per die edge crossed."""
    r0, c0, r1, c1 = box
    root = tree_root(box)
    dr, dc = machine.die

    def latency(a: int, b: int, size: int) -> int:
        edges = abs(a // size - b // size)  # die edges crossed along one axis
        return edges * machine.d2d_latency + (abs(a - b) - edges) * machine.hop_latency

    return max(latency(root[0], r, dr) + latency(root[1], c, dc) for r in (r0, r1) for c in (c0, c1))


def barrier_described(machine: Machine, box: tuple[int, int, int, int]) -> int:
    return machine.barrier_latency + 2 * tree_depth(machine, box) + machine.sem_cycles


# -- the table --------------------------------------------------------------------------------------

def measure() -> list[Row]:
    rows: list[Row] = []
    m1 = load_machine("mesh1x1")
    big_simd = load_machine("mesh1x1", ["simd_bytes=4096"])
    m2 = load_machine("mesh2x2")
    m4 = load_machine("mesh4x4")
    m8 = load_machine("mesh8x8")
    d2d = load_machine("mesh2x2", ["mesh=[2, 4]", "die_shape=[2, 2]"])
    port = m8.dram_ports[0]

    rows.append(Row("matrix unit, BF16", m1.macs_bf16, macs_per_cycle(m1, "bf16", 2, 128), "MAC/cycle",
                    "mesh1x1", "one 128 x 128 mma, k = 512 minus k = 256", "macs_bf16"))
    rows.append(Row("matrix unit, CFP8", m1.macs_cfp8, macs_per_cycle(m1, "cf8e4", 1, 128), "MAC/cycle",
                    "mesh1x1", "one 128 x 128 mma, k = 512 minus k = 256", "macs_cfp8"))
    rows.append(Row("matrix unit, FP32", m1.macs_fp32, macs_per_cycle(m1, "f32", 4, 64), "MAC/cycle",
                    "mesh1x1", "one 64 x 64 mma, k = 512 minus k = 256", "macs_fp32"))
    rows.append(Row("SIMD width", m1.simd_bytes, vector_rate(m1, "vadd", (64, 128), 1024), "B/cycle",
                    "mesh1x1", "f32 vadd of 128 x 256 minus 64 x 256 (bytes of one operand)", "simd_bytes"))
    rows.append(Row("SRAM load bandwidth", big_simd.sram_load_bytes_per_cycle,
                    vector_rate(big_simd, "vrsum", (64, 128), 1024), "B/cycle", "mesh1x1, simd_bytes=4096",
                    "f32 row sums of 128 x 256 minus 64 x 256 (bytes read); a 64 B SIMD never reaches the "
                    "SRAM port, so the SIMD is widened to make the port the bound",
                    "sram_load_bytes_per_cycle"))
    rows.append(Row("SRAM store bandwidth", big_simd.sram_store_bytes_per_cycle,
                    vector_rate(big_simd, "vfill", (64, 128), 1024), "B/cycle", "mesh1x1, simd_bytes=4096",
                    "f32 vfill of 128 x 256 minus 64 x 256 (bytes written), SIMD widened as above",
                    "sram_store_bytes_per_cycle"))
    rows.append(Row("NoC link bandwidth", m2.link_bytes_per_cycle, link_bandwidth(m2, 0, 1), "B/cycle",
                    "mesh2x2", "put of 128 KiB minus 64 KiB to a neighbour", "link_bytes_per_cycle"))
    rows.append(Row("hop latency", m8.hop_latency, hop_latency(m8), "cycles", "mesh8x8",
                    "256 B put 7 hops away minus 1 hop away, / 6", "hop_latency"))
    rows.append(Row("die-to-die link bandwidth", d2d.d2d_link_bytes_per_cycle, link_bandwidth(d2d, 1, 2),
                    "B/cycle", "2 x 4 mesh of two 2 x 2 dies",
                    "put of 128 KiB minus 64 KiB across the die edge", "d2d_link_bytes_per_cycle"))
    one_hop = cycles(put_prog({0: 1}, 1), d2d)
    cross = cycles(put_prog({1: 2}, 1), d2d)
    rows.append(Row("die-to-die latency", d2d.d2d_latency, cross - one_hop + hop_latency(m8), "cycles",
                    "2 x 4 mesh of two 2 x 2 dies",
                    "1 B put across the die edge minus 1 B put over an on-die link, plus the measured hop "
                    "latency", "d2d_latency"))
    rows.append(Row("DMA latency (DRAM port)", m1.dram_ports[0].latency, dma_latency(m1), "cycles", "mesh1x1",
                    "4 B dmald then wait, minus a post in its place (includes the 1-cycle transfer and the "
                    "issue-cost difference)", "dram_ports.0.latency"))
    for flows in (2, 4):
        rows.append(Row(f"ejection port: {flows} neighbours put into one core", m4.eject_bytes_per_cycle,
                        port_bandwidth(m4, flows, inward=True), "B/cycle", "mesh4x4",
                        f"{flows} neighbours of (1,1) each put 128 KiB minus 64 KiB into it, each over its own "
                        "link, so only the port is shared (total bytes / cycles)", "eject_bytes_per_cycle"))
    for flows in (2, 4):
        rows.append(Row(f"injection port: one core puts to {flows} neighbours", m4.inject_bytes_per_cycle,
                        port_bandwidth(m4, flows, inward=False), "B/cycle", "mesh4x4",
                        f"(1,1) puts 128 KiB minus 64 KiB to each of {flows} neighbours, each over its own "
                        "link, so only the port is shared (total bytes / cycles)", "inject_bytes_per_cycle"))
    rows.append(Row("DMA bandwidth, one core",
                    min(m2.link_bytes_per_cycle, m2.eject_bytes_per_cycle, m2.dram_ports[0].bytes_per_cycle),
                    dma_bandwidth(m2, m2.core_at[(0, 1)]), "B/cycle", "mesh2x2",
                    "core (0,1): dmald of 128 KiB minus 64 KiB, through the link from its entry router and "
                    "its ejection port",
                    "min(link_bytes_per_cycle, eject_bytes_per_cycle, dram_ports.0.bytes_per_cycle)"))
    n, r1, r2 = 4000, 2, 6
    total = m8.num_cores * (r2 - r1) * n
    rows.append(Row("DRAM port bandwidth, all cores", port.bytes_per_cycle,
                    total / (cycles(dma_rounds("all", n, r2), m8) - cycles(dma_rounds("all", n, r1), m8)),
                    "B/cycle", "mesh8x8",
                    f"all {m8.num_cores} cores each issue {r2} DMAs of {n} B minus {r1} DMAs (total bytes / "
                    "cycles); the port is then the bottleneck", "dram_ports.0.bytes_per_cycle"))
    n = 32000
    rows.append(Row("DMA into a core at its port's entry router, 8 in flight", m1.eject_bytes_per_cycle,
                    4 * n / (cycles(dma_rounds("all", n, 8), m1) - cycles(dma_rounds("all", n, 4), m1)),
                    "B/cycle", "mesh1x1",
                    f"8 DMAs of {n} B minus 4; the data crosses no link, but the core's ejection port serves "
                    "the concurrent DMAs one after another (the DRAM side uses no router port)",
                    "eject_bytes_per_cycle"))
    mc, seq = multicast_ratio(m8, 16 * 1024)
    rows.append(Row("row multicast to 7 cores / unicast to the farthest", 1.0, mc, "ratio", "mesh8x8",
                    f"16 KiB put cast=row vs one put 7 hops away (7 separate puts: {seq:.2f}x); the rule: "
                    "a multicast's bytes cross each link of its tree once", ""))
    n = 8 * 1024
    for flows in (2, 4, 7):
        rows.append(Row(f"{flows} flows sharing one link: cycles per extra flow",
                        ceil(n / m8.link_bytes_per_cycle),
                        shared_link_step(m8, n, flows), "cycles", "mesh8x8",
                        f"cores (0,0)..(0,{flows - 1}) each put 8 KiB to (0,7), minus one flow; "
                        "the described value is 8 KiB / link width", "link_bytes_per_cycle"))
    span_field = "barrier_latency + 2 x tree depth (hop_latency, d2d_latency) + sem_cycles"
    all4 = (0, 0, m4.mesh[0] - 1, m4.mesh[1] - 1)
    rows.append(Row("barrier, 16 cores arriving together", barrier_described(m4, all4), barrier_cost(m4),
                    "cycles", "mesh4x4", "barrier then halt, minus halt alone; the tree's root is "
                    f"{rc(tree_root(all4))}, tree depth {tree_depth(m4, all4)}", span_field))
    for k in (2, 4, 8):
        box = (0, 0, k - 1, k - 1)
        rows.append(Row(f"barrier over a {k} x {k} block", barrier_described(m8, box), barrier_cost(m8, box),
                        "cycles", "mesh8x8", f"cores (0,0)..({k - 1},{k - 1}) arrive together: barrier then "
                        f"halt, minus halt alone (tree depth {tree_depth(m8, box)})", span_field))
    box = (0, 0, d2d.mesh[0] - 1, d2d.mesh[1] - 1)
    rows.append(Row("barrier across a die edge", barrier_described(d2d, box), barrier_cost(d2d, box), "cycles",
                    "2 x 4 mesh of two 2 x 2 dies", f"all {d2d.num_cores} cores: the root {rc(tree_root(box))} "
                    f"reaches the far corner {rc(box[2:])} over the die edge (tree depth {tree_depth(d2d, box)})",
                    span_field))
    d1 = load_machine("d1")
    box = (0, 0, d1.mesh[0] - 1, d1.mesh[1] - 1)
    rows.append(Row(f"barrier, all {d1.num_cores} cores of d1", barrier_described(d1, box), barrier_cost(d1),
                    "cycles", "d1", f"the full {d1.mesh[0]} x {d1.mesh[1]} span: root {rc(tree_root(box))}, "
                    f"tree depth {tree_depth(d1, box)}", span_field))
    return rows


def rc(pos: tuple[int, ...]) -> str:
    """A mesh position as the tables write it, "(r,c)"."""
    return f"({pos[0]},{pos[1]})"


def fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.3g}" if x < 10 else f"{x:,.1f}"


def render(rows: list[Row], seconds: float) -> str:
    lines = [
        "# Validation: the machine description measured on the emulator",
        "",
        "Generated by `benchmarks/microbench.py` (`make bench`); do not edit by hand. Each figure is",
        "measured by running small generated assembly programs on the emulator and dividing the difference",
        "in work by the difference in cycles; the described value is read from the fields of the `Machine`",
        "(`isa/machine.py`) that the measurement ran on. A figure matches when it is within 2%.",
        "",
        "| figure | described | measured | unit | matches | machine | field | how |",
        "|---|---:|---:|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.figure} | {fmt(r.described)} | {fmt(r.measured)} | {r.unit} | "
                     f"{'yes' if r.ok else '**no**'} | {r.machine} | {f'`{r.field}`' if r.field else '-'} | {r.how} |")
    lines += ["", f"{sum(r.ok for r in rows)} of {len(rows)} figures match. Measured in {seconds:.1f} s.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "validation.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = measure()
    seconds = time.perf_counter() - t0
    width = max(len(r.figure) for r in rows)
    print(f"{'figure':<{width}} {'described':>10} {'measured':>10}  unit")
    for r in rows:
        flag = "" if r.ok else "   <-- differs"
        print(f"{r.figure:<{width}} {fmt(r.described):>10} {fmt(r.measured):>10}  {r.unit}{flag}")
    args.output.write_text(render(rows, seconds))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
