"""The one box type: a face in frame pixels, from a detector's output through the wire to the sinks.

A tiny module that ``bus.messages`` and ``models`` both import (``models`` may import from ``bus``;
``bus`` imports nothing from ``models``). On the wire a box is a compact msgpack array
``[x1, y1, x2, y2, score]``. A detector's landmarks ride on the same object as a plain attribute
that is never encoded: they stay in the detector process, which shapes the FER crop with them.
"""
from __future__ import annotations

import sys
from typing import Annotated, List, Optional, Tuple

import msgspec
from msgspec import Meta

# A float that must be finite: NaN fails both comparisons, +-inf one of them.
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]


class Box(msgspec.Struct, array_like=True, forbid_unknown_fields=True, dict=True):
    """A face in frame pixels: (x1, y1) top-left, (x2, y2) bottom-right, and the detector's ``score``.

    ``landmarks`` (not a field: never on the wire, None unless a detector set it) are five (x, y)
    points in frame pixels, in the order right eye, left eye, nose tip, right mouth corner, left
    mouth corner (the subject's right, i.e. the left of the image), as the 112x112 alignment
    template expects.
    """

    x1: Finite
    y1: Finite
    x2: Finite
    y2: Finite
    score: Finite

    landmarks = None  # type: Optional[List[Tuple[float, float]]]

    @classmethod
    def with_landmarks(cls, x1: float, y1: float, x2: float, y2: float, score: float,
                       landmarks: Optional[List[Tuple[float, float]]]) -> "Box":
        box = cls(x1, y1, x2, y2, score)
        if landmarks is not None:
            box.landmarks = landmarks
        return box

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def as_list(self) -> List[float]:
        """The corners as ``[x1, y1, x2, y2]`` (what the JSON sinks write, what ``iou`` takes)."""
        return [self.x1, self.y1, self.x2, self.y2]
