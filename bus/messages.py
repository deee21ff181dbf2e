"""Typed messages exchanged by the actors: one msgspec tagged union.

Every message kind is a ``msgspec.Struct`` subclass of ``Message``, tagged with
its kind name (``KIND``, also the struct's tag and the PUB/SUB topic), and
``Message`` is one tagged union (``AnyMessage``) that ``bus.codec`` decodes with
one typed decoder. Types and ``Meta`` constraints reject wrong types, unknown
and missing fields, negative frame ids and non-finite numbers where a number
must be finite (times, box coordinates, scores); ``check`` adds the rules a
type cannot say (a box inside its frame, a face index below the face count).

An image travels next to the message as a separate zero-copy frame (the
``image`` field, see codec.py), never inside msgpack.
"""
from __future__ import annotations

import sys
from typing import Annotated, Any, Callable, Dict, List, Literal, Optional, Tuple, Union

import msgspec
from msgspec import Meta

from edgepipe.bus.box import Box, Finite

SCHEMA_VERSION = 5

Time = Finite  # time.monotonic() seconds
Ms = Annotated[float, Meta(ge=0.0, le=sys.float_info.max)]  # a duration in milliseconds
Prob = Annotated[float, Meta(ge=0.0, le=1.0)]  # a probability (NaN is refused)
FrameId = Annotated[int, Meta(ge=0)]
Index = Annotated[int, Meta(ge=0)]
Count = Annotated[int, Meta(ge=0)]
Pixels = Annotated[int, Meta(ge=1, le=1 << 16)]  # a frame's width or height
Name = Annotated[str, Meta(max_length=256)]
Camera = Annotated[str, Meta(max_length=64)]  # the camera a frame came from ([cameras.NAME]; "default")
DEFAULT_CAMERA = "default"

BOX_MARGIN = 0.5
"""How far (as a fraction of the frame's size) a box may reach outside its frame."""


class Message(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, omit_defaults=True):
    """Base of every message kind; ``KIND`` is the tag (the ``kind`` field on the wire)."""

    KIND = ""


class TruthFace(msgspec.Struct, forbid_unknown_fields=True):
    """What a source knows about a face it drew: its box and expression.

    Truth is the answer key of a test source: capture hands it to the recorder in the main process
    (both always run there), and it never crosses the bus.
    """

    box: Box  # score 1.0
    expression: Name


class Frame(Message, tag="frame"):
    """A raw camera frame; ``image`` is an HxWxC uint8 BGR array sent out of band."""

    frame_id: FrameId
    t_capture: Time  # time.monotonic() at capture
    source: str
    image: Any = None
    camera: Camera = DEFAULT_CAMERA


Scale = Annotated[float, Meta(gt=0.0, le=sys.float_info.max)]


class EncodedFrame(Message, tag="encoded"):
    """A frame as it crosses into inference: ``format`` is "raw" (image is an array) or "jpeg" (bytes).

    ``tensor``, when the encoder prepared it, is the detector's input made from this frame (resized,
    letterboxed or stretched, in the model's colour order: H x W x C uint8), a second side frame, and
    ``fit`` says how it maps: input pixel (u, v) is frame pixel ((u - px) / sx, (v - py) / sy)."""

    frame_id: FrameId
    t_capture: Time
    format: Literal["raw", "jpeg"]
    width: Pixels
    height: Pixels
    image: Any = None
    fit: Optional[Tuple[Scale, Scale, Finite, Finite]] = None  # (sx, sy, px, py)
    tensor: Any = None
    camera: Camera = DEFAULT_CAMERA


class Detections(Message, tag="detections"):
    """The faces found in one frame. ``expect_expressions`` is the number of FER jobs sent."""

    frame_id: FrameId
    t_capture: Time
    t_detect: Time
    width: Pixels
    height: Pixels
    faces: List[Box]
    expect_expressions: Count
    labels: Optional[List[Tuple[Name, Finite]]] = None  # whole-frame classification: [(label, prob), ...]
    camera: Camera = DEFAULT_CAMERA


