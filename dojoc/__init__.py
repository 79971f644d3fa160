"""dojoc: a compiler from PyTorch graphs to a Dojo-like tile ISA, and the emulator that runs what it emits."""

from dojoc.errors import (
    AsmError,
    CompileError,
    DojocError,
    InputError,
    MachineError,
    ObjectFileError,
    ShapeError,
    SramOverflowError,
    UnsupportedOpsError,
)

__version__ = "0.1.0"

__all__ = [
    "AsmError", "CompileError", "DojocError", "InputError", "MachineError", "ObjectFileError",
    "ShapeError", "SramOverflowError", "UnsupportedOpsError", "__version__",
]
