"""What a run prints: what it saw (expressions, face tracks, top labels), every drop with its reason, the
endpoints once, and no warning for what is normal (the demo clip loops)."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import ASSETS, inproc_config, run_async

from edgepipe.actors.sources.demo import DemoSource, notice
from edgepipe.bus.messages import Metric
from edgepipe.models.engines.engine import FaultPlan
from edgepipe.pipeline.run_command import human_summary, mqtt_line
from edgepipe.pipeline.runner import RunOptions, run
from edgepipe.pipeline.summary import frame_accounting, sink_summary

ROOT = Path(__file__).resolve().parents[1]
needs_assets = pytest.mark.skipif(not (ASSETS / "models").is_dir(), reason="test assets not found at %s" % ASSETS)


def test_fd_fer64_names_the_expressions_it_saw(tmp_path):
    summary, results, conf = tmp_path / "s.json", tmp_path / "r.jsonl", tmp_path / "c.toml"
    conf.write_text("[aggregator]\ndeadline_ms = 600000.0\n")  # no frame partial because the machine is busy
    # a live synthetic source (30 fps): 3 faces whose drawn expression changes every 40 frames
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--profile", "fd+fer64", "--engine", "fake",
                        "--source", "synthetic:faces=3,change=40", "--frames", "100", "--display", "none",
                        "--summary", str(summary), "--results", str(results), "--config", str(conf),
                        "--metrics-endpoint", "ipc://%s/metrics" % tmp_path, "-v"],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    s = json.loads(summary.read_text())
    truth = Counter(t["expression"] for line in results.read_text().splitlines()
                    for t in json.loads(line)["truth"])
    assert sum(truth.values()) == 3 * s["faces"]["frames"] and len(truth) >= 3
    # faces per label: what the fake engine read from the drawn faces, the synthetic truth exactly
    assert s["expressions"] == dict(truth)
    assert list(s["expressions"].values()) == sorted(truth.values(), reverse=True)
    assert s["dominant_expression"] == min(truth.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # ties: a-z
    # a live source on a loaded machine may drop a frame (stale): the figures are the recorded frames'
    frames = s["faces"]["frames"]
    assert frames == s["frames_completed"] == 100 - s["dropped_total"]
    assert s["recorder"] == {"sink": "recorder", "results": frames, "written": frames, "dropped": 0,
                             "dropped_by_reason": {}}
    assert s["tracks_total"] == 3 and len(s["tracks"]) == 3
    for t in s["tracks"]:
        assert t["frames"] == frames and t["expression"] in truth
    out = p.stdout.splitlines()
    line = next(x for x in out if x.startswith("expressions"))
    assert line == "expressions (faces per label): %s; dominant: %s" % (
        ", ".join("%s %d" % kv for kv in s["expressions"].items()), s["dominant_expression"])
    assert next(x for x in out if x.startswith("face tracks")).startswith(
        "face tracks: 3 (#0 %d frames, mostly " % frames)
    assert "faces: %d in %d frames" % (3 * frames, frames) in out
    assert any(x.startswith("actors (output fps / median busy ms per message): recorder ") for x in out)
    # -v: the endpoints once (the line clients read), the tracks' life in the log
    assert p.stdout.count("results ipc://") == 1  # the ready line: where clients attach, on stdout
    assert re.search(r"^results ipc://\S+/default/results\nmetrics ipc://%s/metrics$" % re.escape(str(tmp_path)),
                     p.stdout, re.M)
    for tid in range(3):
        assert re.search(r"face track %d appeared at frame \d: \w+" % tid, p.stderr)
        assert re.search(r"face track %d ends with the stream at frame 99 \(last seen at frame 9\d, \w+\)" % tid,
                         p.stderr)
    changes = re.findall(r"face track (\d): (\w+) -> (\w+) at frame (\d+)", p.stderr)
    assert {c[0] for c in changes} == {"0", "1", "2"}  # each face's drawn expression changed at frames 40, 80
    assert all(a != b and (40 <= int(f) < 55 or 80 <= int(f) < 95) for _, a, b, f in changes)


def test_a_run_without_v_prints_no_endpoint_log():
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--profile", "fd", "--engine", "fake", "--source",
                        "synthetic:faces=1,fps=0", "--frames", "5", "--metrics-endpoint", "inproc://metrics"],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("results ipc://") == 1 and " INFO " not in p.stderr


@needs_assets
def test_a_cls_run_lists_its_top_labels(monkeypatch):
    # the fake classifier answers with mobilenet-v2's labels: their file from the shared models (the fake
    # engine looks in $EDGEPIPE_MODEL_PATH and the cache, not in models.paths)
    monkeypatch.setenv("EDGEPIPE_MODEL_PATH", str(ASSETS / "models"))
    cfg = inproc_config(pipeline={"profile": "cls-imagenet", "source": "synthetic:faces=2,fps=0"})
    s = run_async(run(cfg, RunOptions(frames=12)))
    assert s["engines"] == {"classifier": "fake"}
    labels = s["labels"]
    assert labels and sum(x["frames"] for x in labels) == 12
    assert [x["frames"] for x in labels] == sorted((x["frames"] for x in labels), reverse=True)
    assert all(0.0 < x["mean_prob"] <= 1.0 for x in labels)
    text = human_summary(s).splitlines()
    assert next(x for x in text if x.startswith("labels")) == "labels (top-1 of each frame): " + ", ".join(
        "%s %d frames (p %.2f)" % (x["label"], x["frames"], x["mean_prob"]) for x in labels)
    # no face detector ran: no face, track or truth line (the source drew faces, nothing looked for them)
    assert not any(x.startswith(("faces:", "truth:", "expressions", "face tracks")) for x in text)
    assert s["expressions"] == {} and s["tracks"] == [] and s["dominant_expression"] is None


def test_every_drop_says_its_reason():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"})
    cfg.engine.fake.faults = {"detector": FaultPlan(raise_every=4)}
    s = run_async(run(cfg, RunOptions(frames=40)))
    assert s["dropped_total"] == 10
    assert s["dropped_by_actor"] == {"detector": {"engine_error": 10}}
    text = human_summary(s).splitlines()
    assert "frames: 40 captured, 30 completed, 0 partial, 10 dropped, 0 unaccounted" in text
    assert "drops: detector 10 engine_error (the model failed on it)" in text
    # results the recorder never got: the faces line says so, with the reason
    s["recorder"] = sink_summary("recorder", Metric("recorder", 1, 0.0, {"out": 28, "dropped": 2,
                                                                         "dropped.transport": 2}), 30)
    line = next(x for x in human_summary(s).splitlines() if x.startswith("faces:"))
    assert line.endswith("recorded; 2 of 30 results did not reach the recorder: 2 transport (lost between two "
                         "actors: a queue was full)")


def test_drops_by_actor_and_reason_add_up():
    snaps = {"capture": Metric("capture", 1, 0.0, {"out": 50}),
             "aggregator": Metric("aggregator", 1, 0.0, {"completed": 42}),
             "encoder": Metric("encoder", 1, 0.0, {"dropped": 3, "dropped.encode_error": 3}),
             "detector": Metric("detector", 1, 0.0, {"dropped": 5, "dropped.stale": 4, "dropped.transport": 1}),
             "recorder": Metric("recorder", 1, 0.0, {"dropped": 2, "dropped.transport": 2})}
    f = frame_accounting(snaps)
    assert f["dropped_by_actor"] == {"encoder": {"encode_error": 3}, "detector": {"stale": 4, "transport": 1}}
    assert f["dropped_total"] == 8 and f["unaccounted"] == 0  # the recorder's are its own (see "recorder")
    assert sum(n for d in f["dropped_by_actor"].values() for n in d.values()) == f["dropped_total"]


def test_the_mqtt_line_speaks_of_drops_only_when_there_were_some():
    assert mqtt_line({"published": 57, "queue_dropped": 0, "reconnects": 0, "connect_failures": 0}) == \
        "mqtt: 57 messages published"
    line = mqtt_line({"published": 57, "queue_dropped": 4, "reconnects": 1, "connect_failures": 2})
    assert line == ("mqtt: 57 messages published, 4 dropped from its full queue (the oldest: the broker was away "
                    "or slower than the results), 1 reconnects, 2 connect failures")


@pytest.mark.skipif(not (ASSETS / "video").is_dir(), reason="test assets not found at %s" % ASSETS)
def test_the_demo_clip_says_it_loops_without_a_warning(caplog):
    caplog.set_level(logging.INFO, logger="edgepipe.source")
    src = DemoSource("demo", str(ASSETS / "video" / "WolfgangLanger_Pexels.mp4"), live=True, loop=True)
    try:
        src.open()
    finally:
        src.close()
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert caplog.records[0].getMessage() == ("source demo: WolfgangLanger_Pexels.mp4 opened: 472 frames at 24 fps; "
                                              "played at its own frame rate, looping")
    assert notice("demo") == ("source demo: WolfgangLanger_Pexels.mp4 (a short clip with one face), played at its "
                              "own frame rate like a camera; it loops until you stop the run (Ctrl-C; or --frames "
                              "N, --duration S)")
    assert notice("demo:unpaced", limited=True).endswith("every frame, as fast as it goes; it loops until --frames "
                                                         "or --duration ends the run")
