"""The encoder makes the detector's input ahead (overlapping the detector's inference of the frame before);
the detector finds the very same faces with it as when it prepares the input itself (real models, real
photos, the input through the real wire)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import ASSETS

from edgepipe.bus.codec import roundtrip
from edgepipe.bus.messages import EncodedFrame
from edgepipe.models import registry
from edgepipe.models.families.boxes import Fit
from edgepipe.models.families.family import input_for
from edgepipe.models.store import manifest

MODELS_DIR = ASSETS / "models"
IMAGES = ASSETS / "images"

pytestmark = pytest.mark.skipif(not MODELS_DIR.is_dir(), reason="test assets not found at %s" % ASSETS)


def _detector(name):
    spec = manifest.get(name)
    eng = registry.make_engine("cpu", spec, threads=1, model_paths=[str(MODELS_DIR)])
    eng.load()
    return registry.face_detector(spec, eng)


def _through_the_wire(image, name):
    """The encoder's input for ``name``, sent with its frame and decoded as the detector receives it."""
    pixels, fit = input_for(manifest.get(name)).prepare(image)
    h, w = image.shape[:2]
    msg, frames = roundtrip(EncodedFrame(1, 1.0, "raw", w, h, image, tuple(float(v) for v in fit), pixels))
    assert len(frames) == 4 and not msg.tensor.flags.writeable  # a second zero-copy side frame
    return msg


@pytest.mark.parametrize("name, image, size, faces", [
    ("blazeface-short", "seed_image00.png", (640, 480), 4),
    ("blazeface-full", "seed_image00.png", (640, 480), None),
    ("retinaface", "seed_image00.png", (640, 480), None),
    ("blazeface-short", "multi_face.jpg", None, None),
    ("retinaface", "multi_face.jpg", None, None),
])
def test_detections_are_identical_with_the_input_made_ahead(model_cache, name, image, size, faces):
    img = cv2.imread(str(IMAGES / image), cv2.IMREAD_COLOR)
    assert img is not None, image
    if size is not None:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    detector = _detector(name)
    here = detector.detect(img)
    msg = _through_the_wire(img, name)
    assert tuple(msg.tensor.shape) == detector.input.shape
    ahead = detector.detect(None, (msg.tensor, Fit(*msg.fit)), (msg.width, msg.height))
    assert here, "no face found on %s" % image
    if faces is not None:
        assert len(here) == faces, [[round(v) for v in f.as_list()] for f in here]
    assert [(f.as_list(), f.score) for f in ahead] == [(f.as_list(), f.score) for f in here]
    assert [f.landmarks for f in ahead] == [f.landmarks for f in here]


def test_an_input_of_another_shape_is_refused_by_the_model(model_cache):
    detector = _detector("blazeface-short")
    img = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(ValueError, match="prepared input"):
        detector.detect(None, (np.zeros((10, 10, 3), np.uint8), Fit(1.0, 1.0, 0.0, 0.0)), (640, 480))
    assert detector.detect(img) == []
