"""Model families: pre-processing and decoding around an engine.

A family object wraps one engine and turns images into answers. All methods
are blocking and run in the owning actor's worker thread.

A family registers itself: a concrete subclass of ``FaceDetectorModel``,
``ExpressionModel`` or ``ImageClassifierModel`` that sets ``family = "name"``
lands in that role's table (``DETECTORS``, ``EXPRESSIONS``, ``CLASSIFIERS``)
when its module is imported, and ``models/families/discovery.py`` imports every
module of this folder (and of the plugin folders). Its manifest options are a
typed struct, its ``Options``; what the fake engine answers for it is its
``fake_outputs`` and ``fake``.
"""
from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Literal, Optional, Sequence, Tuple, Type

import cv2
import msgspec
import numpy as np

from edgepipe.bus.box import Box
from edgepipe.models.engines.engine import Engine, EngineError
from edgepipe.models.engines.fake_scene import Scene
from edgepipe.models.families.boxes import Detection, Fit, fit_frame, to_frame
from edgepipe.models.families.labels import canonical
from edgepipe.models.spec import ModelSpec
from edgepipe.models.tensor import TensorSpec


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


class NoOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The options of a family that takes none: the manifest's ``options`` must be empty."""


# family name -> its class, each role apart and all together; filled as the family modules are imported
DETECTORS: Dict[str, Type["FaceDetectorModel"]] = {}
EXPRESSIONS: Dict[str, Type["ExpressionModel"]] = {}
CLASSIFIERS: Dict[str, Type["ImageClassifierModel"]] = {}
FAMILIES: Dict[str, Type["Family"]] = {}


