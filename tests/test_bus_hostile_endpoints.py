"""Endpoints on a shared host (issue 11.13, 12.3, 21): the public ones in the folder of the pipeline's name,
known before it starts, private to the user; a second pipeline of one name refused, saying what to pass; a
client started first gets the first result; a busy endpoint says what to pass."""
from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import zmq

from edgepipe.bus.rundir import PIPELINE, RUN, RunDir, RunDirError, live_runs, resolve
from edgepipe.bus.sockets import BusError

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120  # an upper bound on waiting for an event, never a pacing delay


def _start(env, *args):
    return subprocess.Popen([sys.executable, "run.py", "--engine", "fake", "--source",
                             "synthetic:faces=1,fps=20,size=320x240", "--duration", "300"] + list(args),
                            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _announced(proc):
    """The endpoints a pipeline prints on stdout when it is ready: {"results": ..., "metrics": ...}."""
    got = {}
    for line in proc.stdout:
        key, _, endpoint = line.strip().partition(" ")
        if key in ("results", "metrics") and endpoint.startswith(("ipc://", "tcp://")):
            got[key] = endpoint
            if len(got) == 2:
                return got
    raise AssertionError("the pipeline ended before it was ready (rc %s): %s" % (proc.wait(), proc.stderr.read()))


def _endpoints(env, *args):
    p = subprocess.run([sys.executable, "run.py", "endpoints"] + list(args), cwd=str(ROOT), env=env,
                       capture_output=True, text=True, timeout=WAIT_S)
    assert p.returncode == 0, p.stderr
    return dict(line.split(" ", 1) for line in p.stdout.splitlines())


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def test_two_pipelines_with_two_names_run_side_by_side_and_a_second_of_one_name_is_refused(tmp_path):
    env = dict(os.environ, EDGEPIPE_RUN_DIR=str(tmp_path / "runs"))
    runs = tmp_path / "runs"
    # known before the start, the same as what the pipeline prints when it is ready
    known = {n: _endpoints(env, *(["--name", n] if n != "default" else [])) for n in ("default", "cam2")}
    assert known["default"] == {"results": "ipc://%s/default/results" % runs, "metrics": "ipc://%s/default/metrics" % runs}
    # each its own emulated accelerator (one device belongs to one process)
    a = _start(dict(env, EDGEPIPE_DEVICE_LOCKS=str(tmp_path / "locks-a")))
    b = _start(dict(env, EDGEPIPE_DEVICE_LOCKS=str(tmp_path / "locks-b")), "--name", "cam2")
    ctx = zmq.Context()
    try:
        ea, eb = _announced(a), _announced(b)
        assert ea == known["default"] and eb == known["cam2"]
        assert _endpoints(env) == ea  # while it runs too
        for ep in (ea, eb):
            folder = os.path.dirname(ep["results"][len("ipc://"):])
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
            assert os.path.dirname(folder) == str(runs)
        assert stat.S_IMODE(os.stat(runs).st_mode) == 0o700
        # a second pipeline of a name that runs is refused, saying what to pass; the first goes on
        c = subprocess.run([sys.executable, "run.py", "--engine", "fake", "--source", "synthetic:faces=1,fps=0",
                            "--frames", "3", "--name", "cam2"], cwd=str(ROOT),
                           env=dict(env, EDGEPIPE_DEVICE_LOCKS=str(tmp_path / "locks-c")),
                           capture_output=True, text=True, timeout=WAIT_S)
        assert c.returncode == 1 and "a pipeline named 'cam2' already runs on this host (pid %d" % b.pid in c.stderr
        assert "--name NAME, or pipeline.name" in c.stderr and "Traceback" not in c.stderr
        # an outside client (plain pyzmq) gets results from each
        for ep in (ea, eb):
            sub = ctx.socket(zmq.SUB)
            sub.linger = 0
            sub.subscribe(b"result")
            sub.connect(ep["results"])
            try:
                assert sub.poll(WAIT_S * 1000)
                assert sub.recv_multipart()[0] == b"result/default/"  # the topic: kind and camera
            finally:
                sub.close()
        # run.py metrics finds a pipeline by its name
        for name, ep, proc in (("default", ea, a), ("cam2", eb, b)):
            m = subprocess.run([sys.executable, "run.py", "metrics", "--once"] + (["--name", name] if name != "default"
                                                                                   else []),
                               cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=WAIT_S)
            # --once prints what arrived within --interval of the first snapshot: at least that actor's row, from
            # that pipeline's process (which other actors made it into that window is the clock's business)
            assert m.returncode == 0, m.stderr
            rows = [line.split() for line in m.stdout.splitlines()]
            assert rows[0][:2] == ["actor", "pid"] and any(r[1:2] == [str(proc.pid)] for r in rows[1:]), m.stdout
        m = subprocess.run([sys.executable, "run.py", "metrics", "--once", "--name", "cam3"], cwd=str(ROOT), env=env,
                           capture_output=True, text=True, timeout=WAIT_S)
        assert m.returncode == 1 and "no pipeline named 'cam3' runs" in m.stderr
        assert "running: cam2, default (pass --name)" in m.stderr
    finally:
        ctx.term()
        ra, rb = _stop(a), _stop(b)
    assert ra[0] == 0 and rb[0] == 0, (ra[2][-2000:], rb[2][-2000:])
    assert not runs.exists(), "the pipelines' folders and their ipc files are removed at exit"
    m = subprocess.run([sys.executable, "run.py", "metrics", "--once"], cwd=str(ROOT), env=env,
                       capture_output=True, text=True, timeout=WAIT_S)
    assert m.returncode == 1 and "no pipeline named 'default' runs" in m.stderr


def test_a_client_started_first_gets_the_first_result_and_a_dead_pipelines_folder_is_taken_over(tmp_path):
    env = dict(os.environ, EDGEPIPE_RUN_DIR=str(tmp_path / "runs"))
    folder = tmp_path / "runs" / "default"
    # what a pipeline killed with SIGKILL leaves: its folder, its lock file (no one holds it) and stale sockets
    folder.mkdir(parents=True, mode=0o700)
    (folder / "lock").write_text("%d\n" % (2 ** 22 + 1))
    for name in ("results", "metrics"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(folder / name))
        s.close()
    known = _endpoints(env)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"result")
    sub.setsockopt(zmq.RECONNECT_IVL, 10)  # ms; ZeroMQ retries until the path appears (default 100 ms)
    sub.connect(known["results"])  # before the pipeline binds it
    try:
        p = subprocess.run([sys.executable, "run.py", "--engine", "fake", "--source",
                            "synthetic:faces=1,fps=0,size=320x240", "--frames", "3"], cwd=str(ROOT), env=env,
                           capture_output=True, text=True, timeout=WAIT_S)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[:2] == ["results " + known["results"], "metrics " + known["metrics"]]
        ids = []
        while sub.poll(0):  # all three were queued for this client before the run ended
            frames = sub.recv_multipart()
            ids.append(msgspec.msgpack.decode(frames[1])[3]["frame_id"])
        assert ids == [0, 1, 2]
    finally:
        sub.close()
        ctx.term()
    assert not folder.exists()


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
    for placeholder in (RUN, PIPELINE):
        with pytest.raises(BusError, match=re.escape("names %s, a folder that `python run.py` makes" % placeholder)):
            bus.pub("ipc://%s/metrics" % placeholder, hwm=10, name="alone")
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
