"""``fer.processes = true``: every FER worker in a child process of its own, through the process groups.

FER runs on the real CPU model (fer64); the detector is the fake engine, on synthetic frames with faces."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ASSETS, inproc_config, run_async, wait_pipeline_ready

from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.loading import ConfigError, GroupConfig
from edgepipe.pipeline.processes.groups import assignment, plan, with_fer_processes
from edgepipe.pipeline.runner import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]
MODELS = ASSETS / "models"


def _why_skip() -> str:
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        return "ai-edge-litert is not installed (the CPU engine)"
    from edgepipe.models.store import manifest
    from edgepipe.models.store.fetch import file_for, find_local

    spec = manifest.get("fer64")
    if find_local(spec, file_for(spec, "cpu"), [str(MODELS)]) is None:
        return "fer64 not in the cache: python run.py models fetch fer64"
    return ""


needs_cpu_fer = pytest.mark.skipif(bool(_why_skip()), reason=_why_skip() or "-")


def fer_processes_config(**sections):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0,size=320x240"}, **sections)
    cfg.models.paths = [str(MODELS)]
    cfg.placement.fer = "cpu"
    cfg.fer.processes = True
    return cfg


def test_fer_processes_plan_a_group_per_worker(tmp_path):
    cfg = fer_processes_config(fer={"workers": 3})
    assign = assignment(cfg)
    assert [assign["fer-%d" % i] for i in range(3)] == ["fer-0", "fer-1", "fer-2"]
    assert assign.get("detector", "main") == "main"
    planned = plan(with_fer_processes(cfg), str(tmp_path))
    assert sorted(planned.groups) == ["fer-0", "fer-1", "fer-2"]
    assert planned.groups["fer-1"].actors == ["fer-1"]
    # the links the workers share with the main process leave inproc://; the others stay in-process
    assert planned.endpoints.facejobs == "ipc://%s/facejobs" % tmp_path
    assert planned.endpoints.expressions == "ipc://%s/expressions" % tmp_path
    assert planned.endpoints.control.startswith("ipc://")
    assert planned.endpoints.frames.startswith("inproc://")
    assert with_fer_processes(planned).groups == planned.groups  # the child's config: nothing added twice


@pytest.mark.parametrize("profile", ["cls", "fd"])
def test_fer_processes_start_nothing_for_a_profile_without_fer(profile):
    cfg = fer_processes_config()
    cfg.pipeline.profile = profile
    assert with_fer_processes(cfg).groups == {}
    assert set(assignment(cfg).values()) == {"main"}


def test_single_workers_can_move_to_a_group_by_name():
    cfg = inproc_config()
    cfg.groups = {"side": GroupConfig(actors=["fer-1"])}
    assign = assignment(cfg)
    assert assign["fer-0"] == "main" and assign["fer-1"] == "side"


@pytest.mark.parametrize("change, words", [
    (lambda c: setattr(c.placement, "fer", "fake"), ["fer.processes", "'fake'", "placement.fer"]),
    (lambda c: c.groups.update({"tpu": GroupConfig(actors=["fer"])}), ["'fer' (the whole FER pool)", "fer-0"]),
    (lambda c: c.groups.update({"fer-0": GroupConfig(actors=["display"])}), ["groups.fer-0", "rename"]),
    (lambda c: c.groups.update({"x": GroupConfig(actors=["fer-7"])}), ["unknown actor 'fer-7'", "fer-0..fer-1"]),
])
def test_fer_processes_config_errors_name_the_key(change, words):
    cfg = fer_processes_config()
    change(cfg)
    with pytest.raises(ConfigError) as err:
        config.from_dict(config.to_dict(cfg))
    for w in words:
        assert w in str(err.value)


@needs_cpu_fer
def test_pipeline_with_a_process_per_fer_worker_accounts_for_every_frame(tmp_path):
    cfg = fer_processes_config()
    summary = run_async(run(cfg, RunOptions(frames=20)), timeout=240)
    assert summary["frames_captured"] == 20 and summary["unaccounted"] == 0
    assert summary["frames_completed"] + summary["frames_partial"] + summary["dropped_total"] == 20
    assert summary["frames_completed"] == 20
    procs = {p["name"]: p for p in summary["groups"]}
    assert set(procs) == {"main", "fer-0", "fer-1"}
    assert procs["fer-0"]["actors"] == ["fer-0"] and procs["fer-1"]["actors"] == ["fer-1"]
    assert len({procs[n]["pid"] for n in procs}) == 3  # three processes
    assert not any(a.startswith("fer-") for a in procs["main"]["actors"])
    assert procs["fer-0"]["exit_code"] == 0 and procs["fer-1"]["exit_code"] == 0
    fer = [summary["actors"]["fer-%d" % i] for i in range(2)]  # their final reports reached the main process
    assert sum(int(a["counters"].get("faces", 0)) for a in fer) == summary["faces"]["faces"] == 40
    assert summary["leaked_sockets"] == []


@needs_cpu_fer
def test_killing_one_fer_worker_process_stops_the_run_naming_it(tmp_path):
    cfg_path = tmp_path / "ferproc.toml"
    cfg_path.write_text('[endpoints]\nmetrics = "inproc://metrics-public"\n[models]\npaths = ["%s"]\n'
                        '[fer]\nprocesses = true\n' % MODELS)
    summary = tmp_path / "s.json"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--config", str(cfg_path), "--engine", "fake",
                             "--place", "fer=cpu", "--source", "synthetic:faces=2,fps=30,size=320x240",
                             "--duration", "120", "--summary", str(summary), "-v"],
                            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = wait_pipeline_ready(proc)
        assert set(pids) == {"fer-0", "fer-1"}
        os.kill(pids["fer-1"], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)  # a guard against a hang: the run asked for 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "group fer-1" in err and "killed by signal 9" in err
    s = json.loads(summary.read_text())
    fail = s["failure"]
    assert fail["group"] == "fer-1" and fail["actors_lost"] == ["fer-1"]
    assert "killed by signal 9" in fail["error"]
    procs = {p["name"]: p for p in s["groups"]}
    assert procs["fer-0"]["exit_code"] == 0  # the other worker was stopped cleanly
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not list(tmp_path.glob("edgepipe-*")), "run folder with ipc files left behind"