class Family:
    """What every model family has: the name it registers under, its typed options, what the fake engine
    answers for it. A role's base (below) names its table; a subclass that sets ``family`` is registered."""

    #: the name a manifest entry's ``family`` gives; a class that sets it registers itself
    family: ClassVar[str] = ""
    #: the family's options (a msgspec Struct, ``forbid_unknown_fields=True``): the manifest entry's ``options``
    Options: ClassVar[Type[msgspec.Struct]] = NoOptions
    #: the role's table (set by the role's base class)
    table: ClassVar[Dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("family")
        if not name:
            return  # a base or a helper: not a family of its own
        if cls.table is Family.table:
            raise TypeError("model family %r: subclass FaceDetectorModel, ExpressionModel or ImageClassifierModel"
                            % name)
        have = FAMILIES.get(name)
        if have is not None and have is not cls:
            raise TypeError("model family %r is defined twice: by %s.%s and by %s.%s"
                            % (name, have.__module__, have.__qualname__, cls.__module__, cls.__qualname__))
        FAMILIES[name] = cls
        cls.table[name] = cls

    @classmethod
    def options_of(cls, spec: ModelSpec) -> Any:
        """The manifest entry's ``options`` as this family's ``Options``; EngineError naming the model and
        the option when one is unknown or of the wrong type."""
        try:
            return msgspec.convert(spec.options, cls.Options)
        except msgspec.ValidationError as exc:
            raise EngineError("model %r (family %r): %s; its options: %s"
                              % (spec.name, spec.family, _option_error(str(exc)),
                                 ", ".join(cls.Options.__struct_fields__) or "none")) from None

    @classmethod
    def fake_outputs(cls, spec: ModelSpec) -> Optional[List[TensorSpec]]:
        """The output tensors the fake engine declares for ``spec``; None: the fake engine cannot emulate it."""
        return None

    @classmethod
    def fake(cls, spec: ModelSpec, scene: Scene) -> List[np.ndarray]:
        """The fake engine's outputs for one input image (batch of one) whose drawn faces ``scene`` reads."""
        raise EngineError("the fake engine cannot emulate model %r (family %r)" % (spec.name, spec.family))


def _option_error(message: str) -> str:
    """msgspec's message -> one that names the option: ``unknown option 'x'``, ``option 'x': Expected ...``."""
    unknown = re.search(r"unknown field `([^`]*)`", message)
    if unknown:
        return "unknown option %r in the manifest's options" % unknown.group(1)
    at = re.search(r"^(.*) - at `\$\.([A-Za-z0-9_]+)(.*)`$", message)
    if at:
        return "option %r in the manifest's options: %s" % (at.group(2) + at.group(3), at.group(1))
    return "bad manifest options: %s" % message


def input_for(spec: ModelSpec) -> DetectorInput:
    """The input preparation of the face detector ``spec`` (its family must be registered: models.registry)."""
    try:
        cls = DETECTORS[spec.family]
    except KeyError:
        raise EngineError("model %r: no face detector family %r" % (spec.name, spec.family)) from None
    return DetectorInput(spec, cls.resize_of(spec) == "stretch")  # a class registered by its family


class DetectorOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every face detector's options (a family's ``Options`` subclasses it)."""

    min_score: float = 0.5  # the model's own score threshold, tuned per detector by ``run.py bench detectors``
    resize: Optional[Literal["letterbox", "stretch"]] = None  # None: the family's ``default_resize``


class FaceDetectorModel(Family, abc.ABC):
    """The detector template: ``detect`` fits the frame to the input (letterboxed, or stretched when the
    manifest's ``options.resize`` says so), invokes, decodes and maps the faces back to frame pixels.
    A family implements only ``decode``, and ``landmarks`` when its points are not Box's five."""

    table = DETECTORS
    Options = DetectorOptions
    #: the input the frame goes into when the manifest's ``options.resize`` does not say
    default_resize = "letterbox"
    #: map the box back as a square around its centre (``boxes.to_frame``), not corner by corner
    square_boxes = False

    def __init__(self, spec: ModelSpec, engine: Engine, score_threshold: Optional[float] = None,
                 max_faces: int = 16) -> None:
        self.spec = spec
        self.engine = engine
        self.options = self.options_of(spec)
        # None: the model's own threshold (the manifest's ``options.min_score``)
        self.score_threshold = float(self.options.min_score if score_threshold is None else score_threshold)
        self.max_faces = max_faces
        check_input(engine, spec)  # once, at load: every tensor ``detect`` makes has the manifest's shape
        self.input = DetectorInput(spec, self.resize_of(spec) == "stretch")
        self.input_size = self.input.size
        self.stretch = self.input.stretch

    @classmethod
    def resize_of(cls, spec: ModelSpec) -> str:
        """"letterbox" keeps the aspect ratio; "stretch" squeezes the frame into the input (``options.resize``)."""
        return cls.options_of(spec).resize or cls.default_resize

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


class ExpressionModel(Family, abc.ABC):
    table = EXPRESSIONS

    def __init__(self, spec: ModelSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine
        self.options = self.options_of(spec)
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

    @classmethod
    def fake_outputs(cls, spec: ModelSpec) -> Optional[List[TensorSpec]]:
        """One score per label."""
        return one_per_label(spec)

    @classmethod
    def fake(cls, spec: ModelSpec, scene: Scene) -> List[np.ndarray]:
        """0.9 for the expression drawn on the crop, the rest shared by the other labels."""
        labels = [canonical(x) for x in (spec.labels or [])]
        probs = np.full((1, len(labels)), 0.1 / max(1, len(labels) - 1), np.float32)
        want = scene.expression()
        if want in labels:
            probs[0, labels.index(want)] = 0.9
        return [probs]


def square_side(spec: ModelSpec, what: str) -> int:
    """The side of a model's square input (ValueError naming ``what`` when it is not square)."""
    h, w = spec.input_shape[0], spec.input_shape[1]
    if h != w:
        raise ValueError("%s input must be square, got %dx%d" % (what, w, h))
    return int(w)


def one_per_label(spec: ModelSpec) -> List[TensorSpec]:
    """The fake engine's output of a model that gives one value per label of its spec."""
    if not spec.labels:
        raise EngineError("fake engine: model %r has no labels" % spec.name)
    return [TensorSpec("scores", (1, len(spec.labels)), "float32")]


class ImageClassifierModel(Family, abc.ABC):
    table = CLASSIFIERS

    def __init__(self, spec: ModelSpec, engine: Engine, top_k: int = 5) -> None:
        self.spec = spec
        self.engine = engine
        self.options = self.options_of(spec)
        check_input(engine, spec)  # once, at load
        self.top_k = top_k

    @abc.abstractmethod
    def classify(self, image_bgr: np.ndarray) -> List[Tuple[str, float]]:
        """Top-k (label, probability), best first."""

    @classmethod
    def fake_outputs(cls, spec: ModelSpec) -> Optional[List[TensorSpec]]:
        """One logit per label."""
        return one_per_label(spec)

    @classmethod
    def fake(cls, spec: ModelSpec, scene: Scene) -> List[np.ndarray]:
        """A logit of 8 for the class the image's mean level picks (its index modulo the class count)."""
        outputs = cls.fake_outputs(spec) or []
        n = int(outputs[0].shape[1])
        logits = np.zeros((1, n), np.float32)
        logits[0, int(scene.mean_level()) % n] = 8.0
        return [logits]
