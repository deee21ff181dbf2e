"""Model families: pre-processing and decoding around an engine.

A family object wraps one engine and turns images into answers. All methods
are blocking and run in the owning actor's worker thread.

Python 3.9 compatible.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from .engine import Engine, EngineError
from .spec import FaceBox, ModelSpec


@dataclass
class Label:
    label: str
    confidence: float
    scores: List[float]


def to_model_pixels(image_bgr: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Convert a BGR uint8 image (any size) into the model's colour order, resized to its input."""
    h, w, c = spec.input_shape
    if image_bgr.shape[0] != h or image_bgr.shape[1] != w:
        image_bgr = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    if spec.color == "gray":
        out = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif spec.color == "rgb":
        out = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    else:
        out = image_bgr
    return out


def pixels_to_tensor(pixels: np.ndarray, engine: Engine, spec: ModelSpec) -> np.ndarray:
    """Model-ready pixels (H, W, C uint8) -> the engine's input tensor (batch of one)."""
    tensor_spec = engine.inputs[0]
    if tensor_spec.dtype == "uint8" and not tensor_spec.quantized:
        return pixels[None]
    real = spec.normalization.apply(pixels)
    if tensor_spec.dtype == "uint8" and spec.input_dtype == "uint8" and tensor_spec.scale == 0.0:
        return pixels[None]
    return tensor_spec.quantize(real)[None]


def check_input(engine: Engine, spec: ModelSpec) -> None:
    """Refuse a model file whose input does not match the manifest (a wrong model file)."""
    got = tuple(engine.inputs[0].shape)
    want = (1,) + tuple(spec.input_shape)
    if got != want:
        raise EngineError(
            "model %r: the file's input shape %s does not match the manifest's %s "
            "(wrong model file?)" % (spec.name, list(got), list(want))
        )


class FaceDetectorModel(abc.ABC):
    def __init__(self, spec: ModelSpec, engine: Engine, score_threshold: Optional[float] = None,
                 max_faces: int = 16) -> None:
        self.spec = spec
        self.engine = engine
        # None: the model's own threshold (the manifest's ``min_score``), tuned per detector by
        # ``run.py bench detectors``
        self.score_threshold = float(spec.extra.get("min_score", 0.5)) if score_threshold is None \
            else float(score_threshold)
        self.max_faces = max_faces

    @abc.abstractmethod
    def detect(self, image_bgr: np.ndarray) -> List[FaceBox]:
        """Faces in frame pixel coordinates, best first."""


class ExpressionModel(abc.ABC):
    def __init__(self, spec: ModelSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine

    @abc.abstractmethod
    def prepare(self, image_bgr: np.ndarray, face: FaceBox) -> np.ndarray:
        """The face crop as model-ready pixels (H, W, C uint8 in the model's colour order)."""

    @abc.abstractmethod
    def classify(self, crop: np.ndarray) -> Label:
        """Expression of a crop made by ``prepare``."""

    def classify_batch(self, crops: np.ndarray) -> List[Label]:
        """Expressions of a stack of crops (N, H, W, C) made by ``prepare``."""
        return [self.classify(c) for c in crops]


class ImageClassifierModel(abc.ABC):
    def __init__(self, spec: ModelSpec, engine: Engine, top_k: int = 5) -> None:
        self.spec = spec
        self.engine = engine
        self.top_k = top_k

    @abc.abstractmethod
    def classify(self, image_bgr: np.ndarray) -> List[Tuple[str, float]]:
        """Top-k (label, probability), best first."""


# family name -> constructor; filled by the family modules on import (see models/registry.py)
DETECTORS: Dict[str, Callable[..., FaceDetectorModel]] = {}
EXPRESSIONS: Dict[str, Callable[..., ExpressionModel]] = {}
CLASSIFIERS: Dict[str, Callable[..., ImageClassifierModel]] = {}
