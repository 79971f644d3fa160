"""dojoc: a compiler from PyTorch graphs to a Dojo-like tile ISA, and the emulator that runs what it emits.

    prog = dojoc.compile(model.eval(), (x,), machine="mesh4x4", precision="bf16")
    y = prog(x)                       # runs on the emulator, returns eager's output structure
    print(prog.report)                # or dojoc.last_report()

torch.compile(model, backend="dojo", options={...}) works without importing dojoc (entry point).
`compile`, `Program`, `Report` and `last_report` are imported on first use, so that importing dojoc (for
its errors, or the pytest plugin) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dojoc.errors import (
    AsmError,
    CompileError,
    DojocError,
    InputError,
    MachineError,
    MappingError,
    ObjectFileError,
    ShapeError,
    SramOverflowError,
    UnsupportedOpsError,
)

if TYPE_CHECKING:
    from dojoc.api import compile
    from dojoc.mapping import Mapping
    from dojoc.program import Program, last_report
    from dojoc.report import Report

__version__ = "0.1.0"

__all__ = [
    "AsmError", "CompileError", "DojocError", "InputError", "MachineError", "MappingError", "ObjectFileError",
    "ShapeError", "SramOverflowError", "UnsupportedOpsError", "__version__",
    "Mapping", "Program", "Report", "compile", "last_report",
]

_LAZY = {"compile": "dojoc.api", "Program": "dojoc.program", "last_report": "dojoc.program",
         "Report": "dojoc.report", "Mapping": "dojoc.mapping"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dojoc' has no attribute {name!r}")
