"""Several cameras in one run: one capture and one encoder per camera, the detector and the FER pool shared,
every message naming its camera, joins, order, tracks and accounting per camera, fair turns between live
cameras (the fake engine, the synthetic source)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from helpers import inproc_config, run_async

from edgepipe.bus import messages as m
from edgepipe.bus.codec import Codec, encode
from edgepipe.bus.sockets import camera_endpoint
from edgepipe.pipeline.config.loading import ConfigError, OptionError, from_dict, load, to_dict
from edgepipe.pipeline.config.sections import CameraConfig
from edgepipe.pipeline.runner import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]


def two_cameras(a: str, b: str, **sections):
    cfg = inproc_config(**sections)
    cfg.cameras = {"a": CameraConfig(source=a), "b": CameraConfig(source=b)}
    return cfg


def check_cameras(s, names=("a", "b")):
    assert s["leaked_sockets"] == [] and s["drained"]
    assert set(s["cameras"]) == set(names)
    for name in names:
        c = s["cameras"][name]
        assert c["unaccounted"] == 0, (name, c)
        assert c["frames_captured"] == c["frames_completed"] + c["frames_partial"] + c["frames_dropped"], (name, c)
    assert s["unaccounted"] == 0
    assert s["frames_captured"] == sum(s["cameras"][n]["frames_captured"] for n in names)


def lines_of(path: Path):
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        out.setdefault(r["camera"], []).append(r)
    return out


def test_two_recorded_cameras_every_frame_and_face_on_its_own_camera(tmp_path):
    cfg = two_cameras("synthetic:faces=1,fps=0,size=320x240,change=7", "synthetic:faces=3,fps=0,size=320x240,seed=5")
    results = tmp_path / "results.jsonl"
    s = run_async(run(cfg, RunOptions(frames=40, results_path=str(results))))
    check_cameras(s)
    assert set(s["actors"]) >= {"capture-a", "capture-b", "encoder-a", "encoder-b"}
    for name, faces in (("a", 1), ("b", 3)):
        c = s["cameras"][name]
        # recorded cameras lose no frame, and every result matches its own camera's truth
        assert c["frames_captured"] == c["frames_completed"] == c["frames_exact"] == 40, c
        assert c["faces"] == 40 * faces
    f = s["faces"]
    assert f["truth"] == f["matched"] == f["expression_correct"] == 40 * 4 and f["false_positives"] == 0
    by_camera = lines_of(results)
    tracks = {}
    for name, faces in (("a", 1), ("b", 3)):
        rs = by_camera[name]
        assert [r["frame_id"] for r in rs] == list(range(40))  # frame ids and order per camera
        for r in rs:  # a join never crosses cameras: a's results have a's faces, b's have b's
            assert len(r["faces"]) == faces == len(r["truth"]) and r["in_order"] and not r["partial"]
        tracks[name] = {f["track"] for r in rs for f in r["faces"]}
        assert len(tracks[name]) == faces  # each face followed across its own camera's frames
    assert not tracks["a"] & tracks["b"]  # tracks per camera, ids unique in the run


def test_a_flooding_camera_never_starves_a_quiet_one():
    # a: a 400 FPS "camera"; b: 10 FPS; the detector needs 15 ms a frame (at most ~66 FPS for both)
    cfg = two_cameras("synthetic:faces=1,fps=400,size=320x240", "synthetic:faces=2,fps=10,size=320x240")
    cfg.engine.fake.latency_ms = {"coral-ssd-face": 15.0}
    s = run_async(run(cfg, RunOptions(duration_s=2.0)))
    check_cameras(s)
    a, b = s["cameras"]["a"], s["cameras"]["b"]
    assert a["frames_dropped"] > 0 and a["dropped_by_reason"].get("stale", 0) > 0  # counted on a's account
    assert b["frames_captured"] >= 10
    assert b["frames_dropped"] == 0 and b["frames_completed"] == b["frames_captured"], b  # every quiet frame
    assert s["actors"]["detector"]["counters"].get("camera.a.dropped.stale", 0) == a["dropped_by_reason"]["stale"]


@pytest.mark.parametrize("fps", ["30", "0"])
def test_a_stalled_camera_holds_nobody(fps, tmp_path):
    # a stops delivering for 1.5 s before its frame 5; b goes on meanwhile (live, and recorded: its own credits)
    cfg = two_cameras("synthetic:faces=1,fps=%s,size=320x240,stall_at=5,stall_ms=1500" % fps,
                      "synthetic:faces=2,fps=%s,size=320x240" % fps)
    results = tmp_path / "results.jsonl"
    s = run_async(run(cfg, RunOptions(frames=40, results_path=str(results))))
    check_cameras(s)
    by_camera = lines_of(results)
    a = {r["frame_id"]: r["t_ms"] for r in by_camera["a"]}
    # a's last result before the stall and its first after (a live camera may lose a frame as stale there)
    before, after = max(f for f in a if f < 5), min(f for f in a if f >= 5)
    assert a[after] - a[before] >= 1000  # a's stall
    during = [r for r in by_camera["b"] if a[before] < r["t_ms"] < a[after]]
    assert len(during) >= 25, "b's results while a stalled: %d" % len(during)


def test_run_py_with_two_cameras(tmp_path):
    summary = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--engine", "fake", "--camera",
                           "a=synthetic:faces=1", "--camera", "b=synthetic:faces=2", "--frames", "20",
                           "--summary", str(summary)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads(summary.read_text())
    check_cameras(s)
    assert s["cameras"]["a"]["source"] == "synthetic:faces=1" and s["cameras"]["b"]["source"] == "synthetic:faces=2"
    for name in ("a", "b"):
        assert s["cameras"][name]["frames_captured"] == 20
        assert s["cameras"][name]["frames_completed"] > 0


def test_one_named_camera_with_a_display(tmp_path):
    """One camera that is not ``default``: the detector and the display derive its endpoints once (a
    regression: both were given the derived address and derived it again, and waited for ever)."""
    summary = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--engine", "fake", "--camera",
                           "solo=synthetic:faces=1", "--display", "web:0", "--frames", "10", "--summary",
                           str(summary)], cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads(summary.read_text())
    check_cameras(s, ("solo",))
    assert s["cameras"]["solo"]["frames_captured"] == 10 == s["cameras"]["solo"]["frames_completed"]


def test_cameras_in_the_config_and_on_the_command_line():
    cfg = load(None, camera=["left=v4l2:0", "right=synthetic:faces=2"])
    assert {k: c.source for k, c in cfg.camera_list().items()} == {"left": "v4l2:0", "right": "synthetic:faces=2"}
    data = to_dict(cfg)
    data["cameras"]["left"]["fps_limit"] = 5.0
    assert from_dict(data).cameras["left"].fps_limit == 5.0
    assert list(load(None).camera_list()) == ["default"]  # no [cameras]: the one camera default
    assert load(None, source="synthetic").camera_list()["default"].source == "synthetic"
    with pytest.raises(OptionError, match=r"^--camera left: expected NAME=SPEC"):
        load(None, camera=["left"])
    with pytest.raises(OptionError, match=r"^--camera a-b=v4l2:0: a camera's name"):
        load(None, camera=["a-b=v4l2:0"])
    with pytest.raises(OptionError, match=r"^--source demo: with --camera"):
        load(None, camera=["a=demo"], source="demo")
    assert load(None, camera=["a=demo", "b=demo"], display="web").pipeline.display == "web"  # a tile per camera
    with pytest.raises(ConfigError, match=r"pipeline.display: a video file records one camera"):
        load(None, camera=["a=demo", "b=demo"], display="file:out.mp4")
    data = to_dict(load(None))
    data["cameras"] = {"a": {"source": "demo", "fps": 3}}
    with pytest.raises(ConfigError, match=r"cameras.a"):
        from_dict(data)


def test_run_py_refuses_a_bad_camera_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--camera", "nospec"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--camera nospec" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_every_frame_message_names_its_camera_on_the_wire():
    codec = Codec()
    r = m.Result(3, 1.0, 2.0, 64, 48, [], False, True, camera="left")
    assert codec.decode(encode(r, 1)).camera == "left"
    default = encode(m.Done(3), 1)
    assert b"camera" not in bytes(default[1]) and codec.decode(default).camera == "default"  # left out
    assert default[0] == b"done/default/" and encode(r, 1)[0] == b"result/left/"  # the topic names it
    header = msgspec.msgpack.decode(bytes(encode(m.Eos("x", 1, 2, camera="b"), 1)[1]))
    assert header[0] == m.SCHEMA_VERSION == 5 and header[3]["camera"] == "b"


def test_each_camera_has_its_own_frames_and_encoded_endpoints():
    cams = ["a", "b"]
    assert camera_endpoint("inproc://frames", "default", ["default"]) == "inproc://frames"
    assert camera_endpoint("inproc://frames", "b", cams) == "inproc://frames.b"
    assert camera_endpoint("ipc:///run/x/encoded", "a", cams) == "ipc:///run/x/encoded.a"
    assert camera_endpoint("tcp://127.0.0.1:5600", "b", cams) == "tcp://127.0.0.1:5601"
