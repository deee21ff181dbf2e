"""run.py as a user runs it: a subprocess, a summary file, Ctrl-C, metrics."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import inproc_config, run_async

from edgepipe.bus.messages import Metric
from edgepipe.bus.sockets import Bus

ROOT = Path(__file__).resolve().parents[1]


def run_py(*args, **kw):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=120, **kw)


def free_endpoint(tmp_path, name="metrics"):
    return "ipc://%s/%s" % (tmp_path, name)


def test_frames_and_summary(tmp_path):
    summary = tmp_path / "s.json"
    results = tmp_path / "r.jsonl"
    p = run_py("--profile", "fd+fer64", "--engine", "fake", "--source", "synthetic:faces=3", "--frames", "100",
               "--display", "none", "--summary", str(summary), "--results", str(results),
               "--metrics-endpoint", free_endpoint(tmp_path))
    assert p.returncode == 0, p.stderr
    s = json.loads(summary.read_text())
    for key in ("profile", "engine", "source", "frames_captured", "frames_completed", "frames_partial", "dropped",
                "faces", "fps", "latency_ms", "actors"):
        assert key in s
    assert s["frames_captured"] == 100
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]
    assert s["faces"]["matched"] == s["faces"]["truth"]
    assert set(s["latency_ms"]) >= {"p50", "p99"}
    for a in s["actors"].values():
        assert set(a) >= {"fps", "busy_ms_p50", "dropped"}
    assert len(results.read_text().splitlines()) == s["frames_completed"] + s["frames_partial"]
    assert "frames: 100 captured" in p.stdout


def test_sigint_mid_run_exits_cleanly(tmp_path):
    summary = tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--engine", "fake",
                             "--source", "synthetic:faces=2,fps=30",
                             "--duration", "60", "-v", "--summary", str(summary),
                             "--metrics-endpoint", free_endpoint(tmp_path)],
                            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # wait for the pipeline to say it is ready
            if "pipeline ready" in line:
                break
        else:
            pytest.fail("pipeline never became ready")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)  # a guard against a hang, not a speed check; "interrupted" below tells
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    s = json.loads(summary.read_text())
    assert s["interrupted"]
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"] + s["unaccounted"]
    assert s["leaked_sockets"] == []
    assert not list(tmp_path.glob("metrics")), "ipc socket file left behind"


@pytest.mark.parametrize("args, message", [
    (["--engine", "gpu"], "--engine"),
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--source", "nowhere:1"], "unknown source 'nowhere:1'"),
    (["--source", "dir:/does/not/exist"], "does not exist"),
    (["--display", "hologram"], "unknown display 'hologram'"),
    (["--display", "window"], "display 'window' needs"),  # no screen here, or a headless OpenCV
    (["--source", "synthetic:faces=3,color=red"], "unknown option(s) color"),
])
def test_bad_input_gives_a_clear_error(args, message, tmp_path):
    p = run_py("--engine", "fake", "--source", "synthetic:faces=1", *args, "--frames", "5",
               "--metrics-endpoint", free_endpoint(tmp_path))
    assert p.returncode != 0
    assert message in p.stderr
    assert "Traceback" not in p.stderr


def test_config_error_names_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[fer]\nworkers = -1\n")
    p = run_py("--config", str(cfg), "--engine", "fake", "--frames", "5")
    assert p.returncode == 2
    assert "fer.workers" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args, message", [
    (["--metrics-endpoint", "tcp://0.0.0.0:5590"],
     "endpoints.metrics = tcp://0.0.0.0:5590: a tcp:// endpoint reachable from other hosts needs CURVE encryption"),
    (["--metrics-endpoint", "udp://x"], "--metrics-endpoint udp://x: endpoints.metrics: "),
    (["--fer-workers", "1000"], "--fer-workers 1000: fer.workers: 1000 is above the maximum 64"),
    (["--place", "fer=gpu"], "--place fer=gpu: placement.fer: 'gpu' is not one of"),
])
def test_command_line_values_go_through_the_config_checks(args, message):
    p = run_py("--engine", "fake", *args, "--frames", "5")
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr


def test_a_partial_config_overlays_config_toml(tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[capture]\nmax_in_flight = 8\n")
    summary = tmp_path / "s.json"
    p = run_py("--config", str(cfg), "--engine", "fake", "--source", "synthetic:faces=1", "--frames", "5",
               "--summary", str(summary),
               "--metrics-endpoint", free_endpoint(tmp_path))
    assert p.returncode == 0, p.stderr
    s = json.loads(summary.read_text())
    assert s["profile"] == "fd+fer64" and s["frames_captured"] == 5


def test_load_config_applies_every_option_over_the_overlaid_file(tmp_path):
    from edgepipe.pipeline.cli import run_parser
    from edgepipe.pipeline.run_command import load_config
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[capture]\nmax_in_flight = 8\n\n[fer]\nworkers = 4\n")
    args = run_parser().parse_args(["--config", str(cfg), "--profile", "fd", "--engine", "cpu", "--source", "demo",
                                    "--display", "file:out.mp4", "--encoder", "jpeg", "--fer-workers", "3",
                                    "--place", "detector=fake", "--metrics-endpoint", free_endpoint(tmp_path)])
    c = load_config(args)
    assert c.capture.max_in_flight == 8 and c.fer.workers == 3
    assert (c.pipeline.profile, c.pipeline.engine, c.pipeline.source, c.pipeline.display) == \
        ("fd", "cpu", "demo", "file:out.mp4")
    assert (c.encoder.format, c.placement.detector, c.endpoints.metrics) == \
        ("jpeg", "fake", free_endpoint(tmp_path))


def test_metrics_once_against_a_running_pipeline(tmp_path):
    from edgepipe.pipeline.metrics.cli import table, watch
    from edgepipe.pipeline.runner import RunOptions, run

    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=100"}, bus={"metrics_interval_s": 0.1})
    cfg.endpoints.metrics = free_endpoint(tmp_path)
    seen = {}

    async def main():
        stop = asyncio.Event()
        ready = asyncio.Event()
        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=100000), stop, on_ready=lambda p: ready.set()))
        try:
            await ready.wait()
            bus = Bus()
            try:
                sub = bus.sub(cfg.endpoints.metrics, hwm=100, name="test", topics=("metric",))
                while not {"capture", "encoder", "detector", "aggregator"} <= set(seen):
                    m = await sub.recv()
                    if isinstance(m, Metric):
                        seen[m.actor] = m
                sub.close()
            finally:
                bus.close()
            rc = await watch(cfg.endpoints.metrics, once=True, interval=0.3, timeout=5)
            assert rc == 0
        finally:
            stop.set()
            await runner

    run_async(main())
    assert {"capture", "encoder", "detector", "aggregator"} <= set(seen)
    text = table(seen)
    assert "detector" in text and "fps" in text
    # where each engine runs, and the device's busy share
    det_row = next(line for line in text.splitlines() if line.startswith("detector"))
    assert det_row.rstrip().endswith("fake:0")
    assert any(line.startswith("device fake:0: busy") for line in text.splitlines())


def test_metrics_without_a_pipeline_says_so(tmp_path):
    p = run_py("metrics", "--endpoint", free_endpoint(tmp_path, "nothing"), "--once", "--timeout", "0.5")
    assert p.returncode == 1
    assert "is a pipeline running" in p.stderr


def test_prometheus_exporter_serves_a_running_pipeline(tmp_path):
    import urllib.request

    from edgepipe.pipeline.metrics.cli import export
    from edgepipe.pipeline.runner import RunOptions, run

    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=100"}, bus={"metrics_interval_s": 0.1})
    cfg.endpoints.metrics = free_endpoint(tmp_path)
    scraped = {}

    def scrape(url):
        while True:  # until the exporter has heard from the detector (each scrape is a real request)
            with urllib.request.urlopen(url, timeout=10) as r:
                text = r.read().decode()
            if 'edgepipe_out_total{actor="detector"}' in text:
                scraped["text"] = text
                return

    async def main():
        stop, exporter_stop = asyncio.Event(), asyncio.Event()
        ready, exporter_ready = asyncio.Event(), asyncio.Event()
        holder = {}
        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=100000), stop, on_ready=lambda p: ready.set()))
        try:
            await ready.wait()
            exporter = asyncio.ensure_future(export(cfg.endpoints.metrics, "127.0.0.1", 0, exporter_stop,
                                                    on_ready=lambda e: (holder.update(e=e), exporter_ready.set())))
            try:
                await exporter_ready.wait()
                url = "http://%s:%d/metrics" % holder["e"].address
                await asyncio.get_running_loop().run_in_executor(None, scrape, url)
            finally:
                exporter_stop.set()
                assert await exporter == 0
        finally:
            stop.set()
            await runner

    run_async(main())
    text = scraped["text"]
    assert "# TYPE edgepipe_out_total counter" in text
    assert 'edgepipe_fps{actor="detector"}' in text
