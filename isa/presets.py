"""Machine presets, TOML loading and dumping, and `--set field=value` overrides."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

import tomli_w

from isa.errors import MachineError
from isa.machine import DramPort, Edge, Machine

# The six disabled cores of a D1 are not public: yield losses fall anywhere, so we spread them.
_D1_ROWS, _D1_COLS = 18, 20
_D1_DISABLED = ((2, 3), (5, 16), (8, 9), (11, 2), (14, 13), (17, 18))
_HBM = 32 * 10**9  # one DIP's HBM
_DIP_BPC = 400  # 800 GB/s at 2 GHz


def _d1() -> Machine:
    return Machine(
        name="d1",
        description="one D1 die: 354 cores (18 x 20, 6 disabled), with one DIP's HBM on its west edge "
        "(a D1 has no DRAM of its own: the attached DIP is an assumption)",
        mesh=(_D1_ROWS, _D1_COLS),
        disabled=_D1_DISABLED,
        dram_ports=(DramPort(name="dip0", edge=Edge.WEST, first=0, last=_D1_ROWS - 1,
                             bytes_per_cycle=_DIP_BPC, capacity=_HBM),),
    )


def _tile() -> Machine:
    chips = 5
    disabled = tuple((cr * _D1_ROWS + r, cc * _D1_COLS + c)
                     for cr in range(chips) for cc in range(chips) for r, c in _D1_DISABLED)
    # Five DIPs on each of the west and east tile edges, one per die row.
    ports = tuple(DramPort(name=f"dip_{side.value}{i}", edge=side, first=i * _D1_ROWS,
                           last=(i + 1) * _D1_ROWS - 1, bytes_per_cycle=_DIP_BPC, capacity=_HBM)
                  for side in (Edge.WEST, Edge.EAST) for i in range(chips))
    return Machine(
        name="tile",
        description="a training tile: 5 x 5 D1 dies (8,850 cores) joined by die-to-die links, "
        "ten DIPs on the west and east edges",
        mesh=(chips * _D1_ROWS, chips * _D1_COLS),
        die_shape=(_D1_ROWS, _D1_COLS),
        disabled=disabled,
        dram_ports=ports,
    )


def _small(rows: int, cols: int) -> Machine:
    return Machine(
        name=f"mesh{rows}x{cols}",
        description=f"a {rows} x {cols} test mesh with D1 cores and 1 GiB of DRAM on its west edge",
        mesh=(rows, cols),
        dram_ports=(DramPort(name="dram0", edge=Edge.WEST, first=0, last=rows - 1,
                             bytes_per_cycle=_DIP_BPC, capacity=1 << 30),),
    )


PRESETS: dict[str, typing.Callable[[], Machine]] = {
    "d1": _d1,
    "tile": _tile,
    "mesh1x1": lambda: _small(1, 1),
    "mesh2x2": lambda: _small(2, 2),
    "mesh4x4": lambda: _small(4, 4),
    "mesh8x8": lambda: _small(8, 8),
}


# -- plain data <-> Machine -------------------------------------------------------------------------

def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert TOML data to the annotated field type, or raise a MachineError naming the field."""
    origin = typing.get_origin(tp)
    try:
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if tp is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if tp is Edge:
            return Edge(value)
        if tp is DramPort:
            return _from_dict(DramPort, value, where)
        if origin is tuple:
            args = typing.get_args(tp)
            if not isinstance(value, list | tuple):
                raise TypeError
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                raise TypeError
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    except (TypeError, ValueError):
        raise MachineError(f"machine field {where}: {value!r} is not a valid {_type_name(tp)}") from None
    raise MachineError(f"machine field {where}: unsupported type {tp}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _from_dict(cls: Any, data: Any, where: str = "") -> Any:
    if not isinstance(data, dict):
        raise MachineError(f"machine field {where or cls.__name__}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise MachineError(f"unknown machine field {where + '.' if where else ''}{unknown[0]}; "
                           f"known fields: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def machine_from_dict(data: dict[str, Any]) -> Machine:
    """Build a Machine from plain data (as read from TOML or an object file); missing fields take defaults."""
    result: Machine = _from_dict(Machine, data)
    return result


def _toml_value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return tomli_w.dumps({"v": v})[4:].strip()


def dump_toml(machine: Machine) -> str:
    """The full description as commented TOML: loading it back gives an equal machine."""
    lines = [f"# dojoc machine description; load with --machine FILE.toml. hash {machine.hash[:16]}"]
    data = machine.to_dict()

    def emit(cls: Any, values: dict[str, Any]) -> None:
        for f in dataclasses.fields(cls):
            meta = f.metadata
            note = meta.get("doc", "") + (f" [{meta['unit']}]" if meta.get("unit") else "")
            if meta.get("assumption"):
                note += " (assumption: not a public figure)"
            if f.name != "dram_ports":
                lines.append(f"{f.name} = {_toml_value(values[f.name])}  # {note}")

    emit(Machine, data)
    for port in data["dram_ports"]:
        lines.append("")
        lines.append("[[dram_ports]]")
        emit(DramPort, port)
    return "\n".join(lines) + "\n"


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string field such as a name or an edge


def with_overrides(machine: Machine, overrides: list[str] | tuple[str, ...]) -> Machine:
    """Apply `field=value` overrides (values in TOML syntax; `dram_ports.N.field` reaches a port)."""
    data = machine.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MachineError(f"--set {item!r}: expected field=value, e.g. --set sram_bytes=2097152")
        path = key.strip().split(".")
        target: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise MachineError(f"--set {item!r}: no element {part} in {'.'.join(path[:i])}")
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                raise MachineError(f"--set {item!r}: unknown machine field {'.'.join(path[:i + 1])}")
        if not isinstance(target, dict) or path[-1] not in target:
            raise MachineError(f"--set {item!r}: unknown machine field {key.strip()}; "
                               "`dojoc machines --dump d1` lists the fields")
        target[path[-1]] = _parse_value(text.strip())
    return machine_from_dict(data)


def load_machine(spec: str | Path | Machine, overrides: list[str] | tuple[str, ...] = ()) -> Machine:
    """A machine from a preset name, a TOML file path or a Machine, with `field=value` overrides applied."""
    if isinstance(spec, Machine):
        machine = spec
    elif str(spec) in PRESETS:
        machine = PRESETS[str(spec)]()
    elif str(spec).endswith(".toml"):
        path = Path(spec)
        if not path.is_file():
            raise MachineError(f"machine file {path} not found")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MachineError(f"machine file {path}: not valid TOML ({e})") from None
        machine = machine_from_dict(data)
    else:
        raise MachineError(f"unknown machine {str(spec)!r}: use a preset ({', '.join(PRESETS)}) "
                           "or a .toml file")
    return with_overrides(machine, overrides) if overrides else machine
