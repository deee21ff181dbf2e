"""Issue 12's small things a user meets at once: the cls summary's labels, no XNNPACK banner, config.toml's
display comment."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ASSETS, inproc_config, run_async

from edgepipe.pipeline.run_command import human_summary
from edgepipe.pipeline.runner import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]
needs_assets = pytest.mark.skipif(not (ASSETS / "models").is_dir(), reason="test assets not found at %s" % ASSETS)


@needs_assets
def test_cls_summary_prints_its_top_labels():
    cfg = inproc_config(pipeline={"profile": "cls-imagenet", "engine": "cpu",
                                  "source": str(ASSETS / "images" / "coffee.png")})
    cfg.models.paths = [str(ASSETS / "models")]
    cfg.aggregator.deadline_ms = 10000.0
    s = run_async(run(cfg, RunOptions(frames=3)), timeout=120)
    assert s["labels"][0]["label"] == "espresso" and s["labels"][0]["frames"] == 3
    assert 0.5 < s["labels"][0]["mean_prob"] <= 1.0
    line = next(x for x in human_summary(s).splitlines() if x.startswith("labels"))
    assert line.startswith("labels (top-1 of each frame): espresso 3 frames (p ")


@needs_assets
def test_a_cpu_run_prints_no_xnnpack_banner():
    p = subprocess.run([sys.executable, "run.py", "--profile", "fd", "--engine", "cpu", "--frames", "2",
                        "--metrics-endpoint", "inproc://metrics", "--source",
                        str(ASSETS / "images" / "single_face.jpg")],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert "frames: 2 captured" in p.stdout
    assert "XNNPACK" not in p.stderr and "XNNPACK" not in p.stdout


def test_the_banner_filter_keeps_everything_else():
    code = ("import os, sys\n"
            "from edgepipe.models.engines.litert import without_xnnpack_banner\n"
            "print('before', file=sys.stderr, flush=True)\n"
            "with without_xnnpack_banner():\n"
            "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
            "    os.write(2, b'a real error\\n')\n"
            "    print('a log line', file=sys.stderr)\n"
            "print('after', file=sys.stderr, flush=True)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == ["before", "a real error", "a log line", "after"]


def test_the_display_key_s_description_lists_web():
    import msgspec.inspect as mi

    from edgepipe.pipeline.config.sections import PipelineConfig
    field = next(f for f in mi.type_info(PipelineConfig).fields if f.name == "display")
    text = field.type.extra_json_schema["description"]
    assert "web:" in text and "file:PATH.mp4" in text and "window" in text


def test_busy_share_counts_overlapping_work_once(monkeypatch):
    import time as time_module

    from edgepipe.actors.runtime.stats import Stats

    now = [1000.0]
    monkeypatch.setattr(time_module, "monotonic", lambda: now[0])  # a clock the test moves
    s = Stats("detector")
    now[0] += 1.0
    s.busy(400.0)  # two items that both took the last 400 ms (depth 2): 400 ms with work in hand, not 800
    s.busy(400.0)
    now[0] += 1.0  # an idle second
    g = s.snapshot().gauges
    assert s.busy_total_ms == pytest.approx(400.0) and g["busy_pct"] == pytest.approx(20.0)  # of the 2 s window
    now[0] += 0.5
    s.busy(1000.0)  # an item that began before this window: only its part in the window counts
    now[0] += 0.5
    assert s.snapshot().gauges["busy_pct"] == pytest.approx(50.0)
