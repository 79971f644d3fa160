"""Errors of the emulator's public API that are not traps (bad inputs, bad images)."""

from __future__ import annotations

from isa.errors import DojocError


class InputError(DojocError):
    """Inputs that do not match the program's signature: wrong count, unknown or missing name, wrong shape
    or values the tensor's type cannot hold; also a program whose tensors do not fit its machine's DRAM."""


class ImageError(DojocError):
    """A program image the emulator cannot run: a core id not on the machine, a core in two sections, a
    tensor outside DRAM or weight data of the wrong size."""
