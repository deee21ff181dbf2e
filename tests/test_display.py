"""Display sinks for real: an annotated video file, the MJPEG web page."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import inproc_config, run_async
from test_web_cameras import first_mjpeg_part, get, live_view

from edgepipe.actors.sinks.display import make_sink
from edgepipe.actors.sinks.sinks import DisplayError
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

    def fetch(url):
        return {"page": get(url + "/")[1], "frame": first_mjpeg_part(url + "/stream.mjpg")}

    s, got = live_view(cfg, fetch)
    assert b"/stream.mjpg" in got["page"]
    assert got["frame"] is not None and got["frame"].shape == (480, 640, 3)
    assert s["leaked_sockets"] == []
