"""Typed description of a model (a detected face is ``bus.box.Box``).

Everything here must run on Python 3.9 (the TPU-side interpreter).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgepipe.models.tensor import TensorSpec

TASKS = ("face_detection", "fer", "classification")


@dataclass(frozen=True)
class Normalization:
    """real = (pixel - mean) / std, per channel (pixel in 0..255, in ``color`` order)."""

    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return (pixels.astype(np.float32) - mean) / std

    def invert(self, real: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return real.astype(np.float32) * std + mean


@dataclass
class ModelSpec:
    """One model of the manifest.

    ``family`` names the family class that knows how to pre-process its input
    and decode its output (its ``family`` attribute: ``ssd_postprocess``,
    ``blazeface``, ``retinaface``, ``square_crop``, ``aligned112``, ``imagenet``;
    ``models/families/``). ``options`` are that family's options, as the
    manifest writes them: the family reads them into its typed ``Options``
    struct when it is built (``Family.options_of``), and refuses a bad or
    unknown one. ``files`` maps an engine kind (``cpu``, ``edgetpu``) to a file
    name; the fake engine needs none. ``labels_file`` and ``origin`` belong to
    the model store (``models/store/fetch.py``): a side file of labels, fetched
    and pinned like a model file, and where the model's authors publish it.
    """

    name: str
    task: str
    family: str
    input_shape: Tuple[int, int, int]  # H, W, C
    input_dtype: str = "uint8"
    input_scale: float = 0.0  # quantisation of the input tensor (0.0: not quantised)
    input_zero_point: int = 0
    color: str = "rgb"  # rgb | bgr | gray
    normalization: Normalization = field(default_factory=Normalization)
    labels: Optional[List[str]] = None
    files: Dict[str, str] = field(default_factory=dict)
    sha256: Dict[str, str] = field(default_factory=dict)
    sources: List[Dict[str, str]] = field(default_factory=list)
    tpu_ms: float = 0.0  # measured Edge TPU time, used as the fake engine's default latency
    # parameters the Edge TPU caches, MB (the Edge TPU file's size where the compiler's report is unknown)
    tpu_param_mb: float = 0.0
    cpu_ms: float = 0.0  # default CPU invoke time, 1 thread, for `auto` placement without a measured table
    licence: str = ""
    origin: str = ""  # who publishes the model and how far its sha256 pins were checked
    labels_file: str = ""  # labels, one a line, fetched and verified like a model file (when ``labels`` is None)
    options: Dict[str, Any] = field(default_factory=dict)  # the family's options (its ``Options`` struct)

    @property
    def input(self) -> TensorSpec:
        h, w, c = self.input_shape
        return TensorSpec("input", (1, h, w, c), self.input_dtype, self.input_scale, self.input_zero_point)


def iou(a: List[float], b: List[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
