"""The detector template: fitting a frame to the input and mapping faces back (models/boxes.py), and the
input shape checked once, when a detector is built on a loaded engine (models/family.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import ASSETS

from edgepipe.models import registry
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.families.boxes import Fit, fit_frame, to_frame
from edgepipe.models.store import manifest

MODELS_DIR = ASSETS / "models"


def test_fit_frame_letterbox_and_stretch():
    frame = np.full((480, 640, 3), 200, np.uint8)
    canvas, fit = fit_frame(frame, (320, 320), stretch=False)
    assert canvas.shape == (320, 320, 3) and fit == Fit(0.5, 0.5, 0.0, 40.0)
    assert not canvas[:40].any() and not canvas[280:].any() and (canvas[40:280] == 200).all()
    same, fit = fit_frame(frame, (192, 128), stretch=True)
    assert same is frame  # resized later, with the colour conversion (family.to_model_pixels)
    assert fit == Fit(192 / 640.0, 128 / 480.0, 0.0, 0.0)


def test_to_frame_maps_corners_points_clips_and_sorts():
    fit = Fit(0.5, 0.5, 0.0, 40.0)  # 640x480 letterboxed into 320x320
    found = [
        ((0.25, 0.25, 0.5, 0.5), 0.6, np.array([[0.25, 0.25], [0.5, 0.5]], np.float32)),
        ((0.5, 0.0, 0.75, 0.2), 0.9, None),  # reaches into the top padding: clipped to the frame
        ((0.9, 0.9, 0.9001, 0.9001), 0.95, None),  # under a pixel: dropped
    ]
    faces = to_frame(found, fit, (320, 320), (640, 480))
    assert [f.score for f in faces] == [0.9, 0.6]
    assert faces[0].as_list()[:4] == [320.0, 0.0, 480.0, pytest.approx(48.0)]
    assert faces[0].landmarks is None
    assert faces[1].as_list()[:4] == [160.0, 80.0, 320.0, 240.0]
    assert faces[1].landmarks == [(160.0, 80.0), (320.0, 240.0)]


def test_to_frame_square_boxes_keep_their_side_on_a_stretched_frame():
    fit = Fit(128 / 640.0, 128 / 480.0, 0.0, 0.0)  # 640x480 stretched into 128x128
    box = (0.4, 0.4, 0.6, 0.6)  # square in input pixels: 25.6 px
    face, = to_frame([(box, 0.8, None)], fit, (128, 128), (640, 480), square=True)
    # centre at (320, 240); the side maps with the larger scale (the y axis, squeezed less): 25.6 / (128 / 480)
    assert face.x2 - face.x1 == pytest.approx(96.0) and face.y2 - face.y1 == pytest.approx(96.0)
    assert (face.x1 + face.x2) / 2 == pytest.approx(320.0) and (face.y1 + face.y2) / 2 == pytest.approx(240.0)
    corners, = to_frame([(box, 0.8, None)], fit, (128, 128), (640, 480))
    assert corners.as_list()[:4] == pytest.approx([256.0, 192.0, 384.0, 288.0])


@pytest.mark.skipif(not MODELS_DIR.is_dir(), reason="test assets not found at %s" % ASSETS)
def test_detector_checks_the_input_shape_once_at_load():
    spec = manifest.get("retinaface")
    eng = registry.make_engine("cpu", spec, model_paths=[str(MODELS_DIR)])
    eng.load()
    try:
        wrong = dataclasses.replace(spec, input_shape=(160, 160, 3))
        with pytest.raises(EngineError, match="does not match the manifest"):
            registry.face_detector(wrong, eng)
        odd = dataclasses.replace(spec, options=dict(spec.options, resize="crop"))
        with pytest.raises(EngineError, match="option 'resize' in the manifest's options: Invalid enum value 'crop'"):
            registry.face_detector(odd, eng)
        detector = registry.face_detector(spec, eng)
        assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    finally:
        eng.close()
