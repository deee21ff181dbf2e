"""Injected faults, one at a time: raise, hang and slow in the detector, a FER worker and the encoder, and a
source that stalls. For each the pipeline goes on, no expression lands on the wrong face or frame, and every
frame captured is completed, partial or counted as dropped. Figures go to the fault report (faults_report)."""
from __future__ import annotations

import pytest
from faults_report import read_results, record, timing, wrong_joins
from helpers import inproc_config, run_async

from edgepipe.models.engines.engine import FaultPlan
from edgepipe.pipeline.runner import RunOptions, run

FRAMES = 60
F = FaultPlan

# watchdog times well above the fake engine's 5-8 ms, so that a busy shared machine does not trip them twice
# name: (faults by actor, config sections, source options, counters expected by actor)
SCENARIOS = {
    "detector-raise": ({"detector": F(raise_every=7)}, {}, "",
                       {"detector": {"dropped.engine_error": FRAMES // 7}}),
    "detector-hang": ({"detector": F(hang_after=10, hang_count=1)}, {"detector": {"invoke_timeout_ms": 1000.0}}, "",
                      {"detector": {"dropped.engine_timeout": 1, "restarts": 1}}),
    "detector-slow": ({"detector": F(slow_every=5, slow_ms=150.0)}, {}, "", {}),
    "fer-raise": ({"fer-0": F(raise_every=3)}, {}, "", {}),
    "fer-hang": ({"fer-1": F(hang_after=4, hang_count=1)},
                 {"fer": {"invoke_timeout_ms": 1000.0}, "aggregator": {"deadline_ms": 300.0}}, "",
                 {"fer-1": {"timeouts": 1, "restarts": 1}}),
    "fer-slow": ({"fer-0": F(slow_every=2, slow_ms=200.0)}, {"aggregator": {"deadline_ms": 150.0}}, "", {}),
    "encoder-raise": ({"encoder": F(raise_every=7)}, {}, "", {"encoder": {"dropped.encode_error": FRAMES // 7}}),
    "encoder-hang": ({"encoder": F(hang_after=10, hang_count=1)}, {}, "",
                     {"encoder": {"dropped.encode_timeout": 1, "restarts": 1}}),
    "encoder-slow": ({"encoder": F(slow_every=5, slow_ms=150.0)}, {}, "", {}),
    "source-stall": ({}, {}, ",stall_at=20,stall_ms=1000", {}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_pipeline_survives_an_injected_fault(name, tmp_path):
    faults, sections, source_opts, expected = SCENARIOS[name]
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0" + source_opts}, fer={"workers": 2},
                        **{k: v for k, v in sections.items() if k != "fer"})
    for key, value in sections.get("fer", {}).items():
        setattr(cfg.fer, key, value)
    cfg.engine.fake.faults = dict(faults)
    results = tmp_path / "r.jsonl"
    s = run_async(run(cfg, RunOptions(frames=FRAMES, results_path=str(results))))
    lines = read_results(results)
    # every frame accounted for
    assert s["leaked_sockets"] == [] and s["drained"]
    assert s["frames_captured"] == FRAMES and s["unaccounted"] == 0
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]
    assert len(lines) == s["frames_completed"] + s["frames_partial"]
    # no expression on the wrong face or frame
    assert wrong_joins(lines) == 0
    assert s["faces"]["false_positives"] == 0
    # the fault did what it should, and the pipeline went on after it: the last frames are whole
    for actor, counters in expected.items():
        got = s["actors"][actor]["counters"]
        assert {k: got.get(k, 0) for k in counters} == counters
    if name.endswith(("-hang", "-stall")):  # a fault that passes: the last frames are whole again
        assert not any(r["partial"] for r in lines[-5:])
        assert s["frames_completed"] >= FRAMES - 5
    assert lines[-1]["frame_id"] == FRAMES - 1
    record("injected", name, {
        "faults": {a: {k: getattr(f, k) for k in f.__struct_fields__ if getattr(f, k)} for a, f in faults.items()}
        or {"source": source_opts.strip(",")},
        "survived": True,
        "frames": {k: s[k] for k in ("frames_captured", "frames_completed", "frames_partial", "dropped_total",
                                     "unaccounted")},
        "dropped_by_reason": s["dropped_by_reason"],
        "wrong_expressions": 0,
        "timing": timing(lines),
    })
