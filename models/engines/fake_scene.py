"""The visual code shared by the synthetic camera and the fake engine.

The synthetic source draws faces as ellipses of one skin colour that the
background never uses, with a grey patch in the middle whose grey level
encodes the face's expression. The fake engine reads them back from the
model's input tensor, so that a test can check that every result lands on
the right frame and face: a ``Scene`` is one input image as the fake engine
sees it, and a model family's ``fake`` (``models/families/family.py``) turns
it into the outputs its model would give. Nothing else in the project
depends on this code.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np

from edgepipe.models.families.labels import EXPRESSIONS

FACE_BGR = (70, 160, 235)  # a saturated skin tone: the background is grey-ish and never has it
EYE_BGR = (40, 30, 30)
LEVELS = [30 + 30 * i for i in range(len(EXPRESSIONS))]  # grey level of the patch, per expression
PATCH = (0.3, 0.7)  # the patch spans this fraction of the face box, both axes


def draw_face(image: np.ndarray, box: Tuple[int, int, int, int], expression: int) -> None:
    """Draw a face filling ``box`` (x1, y1, x2, y2, exclusive) with the given expression index."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    center = (x1 + w // 2, y1 + h // 2)
    cv2.ellipse(image, center, (w // 2, h // 2), 0, 0, 360, FACE_BGR, thickness=-1, lineType=cv2.LINE_8)
    level = LEVELS[expression]
    px1, px2 = x1 + int(w * PATCH[0]), x1 + int(w * PATCH[1])
    py1, py2 = y1 + int(h * PATCH[0]), y1 + int(h * PATCH[1])
    image[py1:py2, px1:px2] = level
    r = max(2, w // 14)
    for ex in (x1 + int(w * 0.3), x1 + int(w * 0.7)):
        cv2.circle(image, (ex, y1 + int(h * 0.18)), r, EYE_BGR, thickness=-1)


def find_faces(rgb: np.ndarray, min_area: int = 12) -> List[Tuple[float, float, float, float]]:
    """Boxes (x1, y1, x2, y2) normalised to [0, 1] of the faces drawn in an RGB image."""
    r = rgb[:, :, 0].astype(np.int16)
    g = rgb[:, :, 1].astype(np.int16)
    b = rgb[:, :, 2].astype(np.int16)
    fr, fg, fb = FACE_BGR[2], FACE_BGR[1], FACE_BGR[0]
    mask = ((abs(r - fr) < 40) & (abs(g - fg) < 40) & (abs(b - fb) < 40)).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    h, w = mask.shape
    boxes = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        if bw * bh < min_area:
            continue
        boxes.append((x / w, y / h, (x + bw) / w, (y + bh) / h))
    boxes.sort()
    return boxes


def read_expression(pixels: np.ndarray) -> int:
    """Expression index of a face crop (H, W, C pixels, any colour order, centred on the face)."""
    h, w = pixels.shape[:2]
    cy, cx = h // 2, w // 2
    dy, dx = max(1, h // 10), max(1, w // 10)
    # the median, not the mean: a crop clipped at the frame border is off-centre
    level = float(np.median(pixels[cy - dy:cy + dy, cx - dx:cx + dx]))
    return int(np.argmin([abs(level - v) for v in LEVELS]))


class Scene:
    """One model input image (H x W x C, 0..255, in the model's colour order ``color``) as the fake engine
    reads it back: the faces drawn in it, the expression drawn on a face crop, its mean level."""

    def __init__(self, pixels: np.ndarray, color: str = "rgb") -> None:
        self.pixels = pixels
        self.color = color
        self._faces: Optional[List[Tuple[float, float, float, float]]] = None

    def faces(self) -> List[Tuple[float, float, float, float]]:
        """Boxes (x1, y1, x2, y2) in [0, 1] of the faces drawn in the image, in ``find_faces``' order."""
        if self._faces is None:
            px = self.pixels
            if px.dtype != np.uint8:
                px = np.clip(np.rint(px), 0, 255).astype(np.uint8)
            if self.color == "bgr":
                px = px[:, :, ::-1]
            self._faces = find_faces(px) if self.color != "gray" else []
        return self._faces

    def expression(self) -> str:
        """The canonical name of the expression drawn on a face crop (``labels.EXPRESSIONS``)."""
        return EXPRESSIONS[read_expression(self.pixels)]

    def mean_level(self) -> float:
        """The mean of every pixel value of the image."""
        return float(np.mean(self.pixels))
