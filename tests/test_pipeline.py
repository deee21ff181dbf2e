"""The whole pipeline in one event loop over inproc:// with the fake engine."""
from __future__ import annotations

import json

import pytest
from helpers import inproc_config, run_async

from edgepipe.models.engines.engine import FaultPlan
from edgepipe.models.spec import iou
from edgepipe.pipeline.runner import RunOptions, run


def check_accounting(s):
    assert s["leaked_sockets"] == []
    assert s["drained"], "pipeline did not drain"
    assert s["unaccounted"] == 0
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]


@pytest.mark.parametrize("faces", [0, 1, 5])
def test_every_face_lands_on_its_frame(faces, tmp_path):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=%d,fps=0,size=640x480,change=7" % faces})
    results = tmp_path / "results.jsonl"
    s = run_async(run(cfg, RunOptions(frames=60, results_path=str(results))))
    check_accounting(s)
    assert s["frames_captured"] == 60
    assert s["frames_completed"] == 60  # a recorded source waits for the pipeline: nothing dropped
    assert s["actors"]["detector"]["counters"]["input_ahead"] == 60  # the encoder made every detector input
    f = s["faces"]
    assert f["truth"] == f["matched"] == f["expression_correct"] == 60 * faces
    assert f["false_positives"] == 0
    assert f["frames_exact"] == 60
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["frame_id"] for r in lines] == list(range(60))
    for r in lines:
        assert len(r["faces"]) == faces and len(r["truth"]) == faces and r["camera"] == "default"  # named, too
        assert r["in_order"] and not r["partial"]


def test_live_source_drops_are_counted():
    # a 200 FPS "camera" into a detector that needs 15 ms a frame: the freshest frame wins
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=200"})
    cfg.engine.fake.latency_ms = {"coral-ssd-face": 15.0}
    s = run_async(run(cfg, RunOptions(frames=150)))
    check_accounting(s)
    assert s["frames_captured"] == 150
    assert s["dropped_total"] > 0
    assert s["dropped_by_reason"].get("stale", 0) + s["dropped_by_reason"].get("transport", 0) == s["dropped_total"]
    f = s["faces"]
    assert f["matched"] == f["truth"] == f["expression_correct"]


def test_jpeg_encoder_and_more_workers():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=3,fps=0"}, encoder={"format": "jpeg"}, fer={"workers": 3})
    s = run_async(run(cfg, RunOptions(frames=40)))
    check_accounting(s)
    assert s["frames_completed"] == 40
    assert s["faces"]["expression_correct"] == 120
    assert s["actors"]["detector"]["counters"]["input_ahead"] == 40  # with a JPEG frame too
    assert sum(s["actors"]["fer-%d" % i]["counters"]["faces"] for i in range(3)) == 120  # one job per frame


def test_fer_worker_that_raises_gives_partial_frames():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0"}, fer={"workers": 2})
    cfg.engine.fake.faults = {"fer-0": FaultPlan(raise_every=3)}
    s = run_async(run(cfg, RunOptions(frames=60)))
    check_accounting(s)
    assert s["frames_partial"] > 0
    assert s["frames_completed"] > 0
    assert s["actors"]["fer-0"]["counters"]["errors"] > 0
    f = s["faces"]
    assert f["matched"] == f["truth"] == 120
    # no expression is ever attached to the wrong face: every one that is there is right (a failed job
    # costs the expressions of its frame's faces)
    assert f["expression_correct"] == 120 - s["actors"]["fer-0"]["counters"]["faces_failed"]


def test_fer_worker_that_hangs_is_restarted_and_its_frame_leaves_partial(tmp_path):
    # the join deadline is far off: the hung job's frame leaves partial because the watchdog ends the hang
    # (an error for its faces), not because a clock ran out; the deadline itself is tested with a clock the
    # test moves (tests/test_aggregator.py)
    cfg = inproc_config(pipeline={"source": "synthetic:faces=3,fps=0"},
                        fer={"workers": 2, "invoke_timeout_ms": 400.0}, aggregator={"deadline_ms": 600000.0})
    cfg.engine.fake.faults = {"fer-1": FaultPlan(hang_after=4, hang_count=1)}
    results = tmp_path / "r.jsonl"
    s = run_async(run(cfg, RunOptions(frames=40, results_path=str(results))))
    check_accounting(s)
    assert s["frames_partial"] > 0, "the hung worker's frames should leave partial once the watchdog ends the hang"
    assert s["frames_completed"] > 0
    assert s["actors"]["fer-1"]["counters"].get("timeouts", 0) == 1
    assert s["actors"]["fer-1"]["counters"].get("restarts", 0) == 1
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(lines) == 40
    for r in lines:
        for face in r["faces"]:
            truth = max(r["truth"], key=lambda t: iou(t["box"], face["box"]))
            assert iou(truth["box"], face["box"]) > 0.8
            assert face["expression"] in (None, truth["expression"]), "frame %d: wrong join" % r["frame_id"]
    # the pipeline went on after the hang and the restart: the last frames are complete
    assert not any(r["partial"] for r in lines[-5:])


def test_profile_fd_without_fer():
    cfg = inproc_config(pipeline={"profile": "fd", "source": "synthetic:faces=2,fps=0"})
    s = run_async(run(cfg, RunOptions(frames=30)))
    check_accounting(s)
    assert s["frames_completed"] == 30
    assert s["faces"]["matched"] == 60  # found on the encoder's input alone: no frame decoded for crops
    assert s["actors"]["detector"]["counters"]["input_ahead"] == 30
    assert "fer-0" not in s["actors"]


def test_duration_stops_the_run():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=50"})
    s = run_async(run(cfg, RunOptions(duration_s=0.5)))  # an endless source: only the duration can end the run
    check_accounting(s)
    assert not s["interrupted"]  # it ended by itself and drained, with no stop asked for
    assert s["frames_captured"] > 0


def test_stuck_detector_is_restarted_by_the_watchdog():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"}, detector={"invoke_timeout_ms": 300.0})
    cfg.engine.fake.faults = {"detector": FaultPlan(hang_after=5, hang_count=1)}
    s = run_async(run(cfg, RunOptions(frames=30)))
    check_accounting(s)
    det = s["actors"]["detector"]["counters"]
    assert det["restarts"] == 1 and det["dropped.engine_timeout"] == 1
    assert s["frames_completed"] == 29
