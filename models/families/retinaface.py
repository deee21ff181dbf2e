"""RetinaFace MobileNet-0.25, int8, 320x320 (``retinaface_mnet025_320_int8.tflite``).

Input BGR, value = pixel - 128 (int8, scale 1, zero point -128). Outputs loc
[1, 4200, 4], conf [1, 4200, 2] and landmarks [1, 4200, 10], told apart by their
last dimension. Priors: min sizes [[16, 32], [64, 128], [256, 512]] on steps
[8, 16, 32]; decoding with variances [0.1, 0.2]; softmax on conf; hard NMS 0.4.
The frame is letterboxed (aspect kept, black padding) by
``FaceDetectorModel.detect``, so boxes stay right on non-square frames.

Landmark order: the image-left eye (the subject's right), the image-right eye,
nose, image-left mouth corner, image-right mouth corner: the same order as
Box's (subject's right eye first), so they map one to one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgepipe.models.families.boxes import Detection, nms
from edgepipe.models.families.family import DetectorOptions, FaceDetectorModel, square_side
from edgepipe.models.spec import ModelSpec


def priors(size: int, min_sizes: Sequence[Sequence[int]], steps: Sequence[int]) -> np.ndarray:
    """Prior boxes (N, 4) as (cx, cy, w, h) in [0, 1], in RetinaFace's PriorBox order."""
    out = []
    for sizes, step in zip(min_sizes, steps):
        fm = int(np.ceil(size / float(step)))
        for i in range(fm):
            for j in range(fm):
                for m in sizes:
                    out.append(((j + 0.5) * step / size, (i + 0.5) * step / size, m / float(size), m / float(size)))
    return np.asarray(out, dtype=np.float32)


def softmax2(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def decode(loc: np.ndarray, conf: np.ndarray, landms: np.ndarray, prior: np.ndarray,
           variances: Sequence[float], min_score: float, nms_threshold: float, max_faces: int):
    """Real-valued outputs -> list of (box [x1,y1,x2,y2], score, landmarks (5, 2)) in [0, 1]."""
    loc = loc.reshape(-1, 4)
    scores = softmax2(conf.reshape(-1, 2))[:, 1]
    landms = landms.reshape(-1, 5, 2)
    keep = scores >= min_score
    if not np.any(keep):
        return []
    loc, scores, landms, p = loc[keep], scores[keep], landms[keep], prior[keep]
    v0, v1 = float(variances[0]), float(variances[1])
    centre = p[:, :2] + loc[:, :2] * v0 * p[:, 2:]
    wh = p[:, 2:] * np.exp(loc[:, 2:] * v1)
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    pts = p[:, None, :2] + landms * v0 * p[:, None, 2:]
    idx = nms(boxes, scores, nms_threshold, max_faces)
    return [(boxes[i], float(scores[i]), pts[i]) for i in idx]


class RetinaFaceOptions(DetectorOptions):
    min_sizes: Tuple[Tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))  # prior sizes, per step
    steps: Tuple[int, ...] = (8, 16, 32)
    variances: Tuple[float, float] = (0.1, 0.2)
    nms_threshold: float = 0.4


class RetinaFaceDetector(FaceDetectorModel):
    family = "retinaface"
    Options = RetinaFaceOptions

    def __init__(self, spec: ModelSpec, engine, score_threshold: Optional[float] = None, max_faces: int = 16) -> None:
        super().__init__(spec, engine, score_threshold=score_threshold, max_faces=max_faces)
        self.size = w = square_side(spec, "RetinaFace")
        opts = self.options
        self.prior = priors(w, opts.min_sizes, opts.steps)
        self.variances = opts.variances
        self.nms_threshold = opts.nms_threshold

    def _split(self, outputs: Sequence[np.ndarray]):
        found = {}
        for i, o in enumerate(outputs):
            found.setdefault(int(np.shape(o)[-1]), i)
        if not all(k in found for k in (4, 2, 10)):
            raise ValueError("RetinaFace outputs: expected last dims 4, 2, 10, got %s"
                             % [list(np.shape(o)) for o in outputs])
        specs = self.engine.outputs
        return [specs[found[k]].dequantize(np.asarray(outputs[found[k]])) for k in (4, 2, 10)]

    def decode(self, outputs: Sequence[np.ndarray]) -> List[Detection]:
        loc, conf, landms = self._split(outputs)
        if loc.reshape(-1, 4).shape[0] != self.prior.shape[0]:
            raise ValueError("RetinaFace output has %d boxes, %d priors expected"
                             % (loc.reshape(-1, 4).shape[0], self.prior.shape[0]))
        return decode(loc, conf, landms, self.prior, self.variances, self.score_threshold, self.nms_threshold,
                      self.max_faces)
