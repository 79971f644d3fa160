"""`Program`: a compiled model that runs on the emulator, takes eager's arguments and returns eager's
output structure; `last_report()`.

    prog = dojoc.compile(model, (x,), machine="mesh4x4")
    y = prog(x)                 # runs the image on the emulator; y has eager's structure and dtypes
    print(prog.report)          # cycles, utilization, ... of that call
    prog.save("out/")           # program.s (+ weight .bin files), program.dobj, report.json
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from dojoc.codegen.result import Lowered
from dojoc.errors import DojocError, InputError
from dojoc.ir import Graph, IRDType
from dojoc.report import Report
from isa.disasm import disassemble, write_data_files
from isa.files import umask_mode
from isa.objfile import save_object

_TORCH = {IRDType.F32: torch.float32, IRDType.BF16: torch.bfloat16, IRDType.I32: torch.int32,
          IRDType.I64: torch.int64, IRDType.BOOL: torch.bool}

# files Program.save writes; a folder holding only these may be replaced
_OWN_SUFFIXES = (".s", ".dobj", ".json", ".bin", ".toml")

_last: Report | None = None


def last_report() -> Report | None:
    """The report of the last call of a compiled program: a `dojoc.compile` Program, or a model compiled
    with torch.compile(backend="dojo") (summed over all the subgraphs that ran on the emulator in that
    call). None before any call, or when the last call ran entirely eagerly."""
    return _last


def set_last_report(report: Report | None) -> None:
    """Record the report of the last call (used by Program and the torch.compile backend)."""
    global _last
    _last = report


@dataclass(frozen=True)
class InputSpec:
    """One tensor input of a compiled program: its name, shape, dtype and flat position."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    flat_index: int


def _load_spec(text: str | None) -> pytree.TreeSpec | None:
    if not text:
        return None
    try:
        return pytree.treespec_loads(text)
    except Exception:  # a pytree type this process does not know: fall back to positional order
        return None


def _leaf_name(args: Sequence[Any], kwargs: Mapping[str, Any], index: int) -> str:
    """`argument 2`, `keyword 'scale'` or `argument 0[1]`: where flat input `index` came from."""
    try:
        path = pytree.tree_flatten_with_path((tuple(args), dict(kwargs)))[0][index][0]
    except IndexError:
        return f"input {index}"
    head = (f"argument {getattr(path[1], 'idx', '?')}" if getattr(path[0], "idx", 0) == 0
            else f"keyword {getattr(path[1], 'key', '?')!r}")
    return head + pytree.keystr(path[2:])


