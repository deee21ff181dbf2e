"""`python run.py doctor` against the Pi 5 machine tree in tests/data/pi5-root, an empty tree and this machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.models.engines.delegate_probe import ProbeResult
from edgepipe.pipeline.config.loading import ProfileConfig, load
from edgepipe.pipeline.ops import verdict
from edgepipe.pipeline.ops.doctor import APT_CORAL, Doctor, render

HERE = Path(__file__).resolve().parent
PI5 = HERE / "data" / "pi5-root"
CAPS = {k: int(v, 16) for k, v in json.loads((HERE / "data" / "pi5-v4l2-caps.json").read_text()).items()}
ASSET_MODELS = HERE.parent.parent / "shared" / "assets" / "models"
IMX708 = [{"Model": "imx708", "Location": "2", "Rotation": "180", "Num": "0",
           "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a"}]
LIBEDGETPU_16 = "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted),RuntimeVersion(14)"


def recorded_caps(dev: Path):
    return CAPS.get(dev.name)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path / "cache"))  # an empty cache: only models.paths count
    monkeypatch.delenv("EDGEPIPE_MODEL_PATH", raising=False)
    over = tmp_path / "over.toml"
    over.write_text("[models]\npaths = [%s]\n" % json.dumps(str(ASSET_MODELS)))
    return load(str(over))


def by(findings, section, status=None):
    return [f for f in findings if f.section == section and (status is None or f.status == status)]


def pi5_doctor(cfg, tmp_path, probe_result):
    return Doctor(str(PI5), cfg, repo=tmp_path, querycap=recorded_caps, picameras=lambda: (IMX708, ""),
                  probe=lambda python: probe_result)


def test_pi5_tree_with_a_working_probe(cfg, tmp_path):
    ok = ProbeResult(True, "tflite-runtime", "2.11.0", LIBEDGETPU_16, "done")
    findings = pi5_doctor(cfg, tmp_path, ok).run()
    lib = [f.text for f in by(findings, "libedgetpu")]
    assert lib[0] == "installed: libedgetpu1-std 16.0"  # libedgetpu1-max is only config-files: not installed
    assert lib[1] == ("library: /usr/lib/aarch64-linux-gnu/libedgetpu.so.1, "
                      "/usr/lib/aarch64-linux-gnu/libedgetpu.so.1.0")
    assert lib[2] == "delegate probe: loads (runtime tflite-runtime 2.11.0, libedgetpu %s)" % LIBEDGETPU_16
    tpus = by(findings, "edgetpu")
    assert [(f.status, f.text) for f in tpus] == [
        ("warn", "USB 1-1 1a6e:089a: Coral USB Accelerator, not yet initialised (its firmware loads when the "
                 "runtime first opens it), 480 Mb/s (a USB 2 port: about 3x slower)"),
        ("ok", "USB 2-1 18d1:9302: Coral USB Accelerator, initialised, 5000 Mb/s"),
        ("ok", "PCIe /dev/apex_0")]
    assert tpus[0].fix == "plug the accelerator into a blue USB 3 port"
    cams = [(f.status, f.text) for f in by(findings, "camera")]
    # the CSI front end, ISP and decoder nodes are no V4L2 cameras; the webcam's metadata node is none either
    assert cams == [("ok", "Picamera2 camera 0: imx708 (--source picamera2)"),
                    ("ok", "V4L2 capture node /dev/video8 'UVC Camera (046d:0825)' (uvcvideo) (--source v4l2:8)")]
    temp = by(findings, "temperature")
    assert [(f.status, f.text) for f in temp] == [("warn", "cpu-thermal: 84.3 C: a Pi 5 throttles from 80-85 C")]
    assert "Active Cooler" in temp[0].fix
    venv = by(findings, "tpu-venv")
    assert venv[0].status == "warn" and "setup-tpu-venv" in venv[0].fix


def test_user_outside_the_device_groups_is_told(cfg, tmp_path):
    doctor = Doctor(str(PI5), cfg, repo=tmp_path, querycap=recorded_caps, picameras=lambda: ([], ""),
                    probe=lambda python: ProbeResult(True), user_groups=["pi", "video"])
    warns = [(f.text, f.fix) for f in by(doctor.run(), "edgetpu", "warn") if "group" in f.text]
    assert [fix for _, fix in warns] == ["sudo usermod -aG plugdev $USER   # then log in again",
                                         "sudo usermod -aG apex $USER   # then log in again"]


def test_pi5_tree_with_a_crashing_probe(cfg, tmp_path):
    crash = ProbeResult(False, "ai-edge-litert", "2.1.0", LIBEDGETPU_16, "loading the delegate",
                        "the Edge TPU delegate crashed the probe process (SIGSEGV) ...", -11)
    findings = pi5_doctor(cfg, tmp_path, crash).run()
    bad = by(findings, "libedgetpu", "fail")
    assert len(bad) == 1 and "SIGSEGV" in bad[0].text and "setup-tpu-venv" in bad[0].fix


def test_models_per_profile(cfg, tmp_path):
    findings = pi5_doctor(cfg, tmp_path, ProbeResult(True)).run()
    texts = {f.text: f for f in by(findings, "models")}
    assert "profile fd+fer112, --engine cpu: all files present (detector retinaface, fer fer112)" in texts
    assert "profile fd+fer112, --engine edgetpu: all files present (detector retinaface (CPU file), fer fer112)" \
        in texts
    assert "profile cls-imagenet, --engine cpu: all files present (classifier mobilenet-v2)" in texts
    # BlazeFace and FER64 come from wheels (not in the shared folder, the cache is empty): fetchable
    from edgepipe.models.store.manifest import get
    det = get(cfg.profiles["fd+fer64"].models("cpu").detector)
    f = texts["profile fd+fer64, --engine cpu: detector %s: %s not fetched" % (det.name, det.files["cpu"])]
    assert f.status == "warn" and f.fix.startswith("python run.py models fetch %s" % det.name)


def test_empty_machine_says_what_is_missing(cfg, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    findings = Doctor(str(root), cfg, repo=tmp_path, querycap=recorded_caps).run()
    assert [f.status for f in by(findings, "libedgetpu")] == ["fail"]
    assert "libedgetpu1-std" in by(findings, "libedgetpu")[0].fix
    tpu = by(findings, "edgetpu")
    assert [f.status for f in tpu] == ["fail"] and "1a6e:089a, 18d1:9302" in tpu[0].text
    assert [f.status for f in by(findings, "camera")] == ["warn"]
    assert [f.status for f in by(findings, "temperature")] == ["info"]
    text = render(findings, str(root))
    problems = sum(1 for f in findings if f.status in ("warn", "fail"))
    assert text.splitlines()[-1] == "%d problem(s), each with the command that fixes it" % problems
    for f in findings:
        if f.status in ("warn", "fail"):
            assert f.fix, f.text


def doctor_json(*args, env=None):
    p = subprocess.run([sys.executable, str(HERE.parent / "run.py"), "doctor", "--json", *args], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def cell(report, profile, engine):
    return next(c for c in report["runs"] if (c["profile"], c["engine"]) == (profile, engine))


def test_doctor_on_this_machine():
    """The real run: this 2-core x86_64 machine has no Edge TPU, no camera and no libedgetpu."""
    rc, report = doctor_json()
    findings = report["findings"]
    sections = {f["section"] for f in findings}
    assert {"python", "tpu-venv", "libedgetpu", "edgetpu", "camera", "models", "temperature"} <= sections
    py = [f for f in findings if f["section"] == "python"]
    assert py[0]["text"].startswith("Python %d.%d." % sys.version_info[:2])
    no_tpu = not Path("/sys/bus/usb/devices").is_dir() and not list(Path("/dev").glob("apex_*"))
    if no_tpu:
        assert [f["status"] for f in findings if f["section"] == "edgetpu"] in (["note"], ["fail"])
        assert not any(c["runs"] for c in report["runs"] if c["engine"] == "edgetpu")
    # the exit code follows the rule: 0 when the profile asked for runs on an engine asked for
    asked = report["asked"]
    runs = [c for c in report["runs"] if c["profile"] == asked["profile"] and c["engine"] in asked["engines"]]
    assert rc == (0 if any(c["runs"] for c in runs) else 1)
    assert report["exit"] == rc and report["verdict"].startswith("verdict: ")


def has_cpu_runtime():
    import importlib.util
    return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime"))


@pytest.fixture
def env_assets(tmp_path):
    """This machine's environment with the shared models as the search folder and an empty model cache."""
    if not ASSET_MODELS.is_dir():
        pytest.skip("the shared assets are not here: %s" % ASSET_MODELS)
    env = dict(os.environ, EDGEPIPE_MODEL_PATH=str(ASSET_MODELS), EDGEPIPE_CACHE=str(tmp_path / "empty-cache"))
    return env


