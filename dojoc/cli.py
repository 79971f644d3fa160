"""The `dojoc` command line: asm, disasm, run, machines (and compile, from the compiler).

Bad input prints one `error: ...` line on stderr and exits non-zero, with no traceback and no output
file left behind (outputs are written to a temporary file and renamed into place).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from isa.errors import DojocError
from isa.machine import assumptions
from isa.presets import PRESETS, dump_toml, load_machine


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class _Group(click.Group):
    """Turns every DojocError (and the usual OS errors) into one `error:` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DojocError as e:
            _fail(str(e).strip().splitlines()[0] if "\n" not in str(e).strip() else str(e).strip())
        except (OSError, ValueError) as e:
            _fail(str(e))


@click.group(cls=_Group)
@click.version_option(package_name="dojoc")
def cli() -> None:
    """dojoc: compile PyTorch models for a Dojo-like mesh and run them on its emulator."""


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, renamed into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- machines -------------------------------------------------------------------------------------

@cli.command()
@click.option("--dump", "dump", metavar="NAME", help="print one machine (preset or .toml) as TOML")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="override a field")
def machines(dump: str | None, overrides: tuple[str, ...]) -> None:
    """List the machine presets and the parameters that are assumptions, or dump one as TOML."""
    if dump:
        click.echo(dump_toml(load_machine(dump, overrides)), nl=False)
        return
    click.echo(f"{'name':<9} {'cores':>6} {'mesh':>8} {'SRAM/core':>10} {'BF16 TFLOPS':>12} "
               f"{'FP32 TFLOPS':>12} {'DRAM':>10}  description")
    for name in PRESETS:
        m = load_machine(name, overrides)
        peak = m.num_cores * m.clock_hz / 1e12
        click.echo(f"{name:<9} {m.num_cores:>6} {m.mesh[0]:>3} x {m.mesh[1]:<3} "
                   f"{m.sram_bytes / 2**20:>6.2f} MiB {peak * 2 * m.macs_bf16:>12.1f} "
                   f"{peak * 2 * m.macs_fp32:>12.2f} {m.dram_bytes / 1e9:>7.0f} GB  {m.description}")
    click.echo("\nAssumptions (not public figures; named fields, change them with --set):")
    d1 = load_machine("d1").to_dict()
    for field, doc in assumptions():
        value: Any = d1
        for part in field.split("."):
            value = value[0][part] if isinstance(value, list) else value[part]
        click.echo(f"  {field:<26} d1 = {value!s:<12} {doc}")
    click.echo("  routing                    XY (dimension-ordered): not a public figure")


# -- asm / disasm ---------------------------------------------------------------------------------

@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="object file (default: SOURCE.dobj)")
@click.option("--machine", default=None, help="preset name or .toml (default: the file's .machine, else d1)")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="override a machine field")
def asm(source: Path, output: Path | None, machine: str | None, overrides: tuple[str, ...]) -> None:
    """Assemble SOURCE (.s) into an object file."""
    from isa.asm import assemble
    from isa.objfile import write_object

    if not source.is_file():
        raise DojocError(f"assembly file {source} not found")
    m = load_machine(machine or "d1", overrides) if (machine or overrides) else None
    image = assemble(source.read_text(), base_dir=source.parent, machine=m, filename=str(source))
    data = write_object(image)
    out = output or source.with_suffix(".dobj")
    write_atomic(out, lambda p: p.write_bytes(data))
    n = sum(len(s.code) for s in image.sections)
    click.echo(f"wrote {out}: {n} instructions in {len(image.sections)} section(s), "
               f"{len(image.tensors)} tensor(s), machine {image.machine.name}")


@cli.command()
@click.argument("objfile", type=click.Path(path_type=Path))
def disasm(objfile: Path) -> None:
    """Print the assembly of an object file (it assembles back to the same bytes)."""
    from isa.disasm import disassemble

    click.echo(disassemble(_load_image(objfile)), nl=False)


def _load_image(path: Path) -> Any:
    from isa.objfile import load_object

    if path.is_dir():
        path = path / "program.dobj"
    if not path.is_file():
        raise DojocError(f"object file {path} not found")
    return load_object(path)


# -- run ------------------------------------------------------------------------------------------

def _read_inputs(image: Any, specs: tuple[str, ...]) -> list[np.ndarray] | dict[str, np.ndarray]:
    """`x.npy` values in signature order, or `name=x.npy` by name (not both)."""
    named = [s for s in specs if "=" in s]
    if named and len(named) != len(specs):
        raise DojocError("--input: give every input as name=x.npy, or all of them in signature order")
    def load(path: str) -> np.ndarray:
        p = Path(path)
        if not p.is_file():
            raise DojocError(f"input file {p} not found")
        try:
            return np.load(p, allow_pickle=False)
        except ValueError as e:
            raise DojocError(f"input file {p} is not a .npy array ({e})") from None
    if named:
        return {k: load(v) for k, v in (s.split("=", 1) for s in specs)}
    return [load(s) for s in specs]


@cli.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="x.npy|name=x.npy", help="an input array")
@click.option("--output", type=click.Path(path_type=Path), help="write the outputs to an .npz file")
@click.option("--trace", type=click.Path(path_type=Path), help="write a Chrome trace-event timeline")
@click.option("--timing-only", is_flag=True, help="skip the arithmetic (same cycles, faster)")
@click.option("--max-cycles", type=int, default=10**11, show_default=True, help="watchdog")
@click.option("--precision", type=click.Choice(["bf16", "cfp8", "fp32"]), default="bf16", show_default=True,
              help="peak used for utilization")
def run(target: Path, inputs: tuple[str, ...], output: Path | None, trace: Path | None, timing_only: bool,
        max_cycles: int, precision: str) -> None:
    """Run an object file (or a program folder) on the emulator and print its report."""
    from runtime_emu import Emulator
    from runtime_emu.stats import utilization

    image = _load_image(target)
    emu = Emulator(image, timing_only=timing_only, max_cycles=max_cycles, trace=trace is not None)
    emu.set_inputs(_read_inputs(image, inputs))
    result = emu.run()
    m = image.machine
    flops = result.stats.flops
    click.echo(result.stats.format_table(m))
    click.echo(f"flops            {flops:,}; utilization {utilization(flops, result.cycles, m, precision):.2%} "
               f"of {precision} peak (flops / (cycles x {m.num_cores} cores x peak per core))")
    if output is not None:
        outs = {k: np.asarray(v) for k, v in result.outputs.items()}
        write_atomic(output, lambda p: np.savez(p, **outs))  # type: ignore[arg-type]
        click.echo(f"wrote {output}")
    if trace is not None and result.trace is not None:
        result.trace.save(trace)
        click.echo(f"wrote {trace}")


def main() -> None:
    """Console entry point."""
    cli(prog_name="dojoc")


if __name__ == "__main__":
    main()
