"""Fuzzing dojoc's readers: random and mutated inputs to everything that reads a file or a flag we define.

Every reader must give a value or one typed DojocError, never another exception (a traceback to the user)
and never a hang. Targets, each fed from a seeded generator so a run repeats:
- objfile: a real compiled program's object file (a linear layer on mesh2x2), 1-8 bytes overwritten behind a
  resealed checksum (so the reader gets past its checksum), then read and, when it reads, disassembled;
- asm: that program's disassembly with random characters replaced, inserted or deleted, then assembled;
- spec: random `--input` SPECs (shapes, dtypes, ranges, garbage), parsed with a 1 MiB input limit;
- machine: random `--set field=value` overrides on mesh4x4;
- emu: random *valid* programs for mesh2x2, drawn from the instruction table (every field in its range, the
  cores' registers first set to small SRAM addresses so that loads, stores and puts land), run on the
  emulator with a cycle watchdog: each ends in its outputs or a Trap that names the core, the pc and the
  instruction.
A failure is kept in benchmarks/fuzz_failures/TARGET-SEED-N.bin (the input) and .txt (the traceback), for a
regression case. The exit status is 1 when any input failed.

Usage: python benchmarks/fuzz.py [--inputs N] [--only TARGET]... [--seed S]
Not collected by pytest (the tests hold each reader on a few hundred inputs per run).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import dojoc
import dojoc.targets
from dojoc.errors import DojocError
from isa.asm import assemble
from isa.disasm import disassemble, write_data_files
from isa.objfile import CHECKSUM_BYTES, HEADER, read_object, write_object
from isa.presets import load_machine
from isa.random_programs import any_program, local_program
from runtime_emu import Emulator

ROOT = Path(__file__).resolve().parents[1]
FAILURES = Path(__file__).resolve().parent / "fuzz_failures"
DATA = Path(".")  # where the disassembly's weight files lie (main makes a temporary folder)
FIELDS = ("mesh", "sram_bytes", "disabled", "dram_ports.0.first", "dram_ports.0.last", "dram_ports.0.capacity",
          "dram_ports.0.bytes_per_cycle", "link_bytes_per_cycle", "hop_latency", "die_shape", "semaphores",
          "simd_bytes", "inject_bytes_per_cycle", "barrier_latency", "dram_ports.3.first", "nope")
VALUES = ("[[0,0]]", "[[99,99]]", "[[-1,0]]", "[1,2]", "[0,0]", "[100000,100000]", "[2000,600]", "[1,1]", "0",
          "-1", "1e9", "true", '"x"', "[]", "[[1,2,3]]", "{}", "[[0,0],[0,0]]", "1e400", "nan", "[4,4]")
DTYPES = ("", ":float32", ":bf16", ":int64", ":i32", ":bool", ":f16", ":int", ":")


def _program() -> bytes:
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8).eval()
    prog = dojoc.compile(lin, (torch.randn(4, 16),), machine="mesh2x2", precision="bf16")
    return write_object(prog.image)


def draw_objfile(rng: random.Random, data: Any) -> bytes:
    raw = bytearray(data[:-CHECKSUM_BYTES])
    for _ in range(rng.randint(1, 8)):
        raw[rng.randrange(HEADER.size, len(raw))] = rng.randrange(256)
    body = bytes(raw)
    return body + hashlib.sha256(body).digest()


def check_objfile(sealed: bytes) -> None:
    disassemble(read_object(sealed))


def draw_asm(rng: random.Random, text: Any) -> bytes:
    chars = list(text)
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(chars))
        kind = rng.random()
        c = rng.choice("0123456789abcdefxz-+.,=[]()#:; \n\t\"'") if rng.random() < 0.8 \
            else chr(rng.randrange(1, 0x3000))
        if kind < 0.4:
            chars[i] = c
        elif kind < 0.7:
            chars.insert(i, c)
        else:
            del chars[i]
    return "".join(chars).encode()


def check_asm(text: bytes) -> None:
    assemble(text.decode(), base_dir=DATA)


def _num(rng: random.Random) -> str:
    return rng.choice([str(rng.randint(-10**20, 10**20)), repr(rng.uniform(-1e30, 1e30)), "1e400", "-0", "0.5",
                       str(rng.randint(-3, 3))])


def draw_spec(rng: random.Random, _: Any) -> bytes:
    if rng.random() < 0.15:
        text = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randint(0, 24)))
    else:
        dims = "x".join(str(rng.choice([0, 1, 2, 3, rng.randint(0, 10**7)])) for _ in range(rng.randint(1, 5)))
        shape = "scalar" if rng.random() < 0.05 else dims
        rng_part = "" if rng.random() < 0.4 else \
            f"{rng.choice('[(')}{_num(rng)},{_num(rng)}{rng.choice('])')}"
        text = f"{rng.choice(['', 'x=', '1=', '_a='])}{shape}{rng.choice(DTYPES)}{rng_part}"
    return text.encode()


def check_spec(text: bytes) -> None:
    limit, dojoc.targets.MAX_INPUT_BYTES = dojoc.targets.MAX_INPUT_BYTES, 1 << 20  # allocate little
    try:
        dojoc.targets.parse_inputs([text.decode()])
    finally:
        dojoc.targets.MAX_INPUT_BYTES = limit


def draw_machine(rng: random.Random, _: Any) -> bytes:
    sets = [f"{rng.choice(FIELDS)}={rng.choice(VALUES) if rng.random() < 0.7 else str(rng.randint(-10**12, 10**12))}"
            for _ in range(rng.randint(1, 3))]
    return "\n".join(sets).encode()


def check_machine(sets: bytes) -> None:
    load_machine("mesh4x4", sets.decode().split("\n"))


EMU_MACHINE = load_machine("mesh2x2")
EMU_CYCLES = 20_000  # the watchdog: a program still running then traps (a hang is a failure)


def draw_emu(rng: random.Random, _: Any) -> bytes:
    """A random valid program for mesh2x2 (`isa.random_programs.any_program`) as assembly text."""
    return disassemble(any_program(rng, EMU_MACHINE)).encode()


def check_emu(text: bytes) -> None:
    """Assemble and run: its outputs, or a typed error (a Trap is one) naming where it stopped."""
    Emulator(assemble(text.decode()), max_cycles=EMU_CYCLES).run()


def draw_emu_diff(rng: random.Random, _: Any) -> bytes:
    """A random local program for mesh2x2 (`isa.random_programs.local_program`: most run to their end)."""
    return disassemble(local_program(rng, EMU_MACHINE)).encode()


def check_emu_diff(text: bytes) -> None:
    """Run in full and, when it ends, timing-only: the same cycles, or a failure (the property of
    tests/emu/test_timing_differential.py)."""
    image = assemble(text.decode())
    full = Emulator(image, max_cycles=EMU_CYCLES).run().cycles  # (a Trap is a typed outcome)
    timed = Emulator(image, timing_only=True, max_cycles=EMU_CYCLES).run().cycles
    if timed != full:
        raise AssertionError(f"timing-only emulation took {timed:,} cycles, a full run {full:,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=20_000, help="inputs per target")
    ap.add_argument("--only", action="append", choices=list(COVERS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coverage", action="store_true", help="also measure the lines of each target's source "
                    "that its inputs run (coverage.py; several times slower)")
    args = ap.parse_args()
    global DATA
    DATA = Path(tempfile.mkdtemp(prefix="dojoc-fuzz-"))
    try:
        run(args)
    finally:
        shutil.rmtree(DATA, ignore_errors=True)


Target = tuple[Callable[[random.Random, Any], bytes], Callable[[bytes], None], Any]


def targets() -> dict[str, Target]:
    """Each target's (draw, check, what the draws mutate); the disassembly's weight files go into DATA."""
    data = _program()
    image = read_object(data)
    text = disassemble(image)
    write_data_files(image, DATA)  # the weights the disassembly names (file=)
    assemble(text, base_dir=DATA)  # the unmutated program assembles
    return {"objfile": (draw_objfile, check_objfile, data), "asm": (draw_asm, check_asm, text),
            "spec": (draw_spec, check_spec, None), "machine": (draw_machine, check_machine, None),
            "emu": (draw_emu, check_emu, None), "emu-diff": (draw_emu_diff, check_emu_diff, None)}


# the source each target exercises, for --coverage
COVERS = {"objfile": ("isa/objfile.py", "isa/disasm.py"), "asm": ("isa/asm.py", "isa/encoding.py"),
          "spec": ("dojoc/targets.py",), "machine": ("isa/presets.py", "isa/machine.py"),
          "emu": ("runtime_emu/**/*.py",), "emu-diff": ("runtime_emu/**/*.py",)}


def _body_lines(path: Path) -> set[int]:
    """Lines of the statements inside function bodies: those that only a call runs (module and class level
    statements run at import, before the fuzzer measures anything)."""
    out: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for stmt in node.body:
                out.update(n.lineno for n in ast.walk(stmt) if isinstance(n, ast.stmt))
    return out


def coverage_of(cov: Any, name: str) -> tuple[int, int]:
    """(ran, of): the statements in function bodies of the target's source, and those its inputs ran."""
    ran = total = 0
    for pattern in COVERS[name]:
        for path in sorted(ROOT.glob(pattern)):
            _, statements, _, missing, _ = cov.analysis2(str(path))
            body = _body_lines(path) & set(statements)
            total += len(body)
            ran += len(body - set(missing))
    return ran, total


