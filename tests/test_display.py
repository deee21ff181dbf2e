"""Display sinks for real: an annotated video file, the MJPEG web page."""
from __future__ import annotations

import asyncio
import urllib.request

import cv2
import numpy as np
import pytest
from helpers import inproc_config, run_async

from edgepipe.actors.sinks.display import make_sink
from edgepipe.actors.sinks.sinks import DisplayError
from edgepipe.actors.sinks.web_sink import BOUNDARY
from edgepipe.pipeline.runner import RunOptions, run


def test_bad_display_specs():
    for spec, message in (("web:notaport", "web:PORT"), ("hologram", "unknown display")):
        with pytest.raises(DisplayError, match=message):
            make_sink(spec, 30.0)


def test_annotated_video_file_sink(tmp_path):
    out = tmp_path / "annotated.avi"  # MJPG: every frame intra-coded, so every one reads back
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0", "display": "file:%s" % out})
    s = run_async(run(cfg, RunOptions(frames=30)))
    assert s["frames_completed"] == 30
    assert s["actors"]["display"]["out"] > 0
    cap = cv2.VideoCapture(str(out))
    try:
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame.shape)
        assert frames and set(frames) == {(480, 640, 3)}
        assert len(frames) == s["actors"]["display"]["out"]
    finally:
        cap.release()


def test_web_display_streams_mjpeg():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=30", "display": "web:127.0.0.1:0"})
    got = {}

    def fetch(url):
        with urllib.request.urlopen(url + "/", timeout=10) as r:
            got["page"] = r.read()
        with urllib.request.urlopen(url + "/stream.mjpg", timeout=10) as r:
            assert "multipart/x-mixed-replace" in r.headers["Content-Type"]
            head = r.read(200)
            assert head.startswith(b"--" + BOUNDARY)
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            body += r.read(length - len(body))
        got["frame"] = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)

    async def main():
        stop = asyncio.Event()
        ready = asyncio.Event()
        holder = {}

        def on_ready(p):
            holder["sink"] = p.one("display").sink
            ready.set()

        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=100000), stop, on_ready=on_ready))
        try:
            await ready.wait()
            host, port = holder["sink"].address
            await asyncio.get_running_loop().run_in_executor(None, fetch, "http://%s:%d" % (host, port))
        finally:
            stop.set()
            summary = await runner
        return summary

    s = run_async(main())
    assert b"/stream.mjpg" in got["page"]
    assert got["frame"] is not None and got["frame"].shape == (480, 640, 3)
    assert s["leaked_sockets"] == []
