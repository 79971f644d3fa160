"""The `dojoc` command line: compile, run, asm, disasm, machines.

Bad input prints one `error: ...` line on stderr and exits non-zero, with no traceback and no output
file left behind (outputs are written to a temporary file and renamed into place).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from dojoc.interrupt import INTERRUPTED, take_interrupts
from isa.errors import DojocError
from isa.files import atomic_path, write_atomic
from isa.machine import assumptions
from isa.presets import PRESETS, dump_toml, load_machine


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class _Group(click.Group):
    """Turns every DojocError (and the usual OS errors) into one `error:` line."""

    def invoke(self, ctx: click.Context) -> Any:
        take_interrupts()
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad option of a command: one line too, not click's usage block
            _fail(e.format_message())
        except DojocError as e:
            _fail(str(e).strip())
        except (OSError, ValueError) as e:
            _fail(str(e))
        except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, so nothing half-written is left
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="dojoc")
def cli() -> None:
    """dojoc: compile PyTorch models for a Dojo-like mesh and run them on its emulator."""


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
    write_atomic(out, data)
    n = sum(len(s.code) for s in image.sections)
    click.echo(f"wrote {out}: {n} instructions in {len(image.sections)} section(s), "
               f"{len(image.tensors)} tensor(s), machine {image.machine.name}")


@cli.command()
@click.argument("objfile", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="write DIR/program.s with the weight data files (and machine TOML) it refers to")
def disasm(objfile: Path, output: Path | None) -> None:
    """Print the assembly of an object file, or with -o DIR write it with its data files, so that
    `dojoc asm DIR/program.s` gives back the same bytes."""
    from dojoc.program import write_dir_atomic
    from isa.disasm import disassemble, write_data_files

    image = _load_image(objfile)
    text = disassemble(image)
    if output is None:
        if any(t.data is not None for t in image.tensors):
            # the file= names below exist only once written: say so instead of pointing at nothing
            click.echo(f"; weight data is inside {objfile}: `dojoc disasm {objfile} -o DIR` writes "
                       "DIR/program.s with the data files its file= names refer to")
        click.echo(text, nl=False)
        return
    taken = output.exists() and (not output.is_dir() or (any(output.iterdir())
                                                         and not (output / "program.s").is_file()))
    if taken:
        raise DojocError(f"refusing to write into {output}: it exists and is not an empty folder or a "
                         "disassembly folder; name a new folder")

    def write(tmp: Path) -> None:
        (tmp / "program.s").write_text(text)
        write_data_files(image, tmp)

    write_dir_atomic(output, write)
    click.echo(f"wrote {output / 'program.s'} and its data files")


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
@click.option("--precision", type=click.Choice(["bf16", "cfp8", "fp32"]), default=None,
              help="peak used for utilization (default: the program's, else bf16)")
def run(target: Path, inputs: tuple[str, ...], output: Path | None, trace: Path | None, timing_only: bool,
        max_cycles: int, precision: str | None) -> None:
    """Run an object file or a compiled program folder (DIR/program.dobj) on the emulator and print its
    report. A program from `dojoc compile` reports one call (`cycles`) apart from the one-time loading of
    its resident weights (`load cycles`)."""
    from dojoc.report import Report, load_phase_end
    from runtime_emu import Emulator
    from runtime_emu.stats import utilization

    image = _load_image(target)
    saved = _saved_report(target)
    if saved.get("machine_hash") != image.machine.hash:
        saved = {}  # a report.json of some other program
    precision = precision or str(saved.get("precision") or "bf16")
    emu = Emulator(image, timing_only=timing_only, max_cycles=max_cycles, trace=trace is not None)
    if not inputs and saved and image.inputs:
        click.echo("note: no --input given: running on random inputs (seed 0)", err=True)
        emu.set_inputs(_random_inputs(image))
    else:
        emu.set_inputs(_read_inputs(image, inputs))
    result = emu.run()
    m = image.machine
    if load_phase_end(result.stats) or saved:
        ran = [c for c in result.stats.cores.values() if c.instructions > 0]
        report = Report.from_run(
            result, m, precision=precision, flops=int(saved.get("flops") or result.stats.flops),
            cores_used=int(saved.get("cores_used") or len(ran)),
            sram_peak_bytes=int(saved.get("sram_peak_bytes") or result.stats.sram_high_water),
            compile_seconds=float(saved.get("compile_seconds") or 0.0), options=saved.get("options") or {},
            sram=tuple(saved.get("sram") or ()))
        click.echo(report.format())
        click.echo("")
    else:
        flops = result.stats.flops
        click.echo(f"machine      {m.name} ({m.num_cores} cores, hash {m.hash[:12]})")
        click.echo(f"cycles       {result.cycles:,}  ({result.cycles / m.clock_hz * 1e6:.3f} us at "
                   f"{m.clock_hz / 1e9:g} GHz)")
        click.echo(f"flops        {flops:,}  utilization {utilization(flops, result.cycles, m, precision):.4%} "
                   f"of {precision} peak")
    click.echo(result.stats.format_table(m))
    if output is not None:
        outs = {k: np.asarray(v) for k, v in result.outputs.items()}
        with atomic_path(output) as tmp:
            np.savez(tmp, **outs)  # type: ignore[arg-type]
        click.echo(f"wrote {output}")
    if trace is not None and result.trace is not None:
        result.trace.save(trace)
        click.echo(f"wrote {trace}")


def _random_inputs(image: Any) -> list[np.ndarray]:
    """Random arrays for every input of an image (floats normal, integers in [0, 10), bools coins)."""
    rng = np.random.default_rng(0)
    out = []
    for t in image.inputs:
        if t.dtype.is_float:
            out.append(rng.standard_normal(t.shape).astype(np.float32))
        elif t.dtype.asm == "bool":
            out.append(rng.integers(0, 2, t.shape).astype(bool))
        else:
            out.append(rng.integers(0, 10, t.shape).astype(np.int32))
    return out


def _saved_report(target: Path) -> dict[str, Any]:
    """report.json of a program folder (or beside an object file), or {} when there is none or it is broken."""
    import json

    path = (target if target.is_dir() else target.parent) / "report.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and "machine_hash" in data else {}


# -- compile --------------------------------------------------------------------------------------

@cli.command("compile")
@click.argument("target")
@click.option("--input", "inputs", multiple=True, metavar="SPEC",
              help="an example input: SHAPE[:DTYPE][RANGE] (1x3x224x224, 1x128:int64[0,30522)) or x.npy; "
                   "name=SPEC for a keyword input")
@click.option("--machine", default="d1", show_default=True, help="preset name or .toml")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="override a machine field")
@click.option("--precision", type=click.Choice(["bf16", "fp32", "cfp8"]), default="bf16", show_default=True)
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="program folder to write")
@click.option("--mapping", "mapping_in", type=click.Path(path_type=Path), default=None,
              help="take the decisions of this mapping (JSON, as --dump-mapping writes it; edit it to change them)")
@click.option("--dump-mapping", "mapping_out", type=click.Path(path_type=Path), default=None,
              help="write the mapping of this compile (every op's region, split and tile; every value's place)")
@click.option("--explain", is_flag=True,
              help="print per op its region, split, where its values live, predicted and emulated cycles")
@click.option("--search-budget", type=click.IntRange(min=1), default=None,
              help="the most candidates the cost model prices per op (default: SEARCH_BUDGET in "
              "dojoc/codegen/context.py); ops cut short are noted")
def compile_(target: str, inputs: tuple[str, ...], machine: str, overrides: tuple[str, ...], precision: str,
             out_dir: Path, mapping_in: Path | None, mapping_out: Path | None, explain: bool,
             search_budget: int | None) -> None:
    """Compile TARGET (path/file.py:factory or a .pt2 file), run it once on the example inputs, check it
    against eager and write DIR: program.s (+ weight files), program.dobj, report.json."""
    import dataclasses
    import logging

    import torch
    from torch.utils import _pytree as pytree

    from dojoc.api import compile_with_options, resolve_mapping
    from dojoc.mapping.explain import format_explain
    from dojoc.program import check_replaceable, set_last_report
    from dojoc.report import accuracy
    from dojoc.targets import load_target, parse_inputs, random_inputs_for
    from dojoc.testing import mismatch

    # torch logs a traceback when export meets a shape the model rejects; the error line says it all
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)
    m = load_machine(machine, overrides)
    check_replaceable(out_dir)
    given_mapping = resolve_mapping(mapping_in)
    given = parse_inputs(inputs) if inputs else None
    model, ex_args, ex_kwargs = load_target(target)
    if given is not None:
        args, kwargs = given
    elif ex_args is not None:
        args, kwargs = ex_args, ex_kwargs
    elif isinstance(model, torch.export.ExportedProgram):
        args, kwargs = random_inputs_for(model)
    else:
        raise DojocError(f"{target} gives no example inputs: pass --input SPEC for each input")
    options = {"frontend": "export", "entry": "cli", "target": target, "inputs": list(inputs),
               "overrides": list(overrides), "mapping": str(mapping_in) if mapping_in else None,
               "search_budget": search_budget}
    program = compile_with_options(model, args, example_kwargs=kwargs, machine=m, precision=precision,
                                   options=options, mapping=given_mapping, search_budget=search_budget)
    actual = program(*args, **kwargs)
    assert program.report is not None
    expected = _eager(model, args, kwargs)
    problem: str | None = "outputs not checked against eager"
    if expected is not None:
        got = pytree.tree_leaves(actual)
        want = [x for x in pytree.tree_leaves(expected) if isinstance(x, torch.Tensor)]
        problem = mismatch(got, want, precision, program.output_names)
        if len(got) == len(want) and all(a.shape == e.shape for a, e in zip(got, want, strict=True)):
            pcc, err = accuracy(got, want)
            program.report = dataclasses.replace(program.report, pcc=pcc, max_abs_err=err)
            set_last_report(program.report)
    program.save(out_dir)
    report = program.report
    if mapping_out is not None and program.mapping is not None:
        write_atomic(mapping_out, program.mapping.to_json().encode())
    if explain:
        click.echo(format_explain([dict(r) for r in report.ops]))
        pipe = program.mapping.pipeline if program.mapping is not None else None
        if pipe is not None:
            stages = "; ".join(f"stage {i} from {st.first} on rect {list(st.rect)}" for i, st in enumerate(pipe.stages))
            click.echo(f"pipeline: {pipe.micro_batches} micro-batches through {len(pipe.stages)} stages ({stages}), "
                       f"predicted {pipe.predicted_cycles:,} cycles{'; ' + pipe.note if pipe.note else ''}")
    click.echo(report.format())
    weights = sum(1 for t in program.image.tensors if t.data is not None)
    click.echo(f"wrote {out_dir}/: program.s, program.dobj, report.json and {weights} weight file(s)"
               + (f"; the mapping to {mapping_out}" if mapping_out is not None else ""))
    for note in program.mapping.notes if program.mapping is not None else ():
        click.echo(f"note: {note}", err=True)
    if problem:
        click.echo(f"warning: {problem}", err=True)


def _eager(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Eager outputs for the accuracy check, or None when eager cannot run here."""
    import torch

    try:
        fn = model.module() if isinstance(model, torch.export.ExportedProgram) else model
        with torch.no_grad():
            return fn(*args, **kwargs)
    except Exception:
        return None


def main() -> None:
    """Console entry point."""
    cli(prog_name="dojoc")


if __name__ == "__main__":
    main()
