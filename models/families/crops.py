"""Face crops: square, with a margin, clipped at the frame border."""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from edgepipe.bus.box import Box


def square_box(face: Box, margin: float, frame_w: int, frame_h: int) -> Tuple[int, int, int, int]:
    """A square around the face, ``margin`` (fraction of the side) added, clipped to the frame."""
    cx = (face.x1 + face.x2) / 2.0
    cy = (face.y1 + face.y2) / 2.0
    side = max(face.width, face.height) * (1.0 + margin)
    x1 = int(round(cx - side / 2.0))
    y1 = int(round(cy - side / 2.0))
    x2 = int(round(cx + side / 2.0))
    y2 = int(round(cy + side / 2.0))
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(frame_w, x2), min(frame_h, y2)
    return x1, y1, max(x1 + 1, x2), max(y1 + 1, y2)


def square_crop(image: np.ndarray, face: Box, margin: float, size: Tuple[int, int]) -> np.ndarray:
    """Crop the square around ``face`` and resize it to ``size`` (w, h)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = square_box(face, margin, w, h)
    crop = image[y1:y2, x1:x2]
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if crop.shape[0] > size[1] else cv2.INTER_LINEAR)
