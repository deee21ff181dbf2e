"""Endpoints on a shared host (issue 11.13, 12.3): ipc in a private per-run folder by default, so two
pipelines never collide and no other user can connect; results and metrics reachable from outside; a busy
endpoint says what to pass."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from edgepipe.bus.rundir import RUN, RunDir, RunDirError, live_runs, resolve
from edgepipe.bus.sockets import BusError

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120  # an upper bound on waiting for an event, never a pacing delay


def _start(env, *args):
    return subprocess.Popen([sys.executable, "run.py", "--engine", "fake", "--source",
                             "synthetic:faces=1,fps=20,size=320x240", "--duration", "300"] + list(args),
                            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _announced(proc):
    """The endpoints a pipeline prints when it is ready: {"results": ..., "metrics": ...}."""
    for line in proc.stderr:
        if line.startswith("edgepipe: results at "):
            results, metrics = line[len("edgepipe: results at "):].strip().split(", metrics at ")
            return {"results": results, "metrics": metrics}
    raise AssertionError("the pipeline ended before it was ready (rc %s)" % proc.wait())


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def test_two_pipelines_with_the_default_endpoints_run_side_by_side(tmp_path):
    env = dict(os.environ, EDGEPIPE_RUN_DIR=str(tmp_path / "runs"))
    # each its own emulated accelerator (one device belongs to one process)
    a = _start(dict(env, EDGEPIPE_DEVICE_LOCKS=str(tmp_path / "locks-a")))
    b = _start(dict(env, EDGEPIPE_DEVICE_LOCKS=str(tmp_path / "locks-b")))
    ctx = zmq.Context()
    try:
        ea, eb = _announced(a), _announced(b)
        assert ea["results"].startswith("ipc://") and ea["results"] != eb["results"]
        for ep in (ea, eb):
            folder = os.path.dirname(ep["results"][len("ipc://"):])
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
            assert os.path.dirname(folder) == str(tmp_path / "runs")
        assert stat.S_IMODE(os.stat(tmp_path / "runs").st_mode) == 0o700
        # an outside client (plain pyzmq) gets results from each
        for ep in (ea, eb):
            sub = ctx.socket(zmq.SUB)
            sub.linger = 0
            sub.subscribe(b"result")
            sub.connect(ep["results"])
            try:
                assert sub.poll(WAIT_S * 1000)
                assert sub.recv_multipart()[0] == b"result"
            finally:
                sub.close()
        # run.py metrics finds a pipeline by itself; with two it says what to pass
        m = subprocess.run([sys.executable, "run.py", "metrics", "--once"], cwd=str(ROOT), env=env,
                           capture_output=True, text=True, timeout=WAIT_S)
        assert m.returncode == 1 and "2 pipelines run; pass one of their endpoints with --endpoint" in m.stderr
        assert ea["metrics"] in m.stderr and eb["metrics"] in m.stderr
        m = subprocess.run([sys.executable, "run.py", "metrics", "--once", "--endpoint", ea["metrics"]],
                           cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=WAIT_S)
        # --once prints what arrived within --interval of the first snapshot: at least that actor's row, from
        # pipeline a's process (which other actors made it into that window is the clock's business, not this test's)
        assert m.returncode == 0, m.stderr
        rows = [line.split() for line in m.stdout.splitlines()]
        assert rows[0][:2] == ["actor", "pid"] and any(r[1:2] == [str(a.pid)] for r in rows[1:]), m.stdout
    finally:
        ctx.term()
        ra, rb = _stop(a), _stop(b)
    assert ra[0] == 0 and rb[0] == 0, (ra[2][-2000:], rb[2][-2000:])
    assert not (tmp_path / "runs").exists(), "the run folders and their ipc files are removed at exit"
    m = subprocess.run([sys.executable, "run.py", "metrics", "--once"], cwd=str(ROOT), env=env,
                       capture_output=True, text=True, timeout=WAIT_S)
    assert m.returncode == 1 and "no running pipeline under" in m.stderr


def test_a_busy_endpoint_says_what_to_pass(bus, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for endpoint in ("tcp://127.0.0.1:%d" % port, "ipc://%s/metrics" % tmp_path):
        first = bus.pub(endpoint, hwm=10, name="first")
        try:
            with pytest.raises(BusError) as err:
                bus.pub(endpoint, hwm=10, name="second")
            msg = str(err.value)
            assert "cannot bind %s: it is in use" % endpoint in msg
            assert "--metrics-endpoint tcp://127.0.0.1:PORT or ipc://PATH" in msg
        finally:
            first.close()
    # a stale socket file, left by a process that died, is taken over
    stale = tmp_path / "stale"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    assert stale.exists()
    bus.pub("ipc://%s" % stale, hwm=10, name="over-stale").close()


def test_the_run_folder_placeholder_needs_run_py(bus, tmp_path):
    with pytest.raises(BusError, match=r"names \{run\}, the run directory that `python run.py` makes"):
        bus.pub("ipc://%s/metrics" % RUN, hwm=10, name="alone")
    assert live_runs(str(tmp_path)) == []
    with pytest.raises(RunDirError, match="no running pipeline"):
        resolve("ipc://%s/metrics" % RUN, str(tmp_path))
    run = RunDir.create(str(tmp_path / "base"))
    try:
        assert run.expand("ipc://%s/results" % RUN) == "ipc://%s/results" % run.path
        assert live_runs(str(tmp_path / "base")) == [run.path]  # this process is alive
        assert resolve("ipc://%s/metrics" % RUN, str(tmp_path / "base")) == "ipc://%s/metrics" % run.path
    finally:
        run.remove()
    assert not (tmp_path / "base").exists()


def test_a_base_folder_of_someone_else_is_refused(tmp_path):
    base = tmp_path / "open"
    base.mkdir(mode=0o777)
    os.chmod(base, 0o777)
    run = RunDir.create(str(base))  # the user's own folder: tightened to 0700
    run.remove()
    if os.getuid() == 0:
        other = tmp_path / "other"
        other.mkdir()
        os.chown(other, 12345, 12345)
        with pytest.raises(RunDirError, match="is not a folder of this user's"):
            RunDir.create(str(other))
