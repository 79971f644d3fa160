"""The compiler's typed errors. `DojocError` is the root for all three packages (defined in `isa`)."""

from __future__ import annotations

from isa.errors import AsmError, DojocError, EncodingError, FormatError, MachineError, ObjectFileError

__all__ = [
    "AsmError", "DojocError", "EncodingError", "FormatError", "MachineError", "ObjectFileError",
    "CompileError", "UnsupportedOpsError", "ShapeError", "SramOverflowError", "InputError", "IRError",
    "MappingError",
]


class InputError(DojocError):
    """A missing, mis-shaped or mis-typed input to a program, or a bad input spec on the command line."""


class CompileError(DojocError):
    """A model that cannot be compiled. Carries the IR node, its shapes and its source location when known."""

    def __init__(self, message: str, *, node: str | None = None, shapes: str | None = None,
                 source: str | None = None) -> None:
        parts = [message]
        if node:
            parts.append(f"node {node}" + (f" {shapes}" if shapes else ""))
        if source:
            parts.append(f"at {source}")
        super().__init__("; ".join(parts))
        self.node = node
        self.shapes = shapes
        self.source = source


class ShapeError(CompileError):
    """Shapes that an op rejects."""


class IRError(CompileError):
    """An IR graph that breaks an invariant (use before definition, bad attributes, wrong types):
    a bug in a pass or a lowering, reported by `dojoc.ir.verify` with the node and its source."""


class SramOverflowError(CompileError):
    """A tensor that fits no SRAM plan, even streamed through DRAM."""


class MappingError(CompileError):
    """A mapping that cannot be used: malformed JSON, an op the graph does not have, a region off the mesh,
    a split that does not match its tile, or a tile that does not fit SRAM. Names the op and the reason."""


class UnsupportedOpsError(CompileError):
    """Every op of a graph that dojoc cannot lower, listed at once (op, shapes, source line)."""

    def __init__(self, ops: list[tuple[str, str, str]]) -> None:
        lines = [f"  {op} {shapes}" + (f" at {src}" if src else "") for op, shapes, src in ops]
        super().__init__(f"{len(ops)} unsupported op(s); rewrite them, or use torch.compile with "
                         "fallback=True to run them eagerly:\n" + "\n".join(lines))
        self.ops = ops
