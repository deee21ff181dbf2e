"""The live view, in a real headless Chromium, against ``run.py`` as a user starts it."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import urllib.request
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from mqtt_broker import MOSQUITTO, Broker

from edgepipe.actors.sinks.display import make_sink, overlay_layout
from edgepipe.bus.messages import Box, FaceResult, Result
from tools.chromium import Chromium, find_chromium
from tools.screenshot import WAIT_FOR_WORK, RunPy

ARTIFACTS = os.environ.get("EDGEPIPE_ARTIFACTS")  # a folder to keep the screenshots in (default: the test's tmp)

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install chromium)")


CASES = {
    # the fake Edge TPU and the synthetic camera: quick, and three faces in every frame
    "synthetic-fake": ["--engine", "fake", "--source", "synthetic:faces=3,fps=30"],
    # the command: the demo clip through the real models on the CPU
    "demo-cpu": ["--profile", "fd+fer64", "--engine", "cpu", "--source", "demo"],
}


@needs_chromium
@pytest.mark.parametrize("case", list(CASES))
def test_live_view_in_chromium(case, tmp_path):
    extra = []
    broker = None
    if case == "demo-cpu" and os.path.exists(MOSQUITTO):  # the command, --mqtt included
        broker = Broker(str(tmp_path))
        broker.start()
        extra = ["--mqtt", "mqtt://127.0.0.1:%d" % broker.port]
    try:
        _live_view_in_chromium(case, tmp_path, extra)
    finally:
        if broker is not None:
            broker.stop()


def _live_view_in_chromium(case, tmp_path, extra):
    run = RunPy(CASES[case] + extra + ["--display", "web:127.0.0.1:0", "-v", "--metrics-endpoint",
                                       "ipc://%s" % (tmp_path / "metrics"), "--duration", "600"])
    try:
        assert run.has_url.wait(300) and run.url, "no 'live view at' line:\n" + "\n".join(run.lines)
        assert any(" INFO edgepipe.web: live view at http://127.0.0.1:" in line for line in run.lines)
        with Chromium() as browser:
            page = browser.page()
            page.navigate(run.url)
            # the panels: wait for an update in which the detector and every FER worker run and a face is listed
            status = page.evaluate(WAIT_FOR_WORK % {"faces": "true", "updates": 1}, await_promise=True)
            # what the page shows, as a person reads it
            shown = page.evaluate("""(() => { const out = {};
                for (const tr of document.querySelectorAll('#actors tbody tr'))
                    out[tr.dataset.actor] = parseFloat(tr.querySelector('td.fps').textContent);
                return out; })()""")
            fers = [a["name"] for a in status["actors"] if a["name"].startswith("fer-")]
            assert fers and shown["detector"] > 0 and all(shown[name] > 0 for name in fers), shown
            roles = page.evaluate("[...document.querySelectorAll('#roles li')].map((li) => li.textContent)")
            engine = "fake:0" if case == "synthetic-fake" else "cpu"
            assert any(r.startswith("detector ") and " on %s" % engine in r for r in roles), roles
            assert any(r.startswith("fer fer64 on %s" % engine) for r in roles), roles
            faces = page.evaluate("[...document.querySelectorAll('#faces .face')].map((e) => e.textContent)")
            assert faces and all(f.startswith("#") for f in faces), faces
            # the stream: an image of non-zero size whose pixels change
            fingerprint = """new Promise((ok) => { const img = document.getElementById('stream');
                const sum = () => { const c = document.createElement('canvas');
                    c.width = img.naturalWidth; c.height = img.naturalHeight;
                    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                    const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0;
                    for (let i = 0; i < d.length; i += 61) h = (h * 31 + d[i]) | 0; return h; };
                const first = () => img.naturalWidth > 0 ? ok([img.naturalWidth, img.naturalHeight, sum()])
                    : setTimeout(first, 20);
                first(); })"""
            w, h, first = page.evaluate(fingerprint, await_promise=True)
            assert (w, h) == (status["frame"]["width"], status["frame"]["height"]) and w > 0 and h > 0
            changed = page.evaluate("""new Promise((ok) => { const img = document.getElementById('stream');
                const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d');
                const sum = () => { g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
                    let h = 0; for (let i = 0; i < d.length; i += 61) h = (h * 31 + d[i]) | 0; return h; };
                const again = () => { const now = sum(); now !== %d ? ok(now) : setTimeout(again, 20); };
                again(); })""" % first, await_promise=True)
            assert changed != first
            assert page.errors() == []  # the page's script ran without an uncaught exception
            keep = Path(ARTIFACTS) if ARTIFACTS else tmp_path
            keep.mkdir(parents=True, exist_ok=True)
            shot = page.screenshot(str(keep / ("web-view-%s.png" % case)))
            assert cv2.imread(shot) is not None
        with urllib.request.urlopen(run.url + "api/status", timeout=30) as r:
            doc = json.load(r)
        assert {a["name"] for a in doc["actors"]} >= {"capture", "detector", "aggregator", "fer-0"}
        assert doc["frame"]["width"] == w and "detector" in doc["roles"] and "fer" in doc["roles"]
        with urllib.request.urlopen(run.url + "snapshot.jpg", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            snap = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
        assert snap.shape == (h, w, 3)
    finally:
        rc, out = run.stop()
    assert rc == 0, "\n".join(run.lines[-20:])
    assert "frames:" in out and "0 unaccounted" in out
    if extra:  # results, events and discovery went to the broker while the page showed the run
        m = re.search(r"mqtt: (\d+) messages published", out)
        assert m and int(m.group(1)) > 0, out


def test_web_binds_loopback_unless_asked(caplog):
    sink = make_sink("web:0", 30.0)
    caplog.set_level(logging.INFO, logger="edgepipe.web")
    sink.open()
    try:
        assert sink.address[0] == "127.0.0.1"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        sink.close()
    assert make_sink("web", 30.0).port == 8080
    caplog.clear()
    sink = make_sink("web:0.0.0.0:0", 30.0)
    sink.open()
    try:
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warned and "not loopback" in warned[0]
    finally:
        sink.close()


def test_overlay_texts_never_overlap():
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 12))
        faces = []
        for _ in range(n):  # crowded: boxes near each other, some at the edges
            x, y = rng.uniform(-20, 600), rng.uniform(-20, 440)
            s = rng.uniform(20, 120)
            faces.append(FaceResult(Box(x, y, x + s, y + s, 0.9), "surprise", 0.8, smoothed="happy"))
        labels = [("cat", 0.5), ("dog", 0.3), ("bird", 0.1)] if trial % 3 == 0 else None
        r = Result(trial, 1.0, 1.05, 640, 480, faces, False, True, labels)
        layout = overlay_layout(r, 29.5, 640, 480)
        placed = layout.placed
        assert placed[0][0].startswith("29.5 FPS")  # the status line always has its place
        assert len(placed) + layout.left_out == 1 + n + (3 if labels else 0)
        assert layout.left_out == 0 or n >= 8  # texts are left out only when the frame is crowded
        for (_, a, _), (_, b, _) in combinations(placed, 2):
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
        for _, (x1, y1, x2, y2), _ in placed:
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480


def test_status_document_shows_resources_devices_and_no_nan():
    from edgepipe.actors.sinks.web_sink import LiveState
    from edgepipe.bus.messages import Metric

    state = LiveState()
    state.roles = {"detector": "detector coral-ssd-face on fake:0"}
    state.set_metric(Metric("fer-1", 9, 1.0, counters={"in": 5, "out": 5, "restarts": 1},
                            gauges={"fps": 4.0, "busy_ms_p50": 2.0, "on.fake:0": 1.0}))
    state.set_metric(Metric("detector", 9, 1.0, counters={"in": 5, "out": 4, "dropped": 1},
                            gauges={"fps": math.nan, "device.fake:0.busy_pct": 55.0, "resources.soc_temp_c": 61.2,
                                    "resources.power_w": 4.5, "on.fake:0": 1.0}))
    state.set_result(Result(7, 1.0, 1.04, 640, 480, [FaceResult(Box(1.0, 2.0, 30.0, 40.0, 0.9), "sad", 0.7, 3, "happy")],
                            True, True), 25.0)
    state.set_metric(Metric("resources", 9, 1.0, gauges={"fps": 0.0, "fan_rpm": 2900.0, "engine.fer.cpu": 1.0}))
    doc = json.loads(json.dumps(state.status(), allow_nan=False))  # strict JSON: no NaN anywhere
    assert [a["name"] for a in doc["actors"]] == ["detector", "fer-1"]  # pipeline order
    det, fer = doc["actors"]
    assert det["fps"] is None and det["dropped"] == 1 and det["runs_on"] == ["fake:0"]
    assert fer["restarts"] == 1 and fer["p50_ms"] == 2.0 and not fer["latency_measured"]
    assert doc["devices"] == {"fake:0": 55.0}
    assert doc["resources"] == {"soc_temp_c": 61.2, "power_w": 4.5, "fan_rpm": 2900.0}  # the sensors' actor is
    # not a stage: its gauges are in the resources panel, not among the actors
    assert doc["faces"] == [{"track": 3, "expression": "sad", "smoothed": "happy", "confidence": 0.7, "score": 0.9,
                             "box": [1.0, 2.0, 30.0, 40.0]}]
    assert doc["frame"]["partial"] and doc["frame"]["latency_ms"] == 40.0
    state.set_metric(Metric("fer-1", 9, 2.0, final=True))  # an actor that ended leaves the panel
    assert [a["name"] for a in state.status()["actors"]] == ["detector"]
