"""Facial-expression models trained on faces aligned by 5 landmarks (FER112).

``prepare`` warps the face with the similarity transform (rotation, uniform
scale, translation; ``cv2.estimateAffinePartial2D``) that maps its 5 landmarks
(right eye, left eye, nose, right and left mouth corners, the subject's right
first) onto the standard 112x112 ArcFace template, as OpenCV Zoo's
MobileFaceNet FER expects. A face without landmarks (e.g. from Coral's SSD
face model) gets a square crop instead, less accurate.
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


def similarity(landmarks: Sequence[Tuple[float, float]], size: Tuple[int, int] = (112, 112)) -> Optional[np.ndarray]:
    """The 2x3 similarity transform from 5 landmarks to the template scaled to ``size`` (w, h)."""
    src = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    if src.shape[0] != 5 or not np.all(np.isfinite(src)):
        return None
    dst = TEMPLATE_112 * np.array([size[0] / 112.0, size[1] / 112.0], dtype=np.float32)
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
