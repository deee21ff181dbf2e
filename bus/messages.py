"""Typed messages exchanged by the actors.

Every message is a dataclass with a ``KIND`` tag. Fields are plain data
(numbers, strings, lists, dicts, nested dataclasses); an image travels next to
the message as a separate zero-copy frame (the ``image`` field, see codec.py),
never inside msgpack.

Python 3.9 compatible: annotations are written with ``typing`` names so that
``typing.get_type_hints`` can evaluate them on 3.9.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

SCHEMA_VERSION = 1


@dataclass
class Box:
    """A face box in frame pixels, with the optional five landmarks and a truth tag."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0
    landmarks: Optional[List[List[float]]] = None

    def as_list(self) -> List[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass
class TruthFace:
    """What a source knows about a face it drew: its box and expression."""

    box: List[float]
    expression: str


@dataclass
class Frame:
    """A raw camera frame; ``image`` is an HxWxC uint8 BGR array sent out of band."""

    KIND = "frame"
    frame_id: int
    t_capture: float  # time.monotonic() at capture
    source: str
    image: Any = None
    truth: Optional[List[TruthFace]] = None


@dataclass
class EncodedFrame:
    """A frame as it crosses into inference: ``format`` is "raw" (image is an array) or "jpeg" (bytes)."""

    KIND = "encoded"
    frame_id: int
    t_capture: float
    format: str
    width: int
    height: int
    image: Any = None
    truth: Optional[List[TruthFace]] = None


@dataclass
class Detections:
    """The faces found in one frame. ``expect_expressions`` is the number of FER jobs sent."""

    KIND = "detections"
    frame_id: int
    t_capture: float
    t_detect: float
    width: int
    height: int
    faces: List[Box]
    expect_expressions: int
    truth: Optional[List[TruthFace]] = None
    labels: Optional[List[List[Any]]] = None  # whole-frame classification: [[label, prob], ...]


@dataclass
class FaceJob:
    """One face to classify: the crop, already in the FER model's input size and colour order."""

    KIND = "facejob"
    frame_id: int
    face_index: int
    n_faces: int
    t_capture: float
    image: Any = None


@dataclass
class Expression:
    """The expression of one face of one frame."""

    KIND = "expression"
    frame_id: int
    face_index: int
    label: str
    confidence: float
    worker: str
    busy_ms: float
    scores: Optional[List[float]] = None
    error: str = ""


@dataclass
class FaceResult:
    box: List[float]
    score: float
    expression: Optional[str] = None  # this frame's label
    confidence: Optional[float] = None
    track: int = -1  # the face's track across frames
    smoothed: Optional[str] = None  # the track's rolling majority vote


@dataclass
class Result:
    """A finished frame: detections joined with expressions."""

    KIND = "result"
    frame_id: int
    t_capture: float
    t_result: float
    width: int
    height: int
    faces: List[FaceResult]
    partial: bool
    in_order: bool
    truth: Optional[List[TruthFace]] = None
    labels: Optional[List[List[Any]]] = None


@dataclass
class Metric:
    """A periodic snapshot of one actor's counters and timings."""

    KIND = "metric"
    actor: str
    pid: int
    t: float
    counters: Dict[str, int] = field(default_factory=dict)
    gauges: Dict[str, float] = field(default_factory=dict)
    final: bool = False


@dataclass
class Control:
    """Lifecycle messages: ``eos`` (end of stream, with the last frame id), ``ready``, ``stop``."""

    KIND = "control"
    command: str
    sender: str = ""
    last_frame_id: int = -1
    info: Dict[str, Any] = field(default_factory=dict)


MESSAGE_TYPES = (Frame, EncodedFrame, Detections, FaceJob, Expression, Result, Metric, Control)
BY_KIND = {cls.KIND: cls for cls in MESSAGE_TYPES}
