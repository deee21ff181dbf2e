"""The live view with several cameras: a tile, a snapshot, a stream and a status entry per camera; a camera that
stalls shows so on its tile while the others go on (in-process, the fake engine, the synthetic source); the
issue's command in a real headless Chromium."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from helpers import ASSETS, inproc_config, run_async

from edgepipe.actors.sinks.web_sink import BOUNDARY
from edgepipe.pipeline.config.sections import CameraConfig
from edgepipe.pipeline.runner import RunOptions, run
from tools.chromium import Chromium, find_chromium
from tools.screenshot import RunPy


def until(url, predicate, limit=2000):
    """The first status document of ``/events`` for which ``predicate`` holds (each update, as the page gets
    them); fails after ``limit`` updates."""
    with urllib.request.urlopen(url + "/events", timeout=60) as r:
        for _ in range(limit):
            line = r.readline()
            while line and not line.startswith(b"data: "):
                line = r.readline()
            assert line, "the event stream ended"
            doc = json.loads(line[len(b"data: "):])
            if predicate(doc):
                return doc
    raise AssertionError("no such status in %d updates: %s" % (limit, doc))


def cams(doc):
    return {c["name"]: c for c in doc["cameras"]}


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.headers["Content-Type"], r.read()


def status_of(url, code):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=30)
    err.value.close()
    return err.value.code == code


def first_mjpeg_part(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        assert "multipart/x-mixed-replace" in r.headers["Content-Type"]
        head = r.read(200)
        assert head.startswith(b"--" + BOUNDARY)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = head.split(b"\r\n\r\n", 1)[1]
        body += r.read(length - len(body))
    return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)


def live_view(cfg, check, timeout=120):
    """Run ``cfg`` until ``check(url)`` (in a thread) returns; the run's summary and what check returned."""
    async def main():
        stop, ready, holder = asyncio.Event(), asyncio.Event(), {}

        def on_ready(p):
            holder["sink"] = p.one("display").sink
            ready.set()

        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=100000), stop, on_ready=on_ready))
        try:
            await ready.wait()
            host, port = holder["sink"].address
            got = await asyncio.get_running_loop().run_in_executor(None, check, "http://%s:%d" % (host, port))
        finally:
            stop.set()
            summary = await runner
        return summary, got

    return run_async(main(), timeout=timeout)


def test_two_cameras_each_have_a_status_entry_a_snapshot_and_a_stream():
    cfg = inproc_config(pipeline={"display": "web:127.0.0.1:0"})
    cfg.cameras = {"b": CameraConfig(source="synthetic:faces=2,fps=30,size=320x240"),
                   "a": CameraConfig(source="synthetic:faces=1,fps=30,size=640x480", label="front door")}

    def check(url):
        doc = until(url, lambda d: all(c["frames"] > 0 and c["shown"] > 0 and c["faces"] for c in d["cameras"]))
        snaps = {}
        for name in ("a", "b"):
            ctype, body = get(url + "/snapshot/%s.jpg" % name)
            assert ctype == "image/jpeg"
            snaps[name] = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        _, first = get(url + "/snapshot.jpg")  # the first camera by name
        streamed = {name: first_mjpeg_part(url + "/stream/%s.mjpg" % name) for name in ("a", "b")}
        bare = first_mjpeg_part(url + "/stream.mjpg")
        missing = [status_of(url + path, 404) for path in ("/snapshot/zz.jpg", "/stream/zz.mjpg",
                                                           "/snapshot/a.mjpg", "/stream/a-b.mjpg")]
        _, page = get(url + "/")
        return doc, snaps, cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR), streamed, bare, missing, page

    s, (doc, snaps, first, streamed, bare, missing, page) = live_view(cfg, check)
    assert [c["name"] for c in doc["cameras"]] == ["a", "b"]  # name order
    a, b = doc["cameras"]
    assert a["label"] == "front door" and b["label"] == "b"
    assert a["state"] == b["state"] == "live"
    assert a["stream"] == "/stream/a.mjpg" and b["snapshot"] == "/snapshot/b.jpg"
    assert len(a["faces"]) == 1 and len(b["faces"]) == 2
    assert (a["frame"]["width"], a["frame"]["height"]) == (640, 480) and (b["frame"]["width"], b["frame"]["height"]) == (320, 240)
    assert a["fps"] is not None and a["latency_ms"] is not None and b["drops"] >= 0
    assert doc["frame"] == a["frame"] and doc["faces"] == a["faces"]  # the top level: the first camera's
    assert snaps["a"].shape == (480, 640, 3) and snaps["b"].shape == (240, 320, 3)
    assert first.shape == (480, 640, 3) and bare.shape == (480, 640, 3)
    assert streamed["a"].shape == (480, 640, 3) and streamed["b"].shape == (240, 320, 3)
    assert all(missing), missing
    assert b"tiles" in page
    assert s["leaked_sockets"] == [] and set(s["cameras"]) == {"a", "b"}
    assert s["actors"]["display"]["out"] > 0


def test_a_stalled_camera_shows_so_while_the_other_goes_on():
    cfg = inproc_config(pipeline={"display": "web:127.0.0.1:0"})
    cfg.capture.read_timeout_s = 600.0  # the stall is the camera's state under test, not a reason to reopen it
    cfg.cameras = {"a": CameraConfig(source="synthetic:faces=1,fps=30,size=320x240"),
                   "b": CameraConfig(source="synthetic:faces=1,fps=30,size=320x240,stall_at=10,stall_ms=60000")}

    def check(url):
        stalled = until(url, lambda d: cams(d)["b"]["state"] == "stalled")
        shown = cams(stalled)["a"]["shown"]
        later = until(url, lambda d: cams(d)["a"]["shown"] > shown + 10)  # a's tile goes on
        return stalled, later

    s, (stalled, later) = live_view(cfg, check)
    assert cams(stalled)["a"]["state"] == "live"
    assert cams(later)["b"]["state"] == "stalled" and cams(later)["b"]["shown"] == cams(stalled)["b"]["shown"]
    assert cams(later)["a"]["state"] == "live"
    assert s["leaked_sockets"] == []


needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install chromium)")

# the issue's command, on each engine: the fake Edge TPU sees the synthetic camera's drawn faces (a), the real
# models on the CPU the demo clip's (b)
ENGINES = {"fake": (["--engine", "fake"], "a"), "cpu": (["--profile", "fd+fer64", "--engine", "cpu"], "b")}

# resolves with the status once an update shows every tile with faces where `faces` says, and both tiles' images
# loaded; then each tile's image is fingerprinted until its pixels change
TILES_WORK = """new Promise((ok) => {
    const check = (s) => s.cameras.length === 2 && s.cameras.every((c) => c.state === 'live' && c.shown > 0)
        && s.cameras.find((c) => c.name === %(faces)s).faces.length > 0
        && [...document.querySelectorAll('.tile img')].every((img) => img.naturalWidth > 0);
    window.addEventListener('edgepipe-status', function h(e) {
        if (check(e.detail)) { window.removeEventListener('edgepipe-status', h); ok(e.detail); } });
})"""
TILE_CHANGES = """new Promise((ok) => {
    const img = document.querySelector('.tile[data-camera="%s"] img');
    const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    const sum = () => { g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
        let h = 0; for (let i = 0; i < d.length; i += 61) h = (h * 31 + d[i]) | 0; return h; };
    const first = sum();
    const again = () => { const now = sum(); now !== first ? ok([c.width, c.height]) : setTimeout(again, 20); };
    again(); })"""


@needs_chromium
@pytest.mark.parametrize("engine", list(ENGINES))
def test_the_issue_s_two_cameras_in_chromium(engine, tmp_path):
    args, with_faces = ENGINES[engine]
    run = RunPy(args + ["--camera", "a=synthetic:faces=1", "--camera", "b=demo", "--display", "web:127.0.0.1:0",
                        "-v", "--metrics-endpoint", "ipc://%s" % (tmp_path / "metrics"), "--duration", "600"])
    try:
        assert run.has_url.wait(300) and run.url, "no 'live view at' line:\n" + "\n".join(run.lines)
        with Chromium() as browser:
            page = browser.page()
            page.navigate(run.url)
            status = page.evaluate(TILES_WORK % {"faces": json.dumps(with_faces)}, await_promise=True)
            tiles = page.evaluate("""[...document.querySelectorAll('.tile')].map((t) => [t.dataset.camera,
                t.querySelector('.label').textContent, t.querySelector('.state').textContent,
                [...t.querySelectorAll('.face')].map((f) => f.textContent)])""")
            assert [t[0] for t in tiles] == ["a", "b"] and [t[1] for t in tiles] == ["a", "b"], tiles
            assert all(t[2] == "live" for t in tiles), tiles
            faces = dict((t[0], t[3]) for t in tiles)[with_faces]
            assert faces and all(f.startswith("#") for f in faces), tiles
            for cam in ("a", "b"):  # each tile's stream moves on, at its camera's own size
                entry = cams(status)[cam]
                size = page.evaluate(TILE_CHANGES % cam, await_promise=True)
                assert size == [entry["frame"]["width"], entry["frame"]["height"]], (cam, size, entry)
            shown = {c["name"]: c["shown"] for c in status["cameras"]}
            later = page.evaluate("""new Promise((ok) => window.addEventListener('edgepipe-status', function h(e) {
                if (e.detail.cameras.every((c) => c.shown > %s[c.name])) {
                    window.removeEventListener('edgepipe-status', h); ok(e.detail); } }))""" % json.dumps(shown),
                                  await_promise=True)
            assert all(c["frames"] > 0 for c in later["cameras"])
            assert page.errors() == []
            assert cv2.imread(page.screenshot(str(tmp_path / ("two-cameras-%s.png" % engine)))) is not None
    finally:
        rc, out = run.stop()
    assert rc == 0, "\n".join(run.lines[-20:])
    assert "camera a (synthetic:faces=1)" in out and "camera b (demo)" in out and "0 unaccounted" in out


@pytest.mark.skipif(not (ASSETS / "video" / "single_face.mp4").is_file(), reason="test assets not found at %s" % ASSETS)
def test_a_camera_whose_stream_ends_shows_so_while_the_other_goes_on():
    cfg = inproc_config(pipeline={"display": "web:127.0.0.1:0"})
    cfg.cameras = {"a": CameraConfig(source="synthetic:faces=1,fps=30,size=320x240"),
                   "b": CameraConfig(source="video:%s" % (ASSETS / "video" / "single_face.mp4"))}

    def check(url):
        ended = until(url, lambda d: cams(d)["b"]["state"] == "ended")
        shown = cams(ended)["a"]["shown"]
        return ended, until(url, lambda d: cams(d)["a"]["shown"] > shown + 10)

    s, (ended, later) = live_view(cfg, check)
    assert cams(ended)["b"]["shown"] > 0 and cams(ended)["a"]["state"] == "live"
    assert cams(later)["b"]["state"] == "ended" and cams(later)["a"]["state"] == "live"
    assert s["leaked_sockets"] == []
