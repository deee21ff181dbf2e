"""A camera on another host: its capture and encoder in a group started by hand (``[groups.NAME] cameras``),
sending its frames to the main process over CURVE-secured tcp. Two processes on loopback, as the README's
two commands run them."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth
from helpers import wait_pipeline_ready
from zmq.utils.monitor import recv_monitor_message

from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.loading import ConfigError
from edgepipe.pipeline.ops.keys import generate

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote_config(tmp_path, source_a, source_b=None):
    """Camera ``a`` run by group ``pizero`` (started by hand), camera ``b`` (if any) in the main process;
    every link between the two processes on loopback tcp with CURVE keys."""
    keys = tmp_path / "keys"
    generate(str(keys))
    eps = "\n".join('%s = "tcp://127.0.0.1:%d"' % (link, free_port()) for link in ("results", "metrics_in", "control"))
    path = tmp_path / "remote.toml"
    path.write_text(
        '[cameras.a]\nsource = "%s"\nencoded = "tcp://127.0.0.1:%d"\n\n%s'
        '[endpoints]\n%s\nmetrics = "ipc://%s/metrics"\n\n[security]\nkeys_dir = "%s"\n\n'
        '[groups.pizero]\ncameras = ["a"]\nspawn = false\n'
        % (source_a, free_port(), '[cameras.b]\nsource = "%s"\n\n' % source_b if source_b else "", eps, tmp_path,
           keys))
    return str(path)


def start_group(cfg, tmp_path):
    """``python run.py group pizero --config PATH``, as on the camera's host."""
    log = open(tmp_path / "group.log", "w")
    try:
        return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "group", "pizero", "--config", cfg, "--engine",
                                 "fake", "-v"], cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    finally:
        log.close()


def start_main(cfg, summary):
    """``python run.py --config PATH`` for up to 120 s (the tests end it before), its log on a pipe."""
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--config", cfg, "--engine", "fake",
                             "--duration", "120", "--summary", str(summary), "-v"], cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop_quietly(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wrong_key_verdict(endpoint, tmp_path, start):
    """A subscriber with keys of its own connects to ``endpoint`` before ``start()`` binds it: the handshake's
    verdict (waited for, at most 120 s) and whether anything came through."""
    rogue = tmp_path / "rogue"
    generate(str(rogue))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                     | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        pub, secret = zmq.auth.load_certificate(str(rogue / "client.key_secret"))
        server_pub, _ = zmq.auth.load_certificate(str(tmp_path / "keys" / "server.key"))
        sub.curve_publickey, sub.curve_secretkey, sub.curve_serverkey = pub, secret, server_pub
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.linger = 0
        sub.connect(endpoint)
        started = start()
        assert monitor.poll(120000), "no handshake with %s within 120 s" % endpoint
        event = recv_monitor_message(monitor)["event"]
        return started, event, sub.poll(0)
    finally:
        sub.disable_monitor()
        monitor.close(0)
        sub.close(0)
        ctx.term()


def test_a_camera_in_a_group_started_by_hand_over_curve_tcp(tmp_path):
    cfg = remote_config(tmp_path, "synthetic:faces=1,fps=0", "synthetic:faces=2,fps=0,seed=3")
    summary, results = tmp_path / "s.json", tmp_path / "r.jsonl"
    group = None
    try:
        # the camera's encoder binds cameras.a.encoded with CURVE: a peer with other keys gets nothing
        group, event, received = wrong_key_verdict(config.load(cfg).cameras["a"].encoded, tmp_path,
                                                   lambda: start_group(cfg, tmp_path))
        assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and not received
        main = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", cfg, "--engine", "fake", "--frames",
                               "40", "--summary", str(summary), "--results", str(results)],
                              cwd=str(ROOT), capture_output=True, text=True, timeout=240)
        assert main.returncode == 0, main.stderr[-3000:]
        rc = group.wait(timeout=60)  # the main process ended the run: the group reports and stops
    finally:
        if group is not None:
            stop_quietly(group)
    glog = (tmp_path / "group.log").read_text()
    assert rc == 0, glog[-3000:]
    assert "group pizero ready: capture-a, encoder-a" in glog or "group pizero ready: encoder-a, capture-a" in glog
    s = json.loads(summary.read_text())
    groups = {g["name"]: g for g in s["groups"]}
    assert set(groups["pizero"]["actors"]) == {"capture-a", "encoder-a"}
    assert s["actors"]["capture-a"]["pid"] == groups["pizero"]["pid"] != groups["main"]["pid"]
    assert s["actors"]["capture-b"]["pid"] == groups["main"]["pid"]
    cams = s["cameras"]
    assert set(cams) == {"a", "b"}
    for name, cam in cams.items():
        assert cam["frames_captured"] == 40, (name, cam)  # --frames reaches the camera of the group too
        assert cam["frames_captured"] == cam["frames_completed"] + cam["frames_partial"] + cam["frames_dropped"]
        assert cam["frames_completed"] > 0 and cam["unaccounted"] == 0, (name, cam)
        assert cam["faces"] > 0, (name, cam)
    assert s["unaccounted"] == 0, s["dropped_by_reason"]
    by_camera = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        by_camera[r["camera"]] = by_camera.get(r["camera"], 0) + 1
    assert by_camera == {c: cams[c]["frames_completed"] + cams[c]["frames_partial"] for c in ("a", "b")}


