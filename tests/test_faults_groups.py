"""Process groups under faults: Ctrl-C to the whole process group, a group that dies mid-run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from faults_report import record
from helpers import run_async, wait_pipeline_ready

from edgepipe.bus.messages import Metric
from edgepipe.bus.sockets import Bus

ROOT = Path(__file__).resolve().parents[1]


def dual_python_config(tmp_path):
    """examples/dual-python.toml with this interpreter as the group's Python (no TPU venv here)."""
    text = (ROOT / "examples" / "dual-python.toml").read_text()
    text, n = re.subn(r'(?m)^python = "[^"]*"', 'python = "%s"' % sys.executable, text)
    assert n == 1
    path = tmp_path / "dual.toml"
    path.write_text(text)
    return str(path)


def start_in_new_session(args, tmp_path):
    """run.py as a terminal runs it: the leader of its own process group. Returns (proc, group pids)."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, "-v",
                             "--metrics-endpoint", "ipc://%s/metrics" % tmp_path],
                            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, wait_pipeline_ready(proc)


def finish(proc):
    try:
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ctrl_c_to_the_process_group_drains_and_writes_the_summary(tmp_path):
    summary = tmp_path / "s.json"
    proc, pids = start_in_new_session(["--config", dual_python_config(tmp_path), "--engine", "fake", "--source",
                                       "synthetic:faces=2,fps=30", "--duration", "60", "--summary", str(summary)],
                                      tmp_path)
    assert "tpu" in pids
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: every process of the group
    out, err = finish(proc)
    stop_ms = (time.monotonic() - t0) * 1000.0
    assert proc.returncode == 0, err[-3000:]
    s = json.loads(summary.read_text())
    assert s["interrupted"] and s["drained"]
    assert s["unaccounted"] == 0
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]
    groups = {g["name"]: g for g in s["groups"]}
    assert groups["tpu"]["exit_code"] == 0
    assert {"detector", "fer-0", "fer-1"} <= set(s["actors"])
    assert not list(tmp_path.glob("edgepipe-*")), "run folder with ipc files left behind"
    record("injected", "ctrl-c-to-the-process-group", {
        "survived": True, "rc": proc.returncode, "drained": s["drained"], "unaccounted": s["unaccounted"],
        "timing": {"signal_to_exit_ms": round(stop_ms, 1)}})


def wait_for_results(tmp_path, n):
    """Until the aggregator's own metrics (on the run's metrics socket) say it has sent ``n`` results."""
    async def main():
        bus = Bus()
        try:
            sub = bus.sub("ipc://%s/metrics" % tmp_path, hwm=100, name="test", topics=("metric",))
            try:
                while True:
                    m = await sub.recv()
                    if isinstance(m, Metric) and m.actor == "aggregator" and m.counters.get("out", 0) >= n:
                        return
            finally:
                sub.close()
        finally:
            bus.close()

    run_async(main())


def test_a_group_that_dies_mid_run_still_gets_a_summary_naming_it(tmp_path):
    summary = tmp_path / "s.json"
    results = tmp_path / "r.jsonl"
    proc, pids = start_in_new_session(["--config", dual_python_config(tmp_path), "--engine", "fake", "--source",
                                       "synthetic:faces=2,fps=30", "--duration", "60", "--summary", str(summary),
                                       "--results", str(results)], tmp_path)
    wait_for_results(tmp_path, 20)  # frames are flowing through the group
    t0 = time.monotonic()
    os.kill(pids["tpu"], signal.SIGKILL)
    out, err = finish(proc)
    stop_ms = (time.monotonic() - t0) * 1000.0
    assert proc.returncode == 1
    assert "group tpu" in err and "killed by signal 9" in err
    s = json.loads(summary.read_text())
    fail = s["failure"]
    assert fail["group"] == "tpu"
    assert "killed by signal 9" in fail["error"]
    assert set(fail["actors_lost"]) == {"detector", "fer-0", "fer-1"}
    assert fail["frames_lost"] == s["unaccounted"]
    assert s["frames_captured"] == (s["frames_completed"] + s["frames_partial"] + s["dropped_total"]
                                    + s["unaccounted"])
    assert s["frames_completed"] >= 20
    assert "FAILED: group tpu" in out
    assert not list(tmp_path.glob("edgepipe-*")), "run folder with ipc files left behind"
    record("injected", "killed-group", {
        "survived": False, "stops_with": fail["error"], "rc": proc.returncode, "lost": fail,
        "frames": {k: s[k] for k in ("frames_captured", "frames_completed", "frames_partial", "dropped_total",
                                     "unaccounted")},
        "timing": {"kill_to_exit_with_summary_ms": round(stop_ms, 1)}})


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def by_hand_config(tmp_path, links=("encoded", "detections", "expressions", "metrics_in", "control")):
    """A group started by hand, over loopback tcp with CURVE keys."""
    from edgepipe.pipeline.ops.keys import generate
    keys = tmp_path / "keys"
    generate(str(keys))
    eps = "\n".join('%s = "tcp://127.0.0.1:%d"' % (link, free_port()) for link in links)
    path = tmp_path / "by-hand.toml"
    path.write_text('[endpoints]\n%s\nmetrics = "ipc://%s/metrics"\n\n[security]\nkeys_dir = "%s"\n\n'
                    '[groups.tpu]\nactors = ["detector", "fer"]\nspawn = false\n' % (eps, tmp_path, keys))
    return str(path)


def start_group_by_hand(cfg, tmp_path):
    log = open(tmp_path / "group.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "group", "tpu", "--config", cfg, "--engine", "fake",
                             "-v"],
                            cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log.close()
    return proc


def stop_quietly(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_group_started_by_hand_over_curve_tcp(tmp_path):
    cfg = by_hand_config(tmp_path)
    group = start_group_by_hand(cfg, tmp_path)
    summary = tmp_path / "s.json"
    try:
        main = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", cfg, "--engine", "fake", "--source",
                               "synthetic:faces=2,fps=60", "--frames", "100", "--summary", str(summary)],
                              cwd=str(ROOT), capture_output=True, text=True, timeout=120)
        assert main.returncode == 0, main.stderr[-3000:]
        rc = group.wait(timeout=30)  # the main process ended the run: the group reports and stops
    finally:
        stop_quietly(group)
    glog = (tmp_path / "group.log").read_text()
    assert rc == 0, glog[-3000:]
    assert "the main process ended the run" in glog
    s = json.loads(summary.read_text())
    assert s["frames_captured"] == 100
    assert s["unaccounted"] == 0, s["dropped_by_reason"]
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]
    groups = {g["name"]: g for g in s["groups"]}
    assert set(groups["tpu"]["actors"]) == {"detector", "fer-0", "fer-1"}
    for a in ("detector", "fer-0", "fer-1"):  # the remote actors' final metrics are in the summary
        assert s["actors"][a]["pid"] == groups["tpu"]["pid"] != groups["main"]["pid"]
    assert s["actors"]["detector"]["in"] == s["actors"]["encoder"]["out"] - s["actors"]["detector"]["dropped"] \
        + s["actors"]["detector"]["counters"].get("dropped.stale", 0)


def test_a_group_started_by_hand_stops_when_the_main_process_dies(tmp_path):
    cfg = by_hand_config(tmp_path)
    group = start_group_by_hand(cfg, tmp_path)
    try:
        main, _ = start_in_new_session(["--config", cfg, "--engine", "fake", "--source", "synthetic:faces=1,fps=30",
                                        "--duration", "60"],
                                       tmp_path)
        os.killpg(main.pid, signal.SIGKILL)
        main.communicate()
        rc = group.wait(timeout=30)
    finally:
        stop_quietly(group)
    glog = (tmp_path / "group.log").read_text()
    assert "the main process went away" in glog, glog[-3000:]
    assert rc == 0


def test_a_group_started_by_hand_needs_addresses_it_can_reach(tmp_path):
    cfg = by_hand_config(tmp_path, links=("encoded", "detections", "expressions", "metrics_in"))  # no control
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", cfg, "--engine", "fake", "--frames", "5"],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "groups.tpu.spawn = false: endpoints.control is inproc://" in p.stderr
    g = subprocess.run([sys.executable, str(ROOT / "run.py"), "group", "tpu", "--config", cfg, "--engine", "fake"],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert g.returncode != 0
    assert "endpoints.control is inproc://" in g.stderr
