"""A sink accounts for every result: written, or dropped with a reason; a file is written at the source's rate."""
from __future__ import annotations

import cv2
import pytest
from helpers import ASSETS, inproc_config, run_async

from edgepipe.pipeline.runner import RunOptions, run

VIDEO = ASSETS / "video" / "WolfgangLanger_Pexels.mp4"  # the demo clip: 23.976 fps


def check_sink(s):
    d = s["display"]
    assert d["results"] == s["frames_completed"] + s["frames_partial"]
    assert d["results"] == d["written"] + d["dropped"]
    assert d["dropped"] == sum(d["dropped_by_reason"].values())
    # the pipeline's own drops and the sink's are kept apart: those frames were completed
    assert sum(s["dropped_by_reason"].values()) == s["dropped_total"]
    return d


def test_a_video_file_gets_every_frame_at_the_source_rate(tmp_path):
    out = tmp_path / "out.mp4"
    cfg = inproc_config(pipeline={"source": "video:%s" % VIDEO, "display": "file:%s" % out})
    s = run_async(run(cfg, RunOptions(frames=100)))
    assert s["frames_completed"] == 100 and s["unaccounted"] == 0
    d = check_sink(s)
    assert d["written"] == 100, d
    cap = cv2.VideoCapture(str(out))
    try:
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(24000 / 1001, abs=0.01)
        n = 0
        while cap.read()[0]:
            n += 1
    finally:
        cap.release()
    assert n == 100


def test_a_live_display_counts_what_it_skips(tmp_path):
    # a 200 FPS source into a web page: the display shows the newest result, every other one is counted
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=200", "display": "web:127.0.0.1:0"})
    s = run_async(run(cfg, RunOptions(frames=100)))
    d = check_sink(s)
    assert set(d["dropped_by_reason"]) <= {"skipped", "no_frame", "transport", "not_reached"}
    assert d["written"] > 0
