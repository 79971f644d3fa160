"""Typed errors shared by the three packages.

`isa` sits at the bottom of the import graph, so the root of the hierarchy lives here and
`dojoc` re-exports it as `dojoc.DojocError`. Every error carries a message that says what is
wrong and what to do; the command line prints it as one `error:` line.
"""

from __future__ import annotations


class DojocError(Exception):
    """Root of every error dojoc raises on bad input."""


class MachineError(DojocError):
    """An unknown preset, an unknown or ill-typed field, or an inconsistent machine description."""


class FormatError(DojocError):
    """A number-format problem: an unknown dtype, a bad CFP bias, or a NaN converted to CFP8."""


class AsmError(DojocError):
    """Malformed assembly; carries the line and column when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}" + (f", column {column}" if column is not None else "") if line else ""
        super().__init__(f"{where}: {message}" if where else message)
        self.line = line
        self.column = column


class EncodingError(DojocError):
    """An instruction field that does not fit its bit range, or bytes that decode to no instruction."""


class ObjectFileError(DojocError):
    """A corrupt, truncated or incompatible object file."""