def test_verdict_without_fd_fer64_models(env_assets):
    """The shared folder has FER112's and RetinaFace's files but not BlazeFace's or FER64's (the wheels')."""
    rc, report = doctor_json("--profile", "fd+fer64", "--engine", "cpu", env=env_assets)
    c = cell(report, "fd+fer64", "cpu")
    assert not c["runs"] and rc == 1
    why = [w["text"] for w in c["why_not"]]
    assert "detector blazeface-full: face_detection_full_range.tflite not fetched" in why
    assert {w["fix"] for w in c["why_not"]} >= {"python run.py models fetch blazeface-full"}
    fails = [f for f in report["findings"] if f["status"] == "fail"]
    assert fails and all(f["blocks"] for f in fails)  # nothing asked runs: what stops it is a FAIL
    assert report["verdict"] == "verdict: fd+fer64 runs on none of cpu here; the fixes are above"
    if has_cpu_runtime():  # the same machine runs fd+fer112 from the shared folder
        rc, report = doctor_json("--profile", "fd+fer112", "--engine", "cpu", env=env_assets)
        assert rc == 0 and cell(report, "fd+fer112", "cpu")["runs"]
        assert not [f for f in report["findings"] if f["status"] == "fail"]


def test_verdict_with_fd_fer64_models(env_assets, tmp_path):
    """fd+fer64 on the CPU says yes once its files are in a search folder."""
    from edgepipe.models.store import fetch
    from edgepipe.models.store.manifest import get
    found = {}
    for name in ("blazeface-full", "fer64"):
        spec = get(name)
        where = fetch.locate(spec, spec.files["cpu"], [str(ASSET_MODELS)])
        if where is None:
            pytest.skip("%s is not fetched on this machine (python run.py models fetch %s)" % (name, name))
        found[spec.files["cpu"]] = where
    if not has_cpu_runtime():
        pytest.skip("no TFLite runtime in this Python")
    linked = tmp_path / "linked"
    linked.mkdir()
    for fname, where in found.items():
        (linked / fname).symlink_to(where)
    env = dict(env_assets, EDGEPIPE_MODEL_PATH=os.pathsep.join([str(ASSET_MODELS), str(linked)]))
    p = subprocess.run([sys.executable, str(HERE.parent / "run.py"), "doctor", "--engine", "cpu"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "> fd+fer64       cpu      yes (detector blazeface-full, fer fer64)" in p.stdout.splitlines()
    assert p.stdout.splitlines()[-1] == "verdict: fd+fer64 runs here on cpu: python run.py --profile fd+fer64 " \
                                        "--engine cpu"
    assert "[FAIL]" not in p.stdout


def test_verdict_on_the_pi5_tree(cfg, tmp_path):
    findings = pi5_doctor(cfg, tmp_path, ProbeResult(True)).run()
    table = verdict.cells(cfg, findings)
    runs = {(c.profile, c.engine): c for c in table}
    assert runs[("fd+fer112", "edgetpu")].runs and runs[("fd+fer112", "cpu")].runs
    assert [n.label("edgetpu") for n in runs[("fd+fer112", "edgetpu")].roles] == [
        "detector retinaface (CPU file)", "fer fer112"]
    cpu_only = [c for c in table if c.engine == "edgetpu" and all(n.runs_on == "cpu" for n in c.roles)]
    for c in cpu_only:  # no model of the profile has an Edge TPU file: "edgetpu" would be the CPU
        assert not c.runs and c.blockers[0][1] == "run it with --engine cpu"
    only_cpu = ProfileConfig(classifier="mobilenet-v2")  # MobileNetV2 ImageNet has no Edge TPU file
    assert [(n.model, n.runs_on) for n in verdict.needs(only_cpu, "edgetpu", [])] == [("mobilenet-v2", "cpu")]
    tpu = runs[("fd+fer64", "edgetpu")]
    assert tpu.uses == ["cpu", "edgetpu"]  # FER64 has no Edge TPU file: it runs on the CPU
    assert tpu.blockers == [("detector coral-ssd-face: ssd_mobilenet_v2_face_quant_postprocess_edgetpu.tflite "
                             "not fetched", "python run.py models fetch coral-ssd-face"),
                            ("fer fer64: emotion_model_quantized.tflite not fetched",
                             "python run.py models fetch fer64")]
    assert verdict.judge(findings, table, "fd+fer112", ["edgetpu"]) == 0
    lines = verdict.render(table, "fd+fer112", ["edgetpu"], 0)
    assert lines[-1] == "verdict: fd+fer112 runs here on edgetpu: python run.py --profile fd+fer112 --engine edgetpu"


def test_what_stops_nothing_asked_is_a_note(cfg, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    findings = Doctor(str(root), cfg, repo=tmp_path, querycap=recorded_caps).run()
    table = verdict.cells(cfg, findings)
    tpu = {(c.profile, c.engine): c for c in table}[("fd+fer112", "edgetpu")]
    assert [t for t, _ in tpu.blockers] == ["libedgetpu (the Edge TPU runtime) is not installed",
                                            "no Edge TPU: none on USB (ids 1a6e:089a, 18d1:9302) or PCIe "
                                            "(/dev/apex_*)"]
    if not {(c.profile, c.engine): c for c in table}[("fd+fer112", "cpu")].runs:
        pytest.skip("no TFLite runtime in this Python: fd+fer112 runs on no engine here")
    assert verdict.judge(findings, table, "fd+fer112", ["cpu", "edgetpu"]) == 0  # auto: the CPU runs it
    assert [f.status for f in by(findings, "libedgetpu") + by(findings, "edgetpu")] == ["note", "note"]
    # the models of other profiles stop nothing asked for either
    assert all(f.status == "note" for f in by(findings, "models") if f.cell[0] != "fd+fer112" and f.status != "ok")
    text = render(findings, str(root))
    assert "[FAIL]" not in text and "note(s): what stops nothing asked for" in text.splitlines()[-1]


def test_what_stops_everything_asked_is_a_fail(cfg, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    findings = Doctor(str(root), cfg, repo=tmp_path, querycap=recorded_caps).run()
    table = verdict.cells(cfg, findings)
    assert verdict.judge(findings, table, "fd+fer112", ["edgetpu"]) == 1
    assert [f.status for f in by(findings, "libedgetpu") + by(findings, "edgetpu")] == ["fail", "fail"]
    assert by(findings, "temperature")[0].status == "info"  # no sensor: never a problem
    lines = verdict.render(table, "fd+fer112", ["edgetpu"], 1)
    assert lines[-1] == "verdict: fd+fer112 runs on none of edgetpu here; the fixes are above"
    assert any(line.strip() == "fix: %s" % APT_CORAL for line in lines)


def test_the_probe_leaves_a_claimed_edge_tpu_alone(cfg, tmp_path):
    from edgepipe.models.engines.devices import open_device, release_device

    def probe(python):
        raise AssertionError("the probe would open a device another process has claimed")

    dev = open_device("edgetpu:", "edgetpu")  # the claim a run takes (a lock file; no hardware is touched)
    try:
        findings = Doctor(str(PI5), cfg, repo=tmp_path, querycap=recorded_caps, picameras=lambda: ([], ""),
                          probe=probe).run()
    finally:
        release_device(dev)
    skipped = [f for f in by(findings, "libedgetpu") if "probe skipped" in f.text]
    assert len(skipped) == 1 and "pid %d" % os.getpid() in skipped[0].text


def test_numpy2_under_system_picamera2_is_a_problem(cfg, tmp_path):
    import numpy
    findings = pi5_doctor(cfg, tmp_path, ProbeResult(True)).run()
    shadow = [f for f in by(findings, "python", "fail") if "shadows the system numpy" in f.text]
    assert len(shadow) == (1 if numpy.__version__.startswith("2") else 0)
    for f in shadow:
        assert f.fix == "python -m pip install -c constraints/pi-bookworm.txt 'numpy<2'"


def test_querycap_of_a_node_that_is_no_v4l2_device():
    from edgepipe.pipeline.ops.machine import querycap
    assert querycap(Path("/dev/null")) is None  # ENOTTY: not a V4L2 device
    assert querycap(Path("/dev/video-not-here")) is None


def test_ldconfig_lists_libraries_by_name():
    from edgepipe.pipeline.ops.machine import ldconfig_paths
    libc = ldconfig_paths("libc.so.6")
    assert libc and all(Path(p).name == "libc.so.6" for p in libc)
    assert ldconfig_paths("libedgetpu-not-here.so") == []


def test_a_profile_fallback_stands_in_for_a_model_with_no_file(cfg):
    """A profile's fallback replaces a model whose file is neither here nor downloadable, as placement does."""
    from edgepipe.pipeline.config.loading import ProfileModels

    class Profile:  # the profile key `fallback` (RetinaFace has no download source)
        fallback = {"retinaface": "blazeface-full"}

        def models(self, engine):
            return ProfileModels(detector="retinaface")

    [need] = verdict.needs(Profile(), "cpu", [])  # the cfg fixture empties the cache: RetinaFace is nowhere
    assert (need.model, need.instead_of) == ("blazeface-full", "retinaface")
    assert need.label("cpu") == "detector blazeface-full (the profile's fallback for retinaface)"
    [need] = verdict.needs(Profile(), "cpu", [str(ASSET_MODELS)])
    assert (need.model, need.instead_of, need.missing) == ("retinaface", "", [])
