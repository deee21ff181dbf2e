"""SSD models with the TFLite detection post-processing op.

Output format (Coral's ``ssd_mobilenet_v2_face_quant_postprocess_edgetpu.tflite``
and the reference project's face detector): four tensors
boxes [1, N, 4] as normalised (ymin, xmin, ymax, xmax), classes [1, N],
scores [1, N], count [1]. The order of the four tensors differs between
converter versions, so it is found from the shapes.

Python 3.9 compatible.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .family import DETECTORS, FaceDetectorModel, check_input, pixels_to_tensor, to_model_pixels
from .spec import FaceBox


def split_outputs(outputs: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Find boxes, classes, scores and count among the four output tensors."""
    if len(outputs) != 4:
        raise ValueError("SSD post-process output needs 4 tensors, got %d" % len(outputs))
    boxes = None
    flat = []
    count = None
    for t in outputs:
        a = np.asarray(t, dtype=np.float32)
        if a.ndim == 3 and a.shape[-1] == 4:
            boxes = a[0]
        elif a.size == 1:
            count = int(a.reshape(-1)[0])
        else:
            flat.append(a.reshape(-1))
    if boxes is None or count is None or len(flat) != 2:
        raise ValueError("SSD post-process output: cannot find boxes/classes/scores/count in shapes %s"
                         % [list(np.shape(t)) for t in outputs])
    # classes are small integers; scores are in [0, 1] and mostly not integers
    a, b = flat
    a_int = bool(np.all(np.equal(np.mod(a, 1), 0)))
    b_int = bool(np.all(np.equal(np.mod(b, 1), 0)))
    if a_int and not b_int:
        classes, scores = a, b
    elif b_int and not a_int:
        classes, scores = b, a
    else:  # ambiguous (e.g. all zeros): TFLite's documented order is boxes, classes, scores, count
        order = [i for i, t in enumerate(outputs) if np.size(t) != 1 and np.ndim(t) != 3]
        classes, scores = (a, b) if order[0] < order[1] else (b, a)
    count = max(0, min(count, boxes.shape[0]))
    return boxes, classes, scores, count


def decode(outputs: Sequence[np.ndarray], frame_w: int, frame_h: int, score_threshold: float,
           max_faces: int, face_class: int = 0) -> List[FaceBox]:
    boxes, classes, scores, count = split_outputs(outputs)
    faces = []
    for i in range(count):
        s = float(scores[i])
        if s < score_threshold or int(classes[i]) != face_class:
            continue
        ymin, xmin, ymax, xmax = [float(v) for v in boxes[i]]
        x1 = max(0.0, min(1.0, xmin)) * frame_w
        y1 = max(0.0, min(1.0, ymin)) * frame_h
        x2 = max(0.0, min(1.0, xmax)) * frame_w
        y2 = max(0.0, min(1.0, ymax)) * frame_h
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        faces.append(FaceBox(x1, y1, x2, y2, s))
    faces.sort(key=lambda f: -f.score)
    return faces[:max_faces]


class SsdFaceDetector(FaceDetectorModel):
    def detect(self, image_bgr: np.ndarray) -> List[FaceBox]:
        check_input(self.engine, self.spec)
        pixels = to_model_pixels(image_bgr, self.spec)
        outputs = self.engine.invoke([pixels_to_tensor(pixels, self.engine, self.spec)])
        h, w = image_bgr.shape[:2]
        return decode(outputs, w, h, self.score_threshold, self.max_faces,
                      int(self.spec.extra.get("face_class", 0)))


DETECTORS["ssd_postprocess"] = SsdFaceDetector
