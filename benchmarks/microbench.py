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
    seq = ["li r2, 0x0"]
    for d in row:
        seq += [f"li r1, {d}", f"put r1, r2, r2, rows=1, bytes={nbytes}, seml=0, semr=1"]
    text = prog(("0", [*seq, f"wait 0, {len(row)}", "halt"]), *[(str(d), ["wait 1, 1", "halt"]) for d in row])
    return multi / uni, cycles(text, machine) / uni


def shared_link_step(machine: Machine, nbytes: int, flows: int) -> float:
    """Extra cycles per extra flow when 1..flows cores of row 0 all send to the last core of the row."""
    core = machine.core_at
    dst = core[(0, machine.mesh[1] - 1)]
    t1 = cycles(put_prog({core[(0, 0)]: dst}, nbytes), machine)
    tn = cycles(put_prog({core[(0, c)]: dst for c in range(flows)}, nbytes), machine)
    return (tn - t1) / (flows - 1)


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


def barrier_cost(machine: Machine) -> float:
    n = machine.num_cores
    with_b = cycles(prog(("all", [f"barrier 0, {n}", "halt"])), machine)
    without = cycles(prog(("all", ["halt"])), machine)
    return with_b - without


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
    rows.append(Row("DMA bandwidth, one core", min(m2.link_bytes_per_cycle, m2.dram_ports[0].bytes_per_cycle),
                    dma_bandwidth(m2, m2.core_at[(0, 1)]), "B/cycle", "mesh2x2",
                    "core (0,1): dmald of 128 KiB minus 64 KiB, through the link from its entry router",
                    "min(link_bytes_per_cycle, dram_ports.0.bytes_per_cycle)"))
    n, r1, r2 = 4000, 2, 6
    total = m8.num_cores * (r2 - r1) * n
    rows.append(Row("DRAM port bandwidth, all cores", port.bytes_per_cycle,
                    total / (cycles(dma_rounds("all", n, r2), m8) - cycles(dma_rounds("all", n, r1), m8)),
                    "B/cycle", "mesh8x8",
                    f"all {m8.num_cores} cores each issue {r2} DMAs of {n} B minus {r1} DMAs (total bytes / "
                    "cycles); the port is then the bottleneck", "dram_ports.0.bytes_per_cycle"))
    n = 32000
    rows.append(Row("DMA into a core at its port's entry router, 8 in flight", m1.link_bytes_per_cycle,
                    4 * n / (cycles(dma_rounds("all", n, 8), m1) - cycles(dma_rounds("all", n, 4), m1)),
                    "B/cycle", "mesh1x1",
                    f"8 DMAs of {n} B minus 4; the data needs no link, and runtime_emu/noc.py reserves nothing "
                    "for a transfer to the same router, so concurrent DMAs are not limited by the router's "
                    "64 B/cycle local port (one DMA alone is)", "link_bytes_per_cycle"))
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
    rows.append(Row("barrier, 16 cores arriving together", m4.barrier_latency + m4.sem_cycles,
                    barrier_cost(m4), "cycles", "mesh4x4", "barrier then halt, minus halt alone",
                    "barrier_latency + sem_cycles"))
    return rows


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
