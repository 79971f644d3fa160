"""The in-memory form of a program: what the assembler and the object-file reader produce and what the
emulator runs. `isa.objfile` writes and reads it as bytes; `isa.asm` builds it from text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from isa.dtypes import DType
from isa.machine import Machine
from isa.table import Instr


class TensorKind(Enum):
    """The role of a DRAM tensor."""

    INPUT = "input"  # written by the caller before a run (in signature order)
    OUTPUT = "output"  # read back after a run
    WEIGHT = "weight"  # initial data carried in the program (data section)
    SCRATCH = "scratch"  # DRAM the program uses for itself


@dataclass(frozen=True)
class Tensor:
    """A named tensor in DRAM: its address, shape and type, and for weights its bytes."""

    name: str
    kind: TensorKind
    address: int
    shape: tuple[int, ...]
    dtype: DType
    data: bytes | None = field(default=None, repr=False)  # WEIGHT only: row-major storage bytes
    file: str | None = None  # assembly: the raw file the data came from (relative to the .s file)

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * self.dtype.itemsize

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else None


@dataclass(frozen=True)
class CodeSection:
    """A stream of instructions shared by the cores in `cores` (ids); `rdsr coreid` tells them apart."""

    name: str
    cores: tuple[int, ...]
    code: tuple[Instr, ...]
    labels: tuple[tuple[str, int], ...] = ()  # (label, instruction index), for the disassembler


class DebugEntry(NamedTuple):
    """Where an instruction came from: the IR op it implements and the model source line. (A named tuple:
    a compile makes one per instruction, two million for ResNet-50, and a frozen dataclass costs five
    times as much to make.)"""

    section: int
    pc: int
    op: str
    source: str = ""


@dataclass(frozen=True)
class Signature:
    """User inputs (export's flattened order, parameters excluded) and outputs with their pytree."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    output_tree: str = ""  # JSON of the outputs' pytree structure; "" means a flat tuple


@dataclass(frozen=True)
class Image:
    """A complete program for one machine."""

    machine: Machine
    sections: tuple[CodeSection, ...]
    tensors: tuple[Tensor, ...] = ()
    signature: Signature = Signature()
    debug: tuple[DebugEntry, ...] = ()

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        """Input tensors in signature order (declaration order when the signature names none)."""
        if self.signature.inputs:
            return tuple(self.tensor(n) for n in self.signature.inputs)
        return tuple(t for t in self.tensors if t.kind is TensorKind.INPUT)

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        if self.signature.outputs:
            return tuple(self.tensor(n) for n in self.signature.outputs)
        return tuple(t for t in self.tensors if t.kind is TensorKind.OUTPUT)
