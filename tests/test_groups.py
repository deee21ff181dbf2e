"""Process groups for real: child interpreters, Python 3.9, death, start-up timeouts, CURVE."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from helpers import ASSETS, inproc_config, run_async, wait_pipeline_ready

from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.loading import ConfigError, GroupConfig
from edgepipe.pipeline.ops.keys import generate
from edgepipe.pipeline.runner import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]


def find_python39():
    """A working Python 3.9: $EDGEPIPE_PY39, pyenv's 3.9.x, or python3.9 on the PATH."""
    candidates = [os.environ.get("EDGEPIPE_PY39", "")]
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
        candidates += sorted(str(p) for p in Path(root, "versions").glob("3.9.*/bin/python"))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append(shutil.which("python3.9") or "")
    for c in filter(None, candidates):
        try:
            out = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            continue
        if out == "True":
            return c
    return None


@pytest.fixture(scope="session")
def tpu_python(tmp_path_factory):
    """The TPU venv's Python 3.9: the venv in $EDGEPIPE_TPU_VENV when it works (one CI or the user made),
    else one made with `run.py setup-tpu-venv` in a temporary folder -- never inside the repository."""
    imports = "import msgspec, zmq, cv2, numpy, anyio"  # what a TPU-side group imports; an older venv may lack one
    given = os.environ.get("EDGEPIPE_TPU_VENV")
    if given:
        vpy = Path(given) / "bin" / "python"
        if vpy.exists() and subprocess.run([str(vpy), "-c", imports], capture_output=True).returncode == 0:
            return str(vpy)
    py39 = find_python39()
    if py39 is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test the Python 3.9 group, but no Python 3.9 was found")
        pytest.skip("no Python 3.9 on this machine (set EDGEPIPE_PY39)")
    from edgepipe.pipeline.ops.tpu_venv import setup
    venv = tmp_path_factory.mktemp("venv-tpu")
    setup(py39, str(venv), [])
    vpy = venv / "bin" / "python"
    return str(vpy)


def ready_pipeline_proc(args, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, "-v"], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, wait_pipeline_ready(proc)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as fh:  # a zombie is not alive
        return fh.read().split()[2] != "Z"


def write_groups_config(tmp_path, groups_toml, extra="", deadline_ms=None):
    base = (ROOT / "config.toml").read_text()
    if deadline_ms is not None:  # the aggregator's join deadline
        base += "\n[aggregator]\ndeadline_ms = %s\n" % deadline_ms
    path = tmp_path / "groups.toml"
    path.write_text(base + "\n" + groups_toml + "\n" + extra)
    return str(path)


def test_tpu_group_runs_under_python39_with_real_models(tpu_python, tmp_path):
    video = ASSETS / "video" / "WolfgangLanger_Pexels.mp4"
    source = "video:%s" % video if video.exists() else "demo:unpaced"
    # a generous join deadline: this checks answers and accounting, and a loaded machine must not make frames partial
    cfg = write_groups_config(tmp_path, '[groups.tpu]\nactors = ["detector", "fer"]\npython = "%s"\n' % tpu_python,
                              deadline_ms=60000)
    summary = tmp_path / "s.json"
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", cfg, "--profile", "fd+fer64", "--engine",
                        "cpu", "--source", source, "--frames", "100", "--summary", str(summary)],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads(summary.read_text())
    groups = {g["name"]: g for g in s["groups"]}
    assert groups["tpu"]["version"].startswith("3.9."), groups
    assert groups["main"]["version"] == sys.version.split()[0]
    assert set(groups["tpu"]["actors"]) == {"detector", "fer-0", "fer-1"}
    assert groups["tpu"]["pid"] != groups["main"]["pid"]
    assert s["frames_completed"] == 100 and s["unaccounted"] == 0
    # one face in every frame; blazeface-full at its own tuned threshold (0.6) scores frame 59's at 0.599
    assert 99 <= s["faces"]["faces"] <= 100
    assert s["endpoints"]["encoded"].startswith("ipc://")
    assert not list(tmp_path.glob("edgepipe-*")), "run folder with ipc files left behind"


def test_killing_the_tpu_group_stops_everything(tmp_path):
    cfg = write_groups_config(tmp_path, '[groups.tpu]\nactors = ["detector", "fer"]\n')
    proc, pids = ready_pipeline_proc(["--config", cfg, "--engine", "fake", "--source", "synthetic:faces=2,fps=30",
                                      "--duration", "60"],
                                     tmp_path)
    try:
        assert "tpu" in pids
        os.kill(pids["tpu"], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)  # a guard against a hang, not a speed check: the run asked for 60 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "group tpu" in err and "killed by signal 9" in err
    assert not alive(pids["tpu"])
    assert not list(tmp_path.glob("edgepipe-*")), "ipc files left behind"