def _plain(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


class Program:
    """A compiled graph: call it like the model; it runs on the emulator.

    Attributes: `image` (the isa Image), `machine`, `precision`, `inputs` (InputSpec per tensor input),
    `output_names`, `signature` (the graph's JSON-able signature), `report` (a Report after the first run,
    else None), `compile_seconds`, `options`.
    """

    def __init__(self, lowered: Lowered, graph: Graph, *, compile_seconds: float = 0.0,
                 options: Mapping[str, Any] | None = None) -> None:
        self.lowered = lowered
        self.mapping = lowered.mapping  # every decision of the compile (dojoc.Mapping)
        self.image = lowered.image
        self.machine = lowered.image.machine
        self.precision = lowered.precision
        self.name = graph.name
        self.compile_seconds = compile_seconds
        self.options = dict(options or {})
        self.signature = graph.signature()
        producers = graph.producers()
        self.inputs = tuple(InputSpec(name, tuple(v.type.shape), _TORCH[v.type.dtype],
                                      int(producers[v].attrs["flat_index"]))
                            for name, v in zip(lowered.input_names, graph.inputs, strict=True))
        self.output_names = tuple(lowered.output_names)
        self.output_dtypes = tuple(_TORCH[v.type.dtype] for v in graph.outputs)
        self.baked_inputs = {int(k): v for k, v in graph.baked_inputs.items()}
        self._in_spec = _load_spec(graph.in_spec)
        self._out_spec = _load_spec(graph.out_spec)
        self.report: Report | None = None

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}: {str(i.dtype).removeprefix('torch.')}{list(i.shape)}" for i in self.inputs)
        return (f"<dojoc.Program {self.name}({ins}) -> {len(self.output_names)} output(s) on "
                f"{self.machine.name}, {self.precision}>")

    # -- calling ------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run one call on the emulator; returns eager's output structure as torch tensors and sets
        `self.report` (and `dojoc.last_report()`)."""
        out, report = self.run(*args, **kwargs)
        set_last_report(report)
        return out

    def run(self, *args: Any, **kwargs: Any) -> tuple[Any, Report]:
        """Like calling the program, but returns (outputs, report) and leaves `last_report()` alone."""
        flat, report = self.run_flat(*args, **kwargs)
        return self.unflatten_outputs(flat), report

    def run_flat(self, *args: Any, **kwargs: Any) -> tuple[list[torch.Tensor], Report]:
        """Run once; returns the flat outputs (in `output_names` order) and the report; sets `self.report`."""
        from runtime_emu import run

        arrays = self.encode_inputs(args, kwargs)
        result = run(self.image, arrays)
        report = Report.from_lowered(result, self.lowered, compile_seconds=self.compile_seconds,
                                     options=self.options)
        self.report = report
        return self.decode_outputs(result.outputs), report

    def flatten_inputs(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """(args, kwargs) flattened in the compiled order (the graph's in_spec, else positional)."""
        spec = self._in_spec
        if spec is None or spec.num_children != 2:
            return pytree.tree_leaves((tuple(args), dict(kwargs)))
        args_spec, kw_spec = spec.children()
        keys = list(kw_spec.context or []) if kw_spec.type is dict else []
        if len(args) != args_spec.num_children:
            raise InputError(f"{self.name} was compiled for {args_spec.num_children} positional input(s), "
                             f"got {len(args)}")
        unknown = sorted(set(kwargs) - set(keys))
        missing = [k for k in keys if k not in kwargs]
        if unknown or missing:
            parts = ([f"unknown keyword input(s) {', '.join(unknown)}"] if unknown else []) + \
                    ([f"missing keyword input(s) {', '.join(missing)}"] if missing else [])
            raise InputError(f"{'; '.join(parts)}: {self.name} was compiled with keywords "
                             f"{', '.join(keys) or '(none)'}")
        flat, got = pytree.tree_flatten((tuple(args), {k: kwargs[k] for k in keys}))
        if got != spec:
            raise InputError(f"the inputs' structure differs from the example inputs': expected {spec}, got {got}")
        return flat

    def encode_inputs(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[np.ndarray]:
        """Check every input (count, shape, dtype; non-tensor inputs must equal the compiled values) and
        return the tensor inputs as numpy arrays in the image's signature order."""
        flat = self.flatten_inputs(args, kwargs)
        total = len(self.inputs) + len(self.baked_inputs)
        if len(flat) != total:
            listing = ", ".join(f"{i.name} {list(i.shape)} {i.dtype}" for i in self.inputs) or "none"
            raise InputError(f"{self.name} takes {total} input(s) ({listing}), got {len(flat)}")
        for fi, value in self.baked_inputs.items():
            if _plain(flat[fi]) != value:
                raise InputError(f"{_leaf_name(args, kwargs, fi)} is {flat[fi]!r}, but {self.name} was compiled "
                                 f"with {value!r} (a non-tensor input is baked in: compile again for another value)")
        arrays = []
        for spec in self.inputs:
            x = flat[spec.flat_index]
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            if not isinstance(x, torch.Tensor):
                raise InputError(f"input {spec.name!r} must be a tensor, got {type(x).__name__}")
            if tuple(x.shape) != spec.shape:
                raise InputError(f"input {spec.name!r} has shape {list(x.shape)}, but {self.name} was compiled "
                                 f"for {list(spec.shape)}")
            if x.dtype != spec.dtype:
                raise InputError(f"input {spec.name!r} has dtype {x.dtype}, but {self.name} was compiled for "
                                 f"{spec.dtype}")
            x = x.detach().cpu()
            arrays.append((x.float() if x.dtype == torch.bfloat16 else x).contiguous().numpy())
        return arrays

    def decode_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
        """Emulator outputs (by name) -> flat torch tensors of eager's dtypes."""
        return [torch.from_numpy(np.array(outputs[n])).to(dt)
                for n, dt in zip(self.output_names, self.output_dtypes, strict=True)]

    def unflatten_outputs(self, flat: list[torch.Tensor]) -> Any:
        """Flat outputs -> eager's output structure (a tuple, or the one tensor, when it is unknown)."""
        if self._out_spec is not None and self._out_spec.num_leaves == len(flat):
            return pytree.tree_unflatten(flat, self._out_spec)
        return flat[0] if len(flat) == 1 else tuple(flat)

    # -- saving -------------------------------------------------------------------------------------
    def report_dict(self) -> dict[str, Any]:
        """The content of report.json: the report's fields (run figures None before the first run), the
        full machine description and the program's signature."""
        if self.report is not None:
            d = self.report.to_dict()
        else:
            d = Report.static_dict(self.lowered, compile_seconds=self.compile_seconds, options=self.options)
        d["machine_description"] = self.machine.to_dict()
        d["signature"] = self.signature
        return d

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `program.s` (with the weight .bin files it refers to), `program.dobj` and `report.json`
        into `directory`, atomically: into a temporary folder renamed into place, so an error leaves
        nothing behind. An existing folder is replaced only if it holds nothing but such files."""
        target = Path(directory)
        check_replaceable(target)

        def write(tmp: Path) -> None:
            (tmp / "program.s").write_text(disassemble(self.image))
            write_data_files(self.image, tmp)
            save_object(self.image, tmp / "program.dobj")
            (tmp / "report.json").write_text(json.dumps(self.report_dict(), indent=2) + "\n")

        write_dir_atomic(target, write)
        return target


def check_replaceable(target: Path) -> None:
    """DojocError unless `target` is absent, an empty folder or a folder of program files."""
    if not target.exists():
        return
    if not target.is_dir():
        raise DojocError(f"{target} exists and is not a folder")
    entries = list(target.iterdir())
    if entries and not ((target / "program.dobj").is_file()
                        and all(p.is_file() and p.suffix in _OWN_SUFFIXES for p in entries)):
        raise DojocError(f"refusing to replace {target}: it exists and is not a dojoc program folder")


def write_dir_atomic(target: Path, write: Any) -> None:
    """Call `write(tmp)` on a fresh temporary folder beside `target`, then rename it into place (replacing
    an old `target`). On any error the temporary folder and any parent folders created are removed."""
    parent = target.absolute().parent
    created = []
    p = parent
    while not p.exists():
        created.append(p)
        p = p.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    old: Path | None = None
    try:
        os.chmod(tmp, umask_mode(directory=True))
        write(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            if old is not None:
                os.rename(old, target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
