"""`python run.py doctor` against the Pi 5 machine tree in tests/data/pi5-root, an empty tree and this machine."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.models.engines.delegate_probe import ProbeResult
from edgepipe.pipeline.config.loading import load
from edgepipe.pipeline.ops.doctor import Doctor, render

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


def test_doctor_on_this_machine():
    """The real run: this 2-core x86_64 machine has no Edge TPU, no camera and no libedgetpu."""
    p = subprocess.run([sys.executable, str(HERE.parent / "run.py"), "doctor", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    findings = json.loads(p.stdout)
    sections = {f["section"] for f in findings}
    assert {"python", "tpu-venv", "libedgetpu", "edgetpu", "camera", "models", "temperature"} <= sections
    py = [f for f in findings if f["section"] == "python"]
    assert py[0]["text"].startswith("Python %d.%d." % sys.version_info[:2])
    usb = Path("/sys/bus/usb/devices")
    if not usb.is_dir() and not list(Path("/dev").glob("apex_*")):
        assert [f["status"] for f in findings if f["section"] == "edgetpu"] == ["fail"]
    if not Path("/sys/class/video4linux").is_dir():
        assert [f["status"] for f in findings if f["section"] == "camera"][-1] == "warn"


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
