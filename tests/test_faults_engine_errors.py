"""An engine error of any type costs one frame (or one FER job); a run of them reloads the engine."""
from __future__ import annotations

import logging

from helpers import ASSETS, inproc_config, run_async

from edgepipe.models.engines.engine import FaultPlan
from edgepipe.pipeline.runner import RunOptions, run


def check_accounting(s):
    assert s["leaked_sockets"] == []
    assert s["drained"], "pipeline did not drain"
    assert s["unaccounted"] == 0
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]


def test_detector_runtime_error_costs_that_frame_only():
    # the fake engine's raise_every raises InjectedFault, a RuntimeError (as LiteRT's invoke() does)
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"})
    cfg.engine.fake.faults = {"detector": FaultPlan(raise_every=4)}
    s = run_async(run(cfg, RunOptions(frames=40)))
    check_accounting(s)
    det = s["actors"]["detector"]["counters"]
    assert det["dropped.engine_error"] == 10
    assert s["dropped_by_reason"]["engine_error"] == 10
    assert s["frames_completed"] == 30
    assert det.get("restarts", 0) == 0  # isolated errors: no reload
    f = s["faces"]
    assert f["matched"] == f["expression_correct"] == 30


def test_detector_reloads_engine_after_consecutive_errors(caplog):
    # every invoke fails: one burst, logged once; every 3 in a row reload the engine
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"}, detector={"invoke_timeout_ms": 5000.0})
    cfg.engine.fake.faults = {"detector": FaultPlan(raise_every=1)}
    with caplog.at_level(logging.INFO, logger="edgepipe"):
        s = run_async(run(cfg, RunOptions(frames=12)))
    said = [r.getMessage() for r in caplog.records if "dropped: engine error" in r.getMessage()]
    assert len(said) == 1, said
    check_accounting(s)
    det = s["actors"]["detector"]["counters"]
    assert det["dropped.engine_error"] == 12
    assert det["restarts"] == 12 // 3
    assert s["frames_completed"] == 0


def test_classifier_runtime_error_costs_that_frame_only(monkeypatch):
    monkeypatch.setenv("EDGEPIPE_MODEL_PATH", str(ASSETS / "models"))  # its labels file
    cfg = inproc_config(pipeline={"profile": "cls-imagenet", "source": "synthetic:faces=0,fps=0"})
    cfg.engine.fake.faults = {"classifier": FaultPlan(raise_every=5)}
    s = run_async(run(cfg, RunOptions(frames=20)))
    check_accounting(s)
    assert s["dropped_by_reason"]["engine_error"] == 4
    assert s["frames_completed"] == 16


def test_fer_worker_any_error_fails_only_its_job():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0"}, fer={"workers": 1})
    cfg.engine.fake.faults = {"fer-0": FaultPlan(raise_every=1)}
    s = run_async(run(cfg, RunOptions(frames=10)))
    check_accounting(s)
    fer = s["actors"]["fer-0"]["counters"]
    assert fer["errors"] == 10
    assert fer["restarts"] == 10 // 3
    assert s["frames_partial"] == 10
    assert s["faces"]["expression_correct"] == 0