def run(args: argparse.Namespace) -> None:
    extra = (" coverage |", "---|") if args.coverage else ("", "")
    print(f"| target | inputs | valid | typed errors | other exceptions | inputs/s |{extra[0]}")
    print(f"|---|---:|---:|---:|---:|---:|{extra[1]}")
    failed = 0
    for name, (draw, check, seed_input) in targets().items():
        if args.only and name not in args.only:
            continue
        rng = random.Random(f"{args.seed}-{name}")
        valid = typed = other = 0
        cov = None
        if args.coverage:
            import coverage  # (only here: measuring slows the run several times)

            cov = coverage.Coverage(data_file=None, include=[str(ROOT / p) for p in COVERS[name]])
            cov.start()
        t0 = time.perf_counter()
        for i in range(args.inputs):
            case = draw(rng, seed_input)
            try:
                check(case)
                valid += 1
            except DojocError:
                typed += 1
            except Exception:  # noqa: BLE001 - what the fuzzer looks for
                other += 1
                FAILURES.mkdir(exist_ok=True)
                (FAILURES / f"{name}-{args.seed}-{i}.bin").write_bytes(case)
                (FAILURES / f"{name}-{args.seed}-{i}.txt").write_text(traceback.format_exc())
        rate = args.inputs / (time.perf_counter() - t0)
        failed += other
        covered = ""
        if cov is not None:
            cov.stop()
            ran, total = coverage_of(cov, name)
            covered = f" {ran:,}/{total:,} lines ({ran / max(total, 1):.0%}) |"
        print(f"| {name} | {args.inputs:,} | {valid:,} | {typed:,} | {other:,} | {rate:,.0f} |{covered}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
