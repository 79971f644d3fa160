"""Moving a program's DRAM tensors between the host and the emulated DRAM: weights, inputs, outputs.

Host arrays are converted to a tensor's type with `isa.formats.encode` (RNE; CFP types at bias 0) and read
back with `isa.formats.decode`: float types as float32 (every BF16, CFP and F32 value is exact in float32),
integer types as their own numpy type (int8, int16, int32, uint8), BOOL as bool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from isa import formats
from isa.dtypes import DType
from isa.errors import FormatError
from isa.program import Image, Tensor, TensorKind
from runtime_emu.dram import DramMemory
from runtime_emu.errors import ImageError, InputError

__all__ = ["check_tensors", "write_weights", "encode_inputs", "read_outputs"]

_INT_RANGE = {DType.I8: (-(2**7), 2**7 - 1), DType.I16: (-(2**15), 2**15 - 1),
              DType.I32: (-(2**31), 2**31 - 1), DType.U8: (0, 2**8 - 1)}


def check_tensors(image: Image) -> None:
    """ImageError when a tensor lies outside DRAM or a weight's data has the wrong size."""
    size = image.machine.dram_bytes
    for t in image.tensors:
        if t.address < 0 or t.address + t.nbytes > size:
            raise ImageError(f"tensor {t.name!r} at [{t.address:#x}, {t.address + t.nbytes:#x}) lies outside "
                             f"the DRAM of machine {image.machine.name!r} [0, {size:#x})")
        if t.kind is TensorKind.WEIGHT and t.data is not None and len(t.data) != t.nbytes:
            raise ImageError(f"weight {t.name!r} carries {len(t.data)} bytes, but {t.shape} {t.dtype.asm} "
                             f"needs {t.nbytes}")


def write_weights(mem: DramMemory, image: Image) -> None:
    """Write every weight's data into DRAM at its address."""
    for t in image.tensors:
        if t.data is not None:
            mem.write(t.address, t.data)


def _encode(t: Tensor, x: np.ndarray) -> np.ndarray:
    dt = t.dtype
    if x.dtype.kind not in "biuf" and not x.dtype.type.__module__.startswith("ml_dtypes"):
        raise InputError(f"input {t.name!r}: an array of {x.dtype} cannot be converted to {dt.asm}")
    if dt in _INT_RANGE or dt is DType.BOOL:
        if x.dtype.kind not in "biu":
            if x.size and not np.array_equal(x.astype(np.float64), np.trunc(x.astype(np.float64))):
                raise InputError(f"input {t.name!r} is {dt.asm} but the array holds non-integer values")
        if dt in _INT_RANGE and x.size:
            lo, hi = _INT_RANGE[dt]
            xmin, xmax = x.min(), x.max()
            if xmin < lo or xmax > hi:
                raise InputError(f"input {t.name!r}: values {xmin}..{xmax} do not fit {dt.asm} ({lo}..{hi})")
    try:
        return np.ascontiguousarray(formats.encode(x, dt))
    except FormatError as e:
        raise InputError(f"input {t.name!r}: {e}") from None


def encode_inputs(image: Image, arrays: Sequence[np.ndarray] | Mapping[str, np.ndarray]
                  ) -> list[tuple[Tensor, np.ndarray]]:
    """Each input tensor with its host array converted to storage; InputError on any mismatch."""
    specs = image.inputs
    names = [t.name for t in specs]
    listing = ", ".join(f"{t.name} {list(t.shape)} {t.dtype.asm}" for t in specs) or "none"
    if isinstance(arrays, Mapping):
        unknown = [k for k in arrays if k not in names]
        missing = [n for n in names if n not in arrays]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown input{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
            if missing:
                parts.append(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
            raise InputError(f"{'; '.join(parts)}: the program takes {listing}")
        pairs = [(t, arrays[t.name]) for t in specs]
    else:
        if isinstance(arrays, np.ndarray | str | bytes):
            raise InputError("inputs must be a sequence or a mapping of arrays, not a single array")
        given = list(arrays)
        if len(given) != len(specs):
            raise InputError(f"the program takes {len(specs)} input{'s' if len(specs) != 1 else ''} "
                             f"({listing}), got {len(given)}")
        pairs = list(zip(specs, given, strict=True))
    out = []
    for t, x in pairs:
        arr = np.asarray(x)
        if arr.shape != tuple(t.shape):
            raise InputError(f"input {t.name!r} has shape {list(arr.shape)}, the program declares "
                             f"{list(t.shape)}")
        out.append((t, _encode(t, arr)))
    return out


def read_outputs(mem: DramMemory, image: Image) -> dict[str, np.ndarray]:
    """Every output tensor read from DRAM and decoded, by name, in signature order."""
    out: dict[str, np.ndarray] = {}
    for t in image.outputs:
        bits = mem.read(t.address, t.nbytes).view(t.dtype.storage).reshape(t.shape)
        if t.dtype.is_float:
            out[t.name] = formats.decode(bits, t.dtype).astype(np.float32)
        elif t.dtype is DType.BOOL:
            out[t.name] = bits.view(np.uint8) != 0
        else:
            out[t.name] = bits.copy()
    return out
