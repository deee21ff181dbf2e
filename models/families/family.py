"""Model families: pre-processing and decoding around an engine.

A family object wraps one engine and turns images into answers. All methods
are blocking and run in the owning actor's worker thread.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepipe.bus.box import Box
from edgepipe.models.engines.engine import Engine, EngineError
from edgepipe.models.families.boxes import Detection, Fit, fit_frame, to_frame
from edgepipe.models.spec import ModelSpec


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


class DetectorInput:
    """How a frame becomes a detector's input pixels: the manifest's input size and colour order, letterboxed
    or stretched (``FaceDetectorModel.resize_of``). The detector runs it, or the encoder actor ahead of it
    (``input_for``), so that this work overlaps the detector's inference of the frame before."""

    def __init__(self, spec: ModelSpec, stretch: bool) -> None:
        self.spec = spec
        self.stretch = stretch
        h, w, c = spec.input_shape
        self.size = (int(w), int(h))
        self.shape = (int(h), int(w), int(c))

    def prepare(self, image_bgr: np.ndarray) -> Tuple[np.ndarray, Fit]:
        """A BGR frame -> (H x W x C uint8 pixels in the model's colour order, how they map to the frame)."""
        canvas, fit = fit_frame(image_bgr, self.size, self.stretch)
        return to_model_pixels(canvas, self.spec), fit


def input_for(spec: ModelSpec) -> DetectorInput:
    """The input preparation of the face detector ``spec`` (its family must be registered: models.registry)."""
    try:
        cls = DETECTORS[spec.family]
    except KeyError:
        raise EngineError("model %r: no face detector family %r" % (spec.name, spec.family)) from None
    return DetectorInput(spec, cls.resize_of(spec) == "stretch")  # a class registered by its family


class FaceDetectorModel(abc.ABC):
    """The detector template: ``detect`` fits the frame to the input (letterboxed, or stretched when the
    manifest's ``extra.resize`` says so), invokes, decodes and maps the faces back to frame pixels.
    A family implements only ``decode``, and ``landmarks`` when its points are not Box's five."""

    #: the input the frame goes into when the manifest's ``extra.resize`` does not say
    default_resize = "letterbox"
    #: map the box back as a square around its centre (``boxes.to_frame``), not corner by corner
    square_boxes = False

    def __init__(self, spec: ModelSpec, engine: Engine, score_threshold: Optional[float] = None,
                 max_faces: int = 16) -> None:
        self.spec = spec
        self.engine = engine
        # None: the model's own threshold (the manifest's ``min_score``), tuned per detector by
        # ``run.py bench detectors``
        self.score_threshold = float(spec.extra.get("min_score", 0.5)) if score_threshold is None \
            else float(score_threshold)
        self.max_faces = max_faces
        check_input(engine, spec)  # once, at load: every tensor ``detect`` makes has the manifest's shape
        self.input = DetectorInput(spec, self.resize_of(spec) == "stretch")
        self.input_size = self.input.size
        self.stretch = self.input.stretch

    @classmethod
    def resize_of(cls, spec: ModelSpec) -> str:
        """"letterbox" keeps the aspect ratio; "stretch" squeezes the frame into the input (``extra.resize``)."""
        resize = spec.extra.get("resize", cls.default_resize)
        if resize not in ("letterbox", "stretch"):
            raise EngineError("model %r: extra.resize must be \"letterbox\" or \"stretch\", not %r"
                              % (spec.name, resize))
        return resize

    def detect(self, image_bgr: np.ndarray, prepared: Optional[Tuple[np.ndarray, Fit]] = None,
               frame_size: Optional[Tuple[int, int]] = None) -> List[Box]:
        """Faces in frame pixel coordinates, best first.

        ``prepared``: the input pixels and their fit, made ahead from this frame by ``DetectorInput.prepare``
        (the encoder actor); then ``image_bgr`` may be None and ``frame_size`` (w, h) says the frame's size.
        """
        if prepared is None:
            prepared = self.input.prepare(image_bgr)
            fh, fw = image_bgr.shape[:2]
        elif frame_size is not None:
            fw, fh = frame_size
        else:
            fh, fw = image_bgr.shape[:2]
        pixels, fit = prepared
        if tuple(pixels.shape) != self.input.shape:
            raise ValueError("prepared input of shape %s for a %s input" % (list(pixels.shape), list(self.input.shape)))
        outputs = self.engine.invoke([pixels_to_tensor(pixels, self.engine, self.spec)])
        faces = to_frame(self.decode(outputs), fit, self.input_size, (fw, fh), self.square_boxes, self.landmarks)
        return faces[:self.max_faces]

    @abc.abstractmethod
    def decode(self, outputs: Sequence[np.ndarray]) -> List[Detection]:
        """The engine's raw outputs -> faces (box [x1, y1, x2, y2], score, points (K, 2) or None) in [0, 1]
        input coordinates, at or above ``score_threshold``, at most ``max_faces`` after NMS."""

    def landmarks(self, points: np.ndarray) -> List[Tuple[float, float]]:
        """The decoded points, in frame pixels -> Box's five landmarks."""
        return [(float(x), float(y)) for x, y in points]


class ExpressionModel(abc.ABC):
    def __init__(self, spec: ModelSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine
        if engine is not None:  # None: only ``prepare`` (the detector makes the crops)
            check_input(engine, spec)  # once, at load

    @abc.abstractmethod
    def prepare(self, image_bgr: np.ndarray, face: Box) -> np.ndarray:
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
        check_input(engine, spec)  # once, at load
        self.top_k = top_k

    @abc.abstractmethod
    def classify(self, image_bgr: np.ndarray) -> List[Tuple[str, float]]:
        """Top-k (label, probability), best first."""


# family name -> constructor; filled by the family modules on import (see models/registry.py)
DETECTORS: Dict[str, Callable[..., FaceDetectorModel]] = {}
EXPRESSIONS: Dict[str, Callable[..., ExpressionModel]] = {}
CLASSIFIERS: Dict[str, Callable[..., ImageClassifierModel]] = {}
