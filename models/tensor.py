"""Shape, dtype and quantisation of a model's tensor, shared by the engine interface and the model spec."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and quantisation of one model input or output."""

    name: str
    shape: Tuple[int, ...]
    dtype: str  # numpy dtype name: "uint8", "int8", "float32"
    scale: float = 0.0  # 0.0 means "not quantised"
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in ("uint8", "int8", "int16")

    def quantize(self, real: np.ndarray) -> np.ndarray:
        """Real values -> this tensor's dtype (identity for float tensors)."""
        if not self.quantized:
            return real.astype(self.dtype, copy=False)
        info = np.iinfo(self.dtype)
        q = np.round(real / self.scale + self.zero_point)
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, raw: np.ndarray) -> np.ndarray:
        """This tensor's values -> float32 real values."""
        if not self.quantized:
            return raw.astype(np.float32, copy=False)
        return (raw.astype(np.float32) - self.zero_point) * np.float32(self.scale)