def test_the_camera_group_going_away_ends_the_run_naming_it(tmp_path):
    cfg = remote_config(tmp_path, "synthetic:faces=1,fps=30", "synthetic:faces=1,fps=30")
    summary = tmp_path / "s.json"
    group = start_group(cfg, tmp_path)
    main = None
    try:
        main = start_main(cfg, summary)
        pids = wait_pipeline_ready(main)
        assert pids["pizero"] == group.pid
        os.killpg(group.pid, signal.SIGKILL)  # the camera's host goes away
        group.wait()
        out, err = main.communicate(timeout=90)  # a guard against a hang: the run asked for 120 s
    finally:
        for p in (group, main):
            if p is not None:
                stop_quietly(p)
    assert main.returncode == 1, err[-3000:]
    assert "group pizero (started by hand) went away" in err
    s = json.loads(summary.read_text())
    assert s["failure"]["group"] == "pizero"
    assert set(s["failure"]["actors_lost"]) == {"capture-a", "encoder-a"}
    assert "FAILED: group pizero" in out


def test_ctrl_c_ends_the_cameras_of_a_group_and_the_run_drains(tmp_path):
    """Every camera in a group: Ctrl-C on the main process is an interruption (the group's cameras are told
    to end, what is in flight drains), not a run whose sources ended."""
    cfg = remote_config(tmp_path, "synthetic:faces=1,fps=30")
    summary = tmp_path / "s.json"
    group = start_group(cfg, tmp_path)
    main = None
    try:
        main = start_main(cfg, summary)
        wait_pipeline_ready(main)
        main.send_signal(signal.SIGINT)
        out, err = main.communicate(timeout=90)  # a guard against a hang: the run asked for 120 s
        rc = group.wait(timeout=60)
    finally:
        for p in (group, main):
            if p is not None:
                stop_quietly(p)
    assert main.returncode == 0, err[-3000:]
    assert rc == 0, (tmp_path / "group.log").read_text()[-3000:]
    s = json.loads(summary.read_text())
    assert s["interrupted"] is True and s["drained"] is True, (s["interrupted"], s["drained"])
    cam = s["cameras"]["a"]
    assert cam["frames_captured"] == cam["frames_completed"] + cam["frames_partial"] + cam["frames_dropped"]
    assert cam["unaccounted"] == 0 and s["unaccounted"] == 0


@pytest.mark.parametrize("groups, match", [
    ({"g": {"cameras": ["c"]}}, r"groups.g.cameras\[0\]: unknown camera 'c' \(cameras: a, b\)"),
    ({"g": {"cameras": ["default"]}}, r"groups.g.cameras\[0\]: the one camera 'default'"),
    ({"g": {"cameras": ["a"]}, "h": {"cameras": ["a"]}}, r"groups.h.cameras\[0\]: camera 'a' is already in group 'g'"),
    ({"g": {"actors": ["capture"]}}, r"'capture' runs in the main process.*cameras = \[\"NAME\"\]"),
])
def test_bad_camera_groups_are_named(groups, match):
    data = {"cameras": {"a": {"source": "synthetic"}, "b": {"source": "synthetic"}}, "groups": groups}
    with pytest.raises(ConfigError, match=match):
        config.from_dict(data)


def test_a_camera_of_a_group_started_by_hand_needs_an_address_and_keys():
    data = {"cameras": {"a": {"source": "synthetic"}, "b": {"source": "synthetic"}},
            "endpoints": {"results": "tcp://127.0.0.1:5590", "metrics_in": "tcp://127.0.0.1:5591",
                          "control": "tcp://127.0.0.1:5592"},
            "groups": {"pizero": {"cameras": ["a"], "spawn": False}}}
    with pytest.raises(ConfigError, match=r"groups.pizero.spawn = false: cameras.a.encoded is inproc://"):
        config.from_dict(data)
    data["cameras"]["a"]["encoded"] = "tcp://192.168.1.30:5601"
    with pytest.raises(ConfigError, match=r"cameras.a.encoded = tcp://192.168.1.30:5601: .*CURVE.*keys DIR"):
        config.from_dict(data)
    data["cameras"]["a"]["encoded"] = "udp://x"
    with pytest.raises(ConfigError, match=r"cameras.a.encoded: endpoint 'udp://x' must start with"):
        config.from_dict(data)
    data["cameras"]["a"]["encoded"] = "tcp://127.0.0.1:5601"
    cfg = config.from_dict(data)
    assert cfg.groups["pizero"].cameras == ["a"]
