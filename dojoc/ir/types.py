"""IR tensor types: a data type and a static shape.

The IR is torch-free: these types map to numpy (`IRDType.numpy`) and to the ISA's tile types
(`IRDType.isa`); the torch mapping lives in `dojoc.frontend`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import ml_dtypes
import numpy as np

from isa.dtypes import DType


class IRDType(Enum):
    """Element types of IR tensors. The value is the short name used by the printer."""

    F32 = "f32"
    BF16 = "bf16"
    I32 = "i32"
    I64 = "i64"  # token ids and pooling indices as torch gives them; lowered to i32 by a later pass
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype of the interpreter's arrays of this type."""
        return _NUMPY[self]

    @property
    def isa(self) -> DType | None:
        """The ISA tile type with the same values, or None (i64 has none: it is narrowed before codegen)."""
        return _ISA.get(self)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in (IRDType.F32, IRDType.BF16)

    @property
    def is_int(self) -> bool:
        return self in (IRDType.I32, IRDType.I64)

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> IRDType:
        """The IR type of a numpy dtype; raises KeyError for types the IR does not hold (f64, f16, ...)."""
        return _FROM_NUMPY[np.dtype(dtype)]

    @classmethod
    def parse(cls, name: str) -> IRDType:
        """`f32`, `bf16`, `i32`, `i64`, `bool`."""
        return cls(name)

    def __str__(self) -> str:
        return self.value


_NUMPY = {
    IRDType.F32: np.dtype(np.float32), IRDType.BF16: np.dtype(ml_dtypes.bfloat16),
    IRDType.I32: np.dtype(np.int32), IRDType.I64: np.dtype(np.int64), IRDType.BOOL: np.dtype(np.bool_),
}
_FROM_NUMPY = {v: k for k, v in _NUMPY.items()}
_ISA = {IRDType.F32: DType.F32, IRDType.BF16: DType.BF16, IRDType.I32: DType.I32, IRDType.BOOL: DType.BOOL}


@dataclass(frozen=True)
class TensorType:
    """A tensor's static shape and element type. `str()` gives `f32[1,3,32,32]`."""

    shape: tuple[int, ...]
    dtype: IRDType

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        object.__setattr__(self, "shape", shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: IRDType) -> TensorType:
        return TensorType(self.shape, dtype)

    @classmethod
    def of(cls, array: np.ndarray) -> TensorType:
        """The type of a numpy array (raises KeyError for dtypes the IR does not hold)."""
        return cls(tuple(array.shape), IRDType.from_numpy(array.dtype))

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"