class FaceJob(Message, tag="facejob"):
    """Faces of one frame to classify, as one job: ``image`` stacks their crops (count x H x W x C, already
    in the FER model's input size and colour order); they are faces ``face_index`` .. ``face_index + count
    - 1`` of the frame's ``n_faces``."""

    frame_id: FrameId
    face_index: Index
    n_faces: Annotated[int, Meta(ge=1)]
    t_capture: Time
    image: Any = None
    camera: Camera = DEFAULT_CAMERA


class FaceLabel(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, array_like=True):
    """One face's expression: the label, its probability and every label's (the model's order)."""

    label: Name
    confidence: Prob
    scores: Optional[List[Finite]] = None


class Expression(Message, tag="expression"):
    """The expressions of one job: faces ``face_index`` .. ``face_index + count - 1`` of one frame, in
    order (``error`` set: none has a label, ``faces`` is empty, and the frame ends partial)."""

    frame_id: FrameId
    face_index: Index
    count: Annotated[int, Meta(ge=1)]
    worker: Name
    busy_ms: Ms
    faces: List[FaceLabel] = []
    error: str = ""
    camera: Camera = DEFAULT_CAMERA


class FaceResult(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    box: Box  # with the detector's score
    expression: Optional[Name] = None  # this frame's label
    confidence: Optional[Prob] = None
    track: Annotated[int, Meta(ge=-1)] = -1  # the face's track across frames
    smoothed: Optional[Name] = None  # the track's rolling majority vote


class Result(Message, tag="result"):
    """A finished frame: detections joined with expressions."""

    frame_id: FrameId
    t_capture: Time
    t_result: Time
    width: Pixels
    height: Pixels
    faces: List[FaceResult]
    partial: bool
    in_order: bool
    labels: Optional[List[Tuple[Name, Finite]]] = None
    camera: Camera = DEFAULT_CAMERA


class Done(Message, tag="done"):
    """A frame left the pipeline (its ``Result`` went out just before): capture's credit, without the faces."""

    frame_id: FrameId
    camera: Camera = DEFAULT_CAMERA


class Metric(Message, tag="metric"):
    """A snapshot of one actor's counters and timings; ``final`` for the last one, when the actor ends."""

    actor: Name
    pid: Count
    t: Time
    counters: Dict[str, int] = {}
    gauges: Dict[str, float] = {}
    final: bool = False


class MetricActor(msgspec.Struct):
    """The one field of a ``metric`` body that a relay reads (the metrics hub, per actor); the rest is skipped
    undecoded, and the consumers decode it whole."""

    actor: Name


class Eos(Message, tag="eos"):
    """End of stream: ``sender`` sent ``sent`` messages of its output kind, the last one for ``last_frame_id``."""

    sender: Name
    last_frame_id: Annotated[int, Meta(ge=-1)]  # -1: no frame at all
    sent: Count
    camera: Camera = DEFAULT_CAMERA  # whose stream ended ("" from the aggregator: every camera's, several cameras)


class Ready(Message, tag="ready"):
    """A process group runs its actors and its publishers have their subscribers."""

    group: Name
    pid: Count
    python: str
    version: Name
    actors: List[Name] = []
    models: Dict[Name, Name] = {}
    placement: Dict[Name, str] = {}  # role -> where it runs ("fer fer64 on cpu (auto: ...)")


class Stopped(Message, tag="stopped"):
    """A process group ended with exit code ``rc``; its actors' final ``Metric`` messages came just before."""

    group: Name
    rc: int
    actors: List[Name] = []


MESSAGE_TYPES = (Frame, EncodedFrame, Detections, FaceJob, Expression, Result, Done, Metric, Eos, Ready, Stopped)
AnyMessage = Union[Frame, EncodedFrame, Detections, FaceJob, Expression, Result, Done, Metric, Eos, Ready, Stopped]
for _cls in MESSAGE_TYPES:
    _cls.KIND = _cls.__struct_config__.tag
BY_KIND = {cls.KIND: cls for cls in MESSAGE_TYPES}
WITH_IMAGE = frozenset(cls for cls in MESSAGE_TYPES if "image" in cls.__struct_fields__)
WITH_TENSOR = frozenset(cls for cls in MESSAGE_TYPES if "tensor" in cls.__struct_fields__)


# ---------------------------------------------------------------- rules a type cannot say

def _bounds(width: int, height: int) -> Tuple[float, float, float, float]:
    mx, my = BOX_MARGIN * width, BOX_MARGIN * height
    return -mx, width + mx, -my, height + my


def _box_problem(x1: float, y1: float, x2: float, y2: float, width: int, height: int, what: str) -> Optional[str]:
    lo_x, hi_x, lo_y, hi_y = _bounds(width, height)
    if lo_x <= x1 <= x2 <= hi_x and lo_y <= y1 <= y2 <= hi_y:
        return None
    if x2 < x1 or y2 < y1:
        return "%s %s has x2 < x1 or y2 < y1" % (what, [x1, y1, x2, y2])
    return "%s %s is far outside the %dx%d frame" % (what, [x1, y1, x2, y2], width, height)


def _boxes_problem(boxes: List[Box], width: int, height: int, what: str) -> Optional[str]:
    lo_x, hi_x, lo_y, hi_y = _bounds(width, height)
    for i, b in enumerate(boxes):
        if not (lo_x <= b.x1 <= b.x2 <= hi_x and lo_y <= b.y1 <= b.y2 <= hi_y):
            return _box_problem(b.x1, b.y1, b.x2, b.y2, width, height, "%s[%d]" % (what, i))
    return None


def _check_encoded(m: EncodedFrame) -> Optional[str]:
    if m.image is not None:
        shape = getattr(m.image, "shape", None)
        if (m.format == "raw") != (shape is not None):
            return "a %s frame with a %s image" % (m.format, type(m.image).__name__)
        if shape is not None and tuple(shape[:2]) != (m.height, m.width):
            return "image shape %s for a %dx%d frame" % (list(shape), m.width, m.height)
    if (m.tensor is None) != (m.fit is None):
        return "a detector input needs both its tensor and its fit"
    if m.tensor is not None:
        shape = getattr(m.tensor, "shape", None)
        if shape is None or len(shape) != 3 or m.tensor.dtype != "uint8":
            return "the detector input is not an H x W x C uint8 array"
    return None


def _check_detections(m: Detections) -> Optional[str]:
    if m.expect_expressions > len(m.faces):
        return "expects %d expressions for %d faces" % (m.expect_expressions, len(m.faces))
    return _boxes_problem(m.faces, m.width, m.height, "faces")


def _check_facejob(m: FaceJob) -> Optional[str]:
    if m.face_index >= m.n_faces:
        return "face_index %d of %d faces" % (m.face_index, m.n_faces)
    shape = getattr(m.image, "shape", None)
    if m.image is not None and (shape is None or len(shape) != 4):
        return "the crops are not a stack (count x H x W x C): %s" % (list(shape) if shape else type(m.image))
    if shape is not None and m.face_index + shape[0] > m.n_faces:
        return "faces %d..%d of %d faces" % (m.face_index, m.face_index + shape[0] - 1, m.n_faces)
    return None


def _check_expression(m: Expression) -> Optional[str]:
    if m.error and m.faces:
        return "an error and %d labels" % len(m.faces)
    if not m.error and len(m.faces) != m.count:
        return "%d labels for %d faces" % (len(m.faces), m.count)
    return None


def _check_result(m: Result) -> Optional[str]:
    return _boxes_problem([f.box for f in m.faces], m.width, m.height, "faces")


CHECKS: Dict[type, Callable[[Any], Optional[str]]] = {
    EncodedFrame: _check_encoded,
    Detections: _check_detections,
    FaceJob: _check_facejob,
    Expression: _check_expression,
    Result: _check_result,
}
"""Per kind: a function returning what is wrong with a decoded message, or None (see codec.py)."""
