"""Facial-expression models trained on faces aligned by 5 landmarks (FER112).

``prepare`` warps the face with the similarity transform (rotation, uniform
scale, translation; ``cv2.estimateAffinePartial2D``) that maps its 5 landmarks
(right eye, left eye, nose, right and left mouth corners, the subject's right
first) onto the standard 112x112 ArcFace template, as OpenCV Zoo's
MobileFaceNet FER expects. A face without landmarks (e.g. from Coral's SSD
face model) gets a square crop instead, less accurate.

BlazeFace gives no mouth corners: its family (``blazeface.py``) estimates them
from the mouth centre, parallel to the eyes, so that its faces carry 5 points
too. ``similarity`` also takes 4 points (eyes, nose, mouth centre) and fits
them to the template's eyes, nose and mouth centre (``TEMPLATE_4``). On the 18
faces of the shared photos, FER112 gives RetinaFace's label on all 18 with the
estimated corners and on 17 with the 4-point fit (the disgust face reads as
neutral), so the pipeline keeps the 5 points (``python run.py bench
fer112-align``, docs/fer112-alignment.md).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepipe.bus.box import Box
from edgepipe.models.families.crops import square_crop
from edgepipe.models.families.family import to_model_pixels
from edgepipe.models.families.fer import CropOptions, SquareCropFer

TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
# right eye, left eye, nose, mouth centre (the middle of the template's mouth corners)
TEMPLATE_4 = np.concatenate([TEMPLATE_112[:3], TEMPLATE_112[3:].mean(axis=0, keepdims=True)])


def similarity(landmarks: Sequence[Tuple[float, float]], size: Tuple[int, int] = (112, 112)) -> Optional[np.ndarray]:
    """The 2x3 similarity transform from 5 landmarks (or 4: eyes, nose, mouth centre) to the template
    scaled to ``size`` (w, h)."""
    src = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    if src.shape[0] not in (4, 5) or not np.all(np.isfinite(src)):
        return None
    template = TEMPLATE_112 if src.shape[0] == 5 else TEMPLATE_4
    dst = template * np.array([size[0] / 112.0, size[1] / 112.0], dtype=np.float32)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    return m


def align_face(image_bgr: np.ndarray, landmarks: Sequence[Tuple[float, float]],
               size: Tuple[int, int] = (112, 112)) -> Optional[np.ndarray]:
    """The aligned face (BGR, ``size``), or None when the landmarks give no transform."""
    m = similarity(landmarks, size)
    if m is None:
        return None
    return cv2.warpAffine(image_bgr, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


class AlignedOptions(CropOptions):
    crop_margin: float = 0.1  # the square crop of a face without landmarks


class AlignedFer(SquareCropFer):
    family = "aligned112"
    Options = AlignedOptions

    def prepare(self, image_bgr: np.ndarray, face: Box) -> np.ndarray:
        h, w, _ = self.spec.input_shape
        aligned = None
        if face.landmarks and len(face.landmarks) == 5:
            aligned = align_face(image_bgr, face.landmarks, (w, h))
        if aligned is None:
            aligned = square_crop(image_bgr, face, self.options.crop_margin, (w, h))
        return to_model_pixels(aligned, self.spec)
