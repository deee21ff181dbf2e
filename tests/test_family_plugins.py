"""Model families that register themselves (models/families/family.py), found by scanning models/families/ and
the EDGEPIPE_PLUGINS folders (models/families/discovery.py), with typed options, faked by asking the family."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from edgepipe.models import registry
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.engines.fake import FakeEngine
from edgepipe.models.families import discovery
from edgepipe.models.families.family import CLASSIFIERS, DETECTORS, EXPRESSIONS, FAMILIES, ExpressionModel
from edgepipe.models.families.labels import EXPRESSIONS as EXPRESSION_NAMES
from edgepipe.models.store import manifest

ROOT = Path(__file__).resolve().parent.parent

# A new family in a file of its own: an expression model that crops the middle of the face box (no margin) and
# reads fer64's tensors, and a model of it added to the manifest. Nothing else names it.
PLUGIN = '''
"""A toy expression family: the middle of the face box, resized to the input."""
import dataclasses
from typing import List

import msgspec
import numpy as np

from edgepipe.models.families.family import ExpressionModel, Label, pixels_to_tensor, to_model_pixels
from edgepipe.models.store import manifest


class MiddleOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    zoom: float = 1.0  # the crop's side, a fraction of the face box's shorter side


class MiddleCropFer(ExpressionModel):
    family = "middle_crop"
    Options = MiddleOptions

    def prepare(self, image_bgr, face):
        side = self.options.zoom * min(face.x2 - face.x1, face.y2 - face.y1)
        cx, cy = (face.x1 + face.x2) / 2.0, (face.y1 + face.y2) / 2.0
        x1, y1 = int(round(cx - side / 2)), int(round(cy - side / 2))
        crop = image_bgr[max(0, y1):y1 + int(side), max(0, x1):x1 + int(side)]
        return to_model_pixels(crop, self.spec)

    def classify(self, crop) -> Label:
        out = self.engine.invoke([pixels_to_tensor(crop, self.engine, self.spec)])[0]
        probs = self.engine.outputs[0].dequantize(np.asarray(out)).reshape(-1)
        i = int(np.argmax(probs))
        return Label(self.spec.labels[i], float(probs[i]), [float(p) for p in probs])


manifest.add(dataclasses.replace(manifest.get("fer64"), name="toy-fer", family="middle_crop",
                                 options={"zoom": 0.8}))
'''

# run in a fresh interpreter: the plugin folder is read at the first scan, and its family stays out of this one
SCRIPT = '''
import json
import numpy as np
from edgepipe.bus.box import Box
from edgepipe.models import registry
from edgepipe.models.engines import fake_scene
from edgepipe.models.engines.fake import FakeEngine
from edgepipe.models.store import manifest

spec = manifest.get("toy-fer")
engine = FakeEngine(spec, latency_ms=0.0)
engine.load()
try:
    model = registry.expression_model(spec, engine)
    got = []
    for k in range(len(fake_scene.LEVELS)):
        image = np.full((240, 320, 3), 110, np.uint8)
        box = (100 + 7 * k, 50, 180 + 7 * k, 150)
        fake_scene.draw_face(image, box, k)
        label = model.classify(model.prepare(image, Box(*box, 0.9)))
        got.append([label.label, label.confidence])
finally:
    engine.close()
print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__, "zoom": model.options.zoom,
                  "labels": got}))
'''


def run_with_plugins(folder: Path, script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGEPIPE_PLUGINS=str(folder))
    return subprocess.run([sys.executable, "-c", script], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def test_a_family_from_a_new_file_alone_runs_through_the_registry_on_the_fake_engine(tmp_path):
    (tmp_path / "middle_fer.py").write_text(PLUGIN, encoding="utf-8")
    proc = run_with_plugins(tmp_path, SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["class"] == "edgepipe_plugin_middle_fer.MiddleCropFer"  # the file's module, imported by the scan
    assert out["zoom"] == 0.8  # the manifest entry's options, typed by the family's Options
    # the fake engine read the expression drawn on each face: every label is the synthetic truth
    assert out["labels"] == [[name, pytest.approx(0.9)] for name in EXPRESSION_NAMES]


def test_a_plugin_that_fails_to_import_is_an_error_naming_its_file(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written plugin')\n", encoding="utf-8")
    proc = run_with_plugins(tmp_path, "from edgepipe.models import registry")
    assert proc.returncode != 0
    assert "model family plugin %s failed to import: RuntimeError: half-written plugin" % (tmp_path / "broken.py") \
        in proc.stderr


def test_the_scan_finds_every_family_of_the_package_folder():
    assert sorted(DETECTORS) == ["blazeface", "retinaface", "ssd_postprocess"]
    assert sorted(EXPRESSIONS) == ["aligned112", "square_crop"]
    assert sorted(CLASSIFIERS) == ["imagenet"]
    assert set(FAMILIES) == set(DETECTORS) | set(EXPRESSIONS) | set(CLASSIFIERS)
    for name, spec in manifest.MODELS.items():  # every model's family is found and takes its options
        family = discovery.family_of(spec)
        assert isinstance(family.options_of(spec), family.Options), name


def test_a_family_name_taken_twice_is_refused():
    with pytest.raises(TypeError, match="model family 'square_crop' is defined twice"):
        type("Again", (ExpressionModel,), {"family": "square_crop"})
    assert FAMILIES["square_crop"].__name__ == "SquareCropFer"


def _fer64_engine(spec):
    engine = FakeEngine(spec, latency_ms=0.0)
    engine.load()
    return engine


@pytest.mark.parametrize("options, message", [
    ({"crop_margn": 0.1}, "model 'fer64' (family 'square_crop'): unknown option 'crop_margn' in the manifest's "
                          "options; its options: crop_margin"),
    ({"crop_margin": "wide"}, "model 'fer64' (family 'square_crop'): option 'crop_margin' in the manifest's "
                              "options: Expected `float`, got `str`"),
])
def test_a_bad_or_unknown_option_names_the_model_and_the_key(options, message):
    spec = dataclasses.replace(manifest.get("fer64"), options=options)
    engine = _fer64_engine(manifest.get("fer64"))
    try:
        with pytest.raises(EngineError) as err:
            registry.expression_model(spec, engine)
        assert str(err.value).startswith(message)
    finally:
        engine.close()


def test_a_nested_option_error_names_the_key_and_the_place():
    spec = dataclasses.replace(manifest.get("retinaface"), options={"steps": [8, "16", 32]})
    with pytest.raises(EngineError, match=r"model 'retinaface' \(family 'retinaface'\): option 'steps\[1\]' in the "
                                          r"manifest's options: Expected `int`, got `str`"):
        DETECTORS["retinaface"].options_of(spec)


def test_options_are_typed_with_the_familys_defaults():
    opts = FAMILIES["blazeface"].options_of(manifest.get("blazeface-full"))
    assert opts.strides == (4,) and opts.num_anchors == 2304 and opts.min_score == 0.6 and opts.resize is None
    assert FAMILIES["ssd_postprocess"].options_of(manifest.get("coral-ssd-face")).face_class == 0
    assert msgspec.structs.asdict(FAMILIES["square_crop"].options_of(manifest.get("fer64"))) == {"crop_margin": 0.2}


def test_the_fake_engine_asks_the_family_and_refuses_one_that_does_not_fake():
    engine = FakeEngine(manifest.get("blazeface-short"), latency_ms=0.0)
    with pytest.raises(EngineError, match=r"model 'blazeface-short' \(family blazeface\) needs --engine cpu"):
        engine.load()
    engine.close()
    engine = FakeEngine(manifest.get("coral-ssd-face"), latency_ms=0.0)
    engine.load()
    try:
        assert engine.family is DETECTORS["ssd_postprocess"]
        assert [o.name for o in engine.outputs] == ["boxes", "classes", "scores", "count"]
        blank = np.zeros((1, 320, 320, 3), np.uint8)
        boxes, classes, scores, count = engine.invoke([blank])
        assert count.tolist() == [0.0] and not scores.any()
    finally:
        engine.close()


def test_an_unknown_family_lists_the_known_ones():
    spec = dataclasses.replace(manifest.get("fer64"), family="nope")
    with pytest.raises(EngineError, match="model 'fer64' \\(family 'nope'\\) is not an expression model; known: "
                                          "aligned112, square_crop"):
        registry.expression_model(spec, None)  # type: ignore[arg-type]


def test_a_plugin_folder_that_is_not_there_is_an_error(tmp_path):
    with pytest.raises(EngineError, match="plugin folder .*missing.* is not a folder"):
        discovery.discover([str(tmp_path / "missing")])
