"""The data types a tile may hold. Conversions and rounding live in `isa.formats`."""

from __future__ import annotations

from enum import Enum

import ml_dtypes
import numpy as np


class DType(Enum):
    """Tile element types. The value is the 4-bit code used in instruction encodings."""

    F32 = 0
    BF16 = 1
    CF8E4 = 2  # CFloat8_1_4_3, bias an operand
    CF8E5 = 3  # CFloat8_1_5_2, bias an operand
    CF16 = 4  # CFloat16 (SHP) 1-5-10, bias an operand
    I8 = 5
    I16 = 6
    I32 = 7
    U8 = 8
    BOOL = 9

    @property
    def asm(self) -> str:
        """The name used in assembly: f32, bf16, cf8e4, cf8e5, cf16, i8, i16, i32, u8, bool."""
        return self.name.lower()

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def storage(self) -> np.dtype:
        """The numpy dtype holding this type's bits in SRAM (CFP types are raw unsigned codes)."""
        return _STORAGE[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.BF16, DType.CF8E4, DType.CF8E5, DType.CF16)

    @property
    def is_cfp(self) -> bool:
        """Configurable-bias formats: their bias is an operand of convert and matmul."""
        return self in (DType.CF8E4, DType.CF8E5, DType.CF16)

    @property
    def mxu_kind(self) -> str | None:
        """The matrix-unit rate class ('bf16', 'cfp8', 'fp32'), or None if the MXU does not take it."""
        return {DType.BF16: "bf16", DType.CF8E4: "cfp8", DType.CF8E5: "cfp8", DType.F32: "fp32"}.get(self)

    @classmethod
    def from_asm(cls, name: str) -> DType:
        return cls[name.upper()]


_ITEMSIZE = {
    DType.F32: 4, DType.BF16: 2, DType.CF8E4: 1, DType.CF8E5: 1, DType.CF16: 2,
    DType.I8: 1, DType.I16: 2, DType.I32: 4, DType.U8: 1, DType.BOOL: 1,
}
_STORAGE = {
    DType.F32: np.dtype(np.float32), DType.BF16: np.dtype(ml_dtypes.bfloat16),
    DType.CF8E4: np.dtype(np.uint8), DType.CF8E5: np.dtype(np.uint8), DType.CF16: np.dtype(np.uint16),
    DType.I8: np.dtype(np.int8), DType.I16: np.dtype(np.int16), DType.I32: np.dtype(np.int32),
    DType.U8: np.dtype(np.uint8), DType.BOOL: np.dtype(np.bool_),
}
