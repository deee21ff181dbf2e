"""SSD models with the TFLite detection post-processing op.

Output format (Coral's ``ssd_mobilenet_v2_face_quant_postprocess_edgetpu.tflite``
and the reference project's face detector): four tensors
boxes [1, N, 4] as normalised (ymin, xmin, ymax, xmax), classes [1, N],
scores [1, N], count [1]. The order of the four tensors differs between
converter versions, so it is found from the shapes.

The fake engine emulates this family (Coral's face model on a fake Edge TPU):
``SsdFaceDetector.fake`` answers the faces the synthetic scene drew, in this
format, at most ``FAKE_DETECTIONS`` of them.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgepipe.bus.box import Box
from edgepipe.models.engines.fake_scene import Scene
from edgepipe.models.families.boxes import Detection, Fit, to_frame
from edgepipe.models.families.family import DetectorOptions, FaceDetectorModel
from edgepipe.models.spec import ModelSpec
from edgepipe.models.tensor import TensorSpec

FAKE_DETECTIONS = 20  # the fake engine's output slots, as the post-processing op's max_detections


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


def decode_normalised(outputs: Sequence[np.ndarray], score_threshold: float,
                      face_class: int = 0) -> List[Detection]:
    """The four output tensors -> faces (box [x1, y1, x2, y2] clipped to [0, 1], score, None), in output order."""
    boxes, classes, scores, count = split_outputs(outputs)
    found: List[Detection] = []
    for i in range(count):
        s = float(scores[i])
        if s < score_threshold or int(classes[i]) != face_class:
            continue
        ymin, xmin, ymax, xmax = [max(0.0, min(1.0, float(v))) for v in boxes[i]]
        found.append(((xmin, ymin, xmax, ymax), s, None))
    return found


def decode(outputs: Sequence[np.ndarray], frame_w: int, frame_h: int, score_threshold: float,
           max_faces: int, face_class: int = 0) -> List[Box]:
    """The four output tensors of a frame stretched to the input -> faces in frame pixels, best first."""
    found = decode_normalised(outputs, score_threshold, face_class)
    return to_frame(found, Fit(1.0, 1.0, 0.0, 0.0), (frame_w, frame_h), (frame_w, frame_h))[:max_faces]


class SsdOptions(DetectorOptions):
    face_class: int = 0  # the class index of a face


class SsdFaceDetector(FaceDetectorModel):
    family = "ssd_postprocess"
    Options = SsdOptions
    default_resize = "stretch"  # the frame squeezed to the input, as the post-processing op's boxes expect

    def __init__(self, spec: ModelSpec, engine, score_threshold: Optional[float] = None, max_faces: int = 16) -> None:
        super().__init__(spec, engine, score_threshold=score_threshold, max_faces=max_faces)
        self.face_class = self.options.face_class

    def decode(self, outputs: Sequence[np.ndarray]) -> List[Detection]:
        return decode_normalised(outputs, self.score_threshold, self.face_class)

    @classmethod
    def fake_outputs(cls, spec: ModelSpec) -> Optional[List[TensorSpec]]:
        return [TensorSpec("boxes", (1, FAKE_DETECTIONS, 4), "float32"),
                TensorSpec("classes", (1, FAKE_DETECTIONS), "float32"),
                TensorSpec("scores", (1, FAKE_DETECTIONS), "float32"),
                TensorSpec("count", (1,), "float32")]

    @classmethod
    def fake(cls, spec: ModelSpec, scene: Scene) -> List[np.ndarray]:
        """The drawn faces, score 0.95, in ``find_faces``' order."""
        faces = scene.faces()[:FAKE_DETECTIONS]
        boxes = np.zeros((1, FAKE_DETECTIONS, 4), np.float32)
        scores = np.zeros((1, FAKE_DETECTIONS), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(faces):
            boxes[0, i] = (y1, x1, y2, x2)
            scores[0, i] = 0.95
        classes = np.full((1, FAKE_DETECTIONS), cls.options_of(spec).face_class, np.float32)
        return [boxes, classes, scores, np.array([len(faces)], np.float32)]
