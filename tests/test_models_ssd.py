"""SSD post-process decoding (Coral's face model format) on hand-built output tensors."""
from __future__ import annotations

import numpy as np
import pytest

from edgepipe.models.families import ssd


def _tensors(n=5):
    boxes = np.zeros((1, n, 4), np.float32)
    boxes[0, 0] = (0.10, 0.20, 0.50, 0.40)  # ymin, xmin, ymax, xmax
    boxes[0, 1] = (0.50, 0.60, 0.90, 0.95)
    boxes[0, 2] = (0.00, 0.00, 0.30, 0.30)
    classes = np.zeros((1, n), np.float32)
    classes[0, 2] = 1.0  # not a face
    scores = np.zeros((1, n), np.float32)
    scores[0, :3] = (0.91, 0.62, 0.88)
    scores[0, 3] = 0.97  # beyond count: must be ignored
    count = np.array([3], np.float32)
    return boxes, classes, scores, count


@pytest.mark.parametrize("order", ["tflite1", "tf2"])
def test_decode_both_tensor_orders(order):
    boxes, classes, scores, count = _tensors()
    outputs = [boxes, classes, scores, count] if order == "tflite1" else [scores, boxes, count, classes]
    faces = ssd.decode(outputs, frame_w=640, frame_h=480, score_threshold=0.5, max_faces=10)
    assert len(faces) == 2
    a, b = faces
    assert a.score == pytest.approx(0.91) and b.score == pytest.approx(0.62)
    assert a.as_list() == pytest.approx([0.20 * 640, 0.10 * 480, 0.40 * 640, 0.50 * 480])
    assert b.as_list() == pytest.approx([0.60 * 640, 0.50 * 480, 0.95 * 640, 0.90 * 480])


def test_decode_threshold_clip_and_max_faces():
    boxes, classes, scores, count = _tensors()
    boxes[0, 1] = (-0.1, 0.9, 0.5, 1.2)  # partly outside the frame: clipped
    faces = ssd.decode([boxes, classes, scores, count], 100, 100, score_threshold=0.7, max_faces=10)
    assert [round(f.score, 2) for f in faces] == [0.91]
    faces = ssd.decode([boxes, classes, scores, count], 100, 100, score_threshold=0.5, max_faces=10)
    clipped = [f for f in faces if f.score < 0.7][0]
    assert clipped.as_list() == pytest.approx([90.0, 0.0, 100.0, 50.0])
    assert len(ssd.decode([boxes, classes, scores, count], 100, 100, 0.5, max_faces=1)) == 1
    # the other class when asked for
    other = ssd.decode([boxes, classes, scores, count], 100, 100, 0.5, 10, face_class=1)
    assert [round(f.score, 2) for f in other] == [0.88]


def test_split_outputs_rejects_wrong_tensors():
    with pytest.raises(ValueError):
        ssd.split_outputs([np.zeros((1, 4, 4)), np.zeros((1, 4))])
    with pytest.raises(ValueError):
        ssd.split_outputs([np.zeros((1, 4, 3)), np.zeros((1, 4)), np.zeros((1, 4)), np.zeros(1)])
