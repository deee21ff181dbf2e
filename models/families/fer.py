"""Facial-expression models that take a square face crop (FER64 and similar).

Input: the face crop, square with a margin, resized to the model input, in
the model's colour order; output: 7 scores (softmax or logits) in the order of
the model's label list.
"""
from __future__ import annotations

from typing import List

import msgspec
import numpy as np

from edgepipe.bus.box import Box
from edgepipe.models.families.crops import square_crop
from edgepipe.models.families.family import ExpressionModel, Label, pixels_to_tensor, to_model_pixels


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Scores that already sum to 1 are kept; logits go through a softmax."""
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if np.all(s >= 0) and abs(float(s.sum()) - 1.0) < 0.02:
        return s
    return softmax(s)


class CropOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    crop_margin: float = 0.2  # the square crop's margin around the face box, a fraction of its side


class SquareCropFer(ExpressionModel):
    family = "square_crop"
    Options = CropOptions

    def prepare(self, image_bgr: np.ndarray, face: Box) -> np.ndarray:
        h, w, _ = self.spec.input_shape
        crop = square_crop(image_bgr, face, self.options.crop_margin, (w, h))
        return to_model_pixels(crop, self.spec)

    def classify(self, crop: np.ndarray) -> Label:
        return self.classify_batch(crop[None])[0]

    def classify_batch(self, crops: np.ndarray) -> List[Label]:
        """Labels of a stack of crops (N, H, W, C): one batched invoke where the engine can, else N."""
        tensor = np.concatenate([pixels_to_tensor(c, self.engine, self.spec) for c in crops])
        out = np.asarray(self.engine.invoke_batch([tensor])[0])
        return [self._label(row) for row in out.reshape(len(crops), -1)]

    def _label(self, raw: np.ndarray) -> Label:
        probs = to_probabilities(self.engine.outputs[0].dequantize(np.asarray(raw)))
        labels = self.spec.labels or []
        i = int(np.argmax(probs))
        name = labels[i] if i < len(labels) else str(i)
        return Label(name, float(probs[i]), [float(p) for p in probs])