def test_group_that_never_becomes_ready_is_named(tmp_path):
    fake_python = tmp_path / "stuck-python"
    fake_python.write_text("#!/bin/sh\necho 'loading the Edge TPU runtime...'\nexec sleep 600\n")
    fake_python.chmod(0o755)
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"})
    cfg.groups = {"tpu": GroupConfig(actors=["detector", "fer"], python=str(fake_python), startup_timeout_s=1.0)}
    with pytest.raises(Exception) as err:
        run_async(run(cfg, RunOptions(frames=10)))
    text = str(err.value)
    assert "group tpu did not become ready within 1 s" in text
    assert "loading the Edge TPU runtime" in text
    out = subprocess.run(["pgrep", "-f", str(fake_python)], capture_output=True, text=True).stdout
    assert not out.strip(), "the stuck group was left running"


def test_group_that_fails_at_start_up_is_named(tmp_path):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0", "engine": "cpu"})
    cfg.models.paths = [str(tmp_path)]
    cfg.groups = {"tpu": GroupConfig(actors=["detector"], python=sys.executable)}
    cfg.profiles["fd+fer64"].detector = "retinaface"  # not in the given folder and no download source
    with pytest.raises(Exception) as err:
        run_async(run(cfg, RunOptions(frames=10)))
    assert "group tpu" in str(err.value) and "before it was ready" in str(err.value)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_hosts_over_curve_and_a_wrong_key_gets_nothing(tmp_path):
    keys = tmp_path / "keys"
    generate(str(keys))
    rogue = tmp_path / "rogue"
    generate(str(rogue))
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=100"})
    for name in ("encoded", "detections", "expressions", "metrics_in", "control"):
        setattr(cfg.endpoints, name, "tcp://127.0.0.1:%d" % free_port())
    cfg.security.keys_dir = str(keys)
    cfg.groups = {"tpu": GroupConfig(actors=["detector", "fer"])}
    seen = {}

    async def rogue_subscriber(endpoint):
        import zmq.auth
        ctx = zmq.asyncio.Context()
        sub = ctx.socket(zmq.SUB)
        monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            pub, secret = zmq.auth.load_certificate(str(rogue / "client.key_secret"))
            server_pub, _ = zmq.auth.load_certificate(str(keys / "server.key"))
            sub.curve_publickey, sub.curve_secretkey, sub.curve_serverkey = pub, secret, server_pub
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.linger = 0
            sub.connect(endpoint)
            from zmq.utils.monitor import recv_monitor_message
            event = await recv_monitor_message(monitor)  # the server's verdict on the handshake
            seen["event"] = event["event"]
            seen["received"] = await sub.poll(0)
        finally:
            sub.disable_monitor()
            monitor.close(0)
            sub.close(0)
            ctx.term()

    async def main():
        ready = asyncio.Event()
        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=60), on_ready=lambda p: ready.set()))
        try:
            await ready.wait()
            await rogue_subscriber(cfg.endpoints.detections)
        finally:
            summary = await runner
        return summary

    s = run_async(main(), timeout=90)
    assert seen["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert not seen["received"]
    assert s["frames_captured"] == 60 and s["unaccounted"] == 0
    assert s["frames_completed"] > 0 and s["faces"]["matched"] == s["faces"]["truth"]
    assert {g["name"] for g in s["groups"]} == {"main", "tpu"}


def test_non_loopback_tcp_needs_keys():
    with pytest.raises(ConfigError, match=r"endpoints.encoded = tcp://192.168.1.20:5601.*CURVE"):
        config.from_dict({"endpoints": {"encoded": "tcp://192.168.1.20:5601"}})
    config.from_dict({"endpoints": {"encoded": "tcp://127.0.0.1:5601"}})  # loopback: fine


def test_two_groups_cannot_share_a_tpu():
    data = {"pipeline": {"engine": "edgetpu"},
            "groups": {"a": {"actors": ["detector"]}, "b": {"actors": ["fer"]}},
            "profiles": {"fd+fer64": {"detector": "x", "fer": "y"}}}
    with pytest.raises(ConfigError, match="both claim Edge TPU 'default'"):
        config.from_dict(data)
    data["groups"]["b"]["tpu"] = "usb:1"
    config.from_dict(data)


def test_bad_group_config_is_named():
    with pytest.raises(ConfigError, match=r"groups.tpu.actors\[0\]: 'capture' runs in the main process"):
        config.from_dict({"groups": {"tpu": {"actors": ["capture"]}}})
    with pytest.raises(ConfigError, match=r"groups.b.actors\[0\]: 'fer' is already in group 'a'"):
        config.from_dict({"groups": {"a": {"actors": ["fer"]}, "b": {"actors": ["fer"]}}})
    with pytest.raises(ConfigError, match=r"groups.tpu.actors\[0\]: unknown actor 'gpu'"):
        config.from_dict({"groups": {"tpu": {"actors": ["gpu"]}}})


def test_keys_command_writes_key_pairs(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "keys", str(tmp_path / "k")], capture_output=True,
                       text=True, cwd=str(ROOT), timeout=60)
    assert p.returncode == 0, p.stderr
    names = sorted(x.name for x in (tmp_path / "k").iterdir())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert (tmp_path / "k" / "server.key_secret").stat().st_mode & 0o077 == 0
