"""Every delegate probe respects the device's claim; one claim per physical device; auto proves the runtime.

A second process that opens a Coral USB Accelerator breaks the transfers of the one using it, so the
probes (placement's, doctor's, setup-tpu-venv's, the engine's) take the device's claim without waiting,
and a device another process holds is not opened: its holder is named. The stand-in loaders of
tests/delegate_standins.py run in the real probe child and write $EDGEPIPE_STANDIN_OPENED when they
are asked to open a device, so "not opened" is what the file says. libc stands in for libedgetpu.
"""
from __future__ import annotations

import ctypes.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_doctor import PI5, by, recorded_caps

from edgepipe.models.engines import delegate_probe, litert
from edgepipe.models.engines.claims import claim_key
from edgepipe.models.engines.devices import DeviceBusy, open_device, open_devices, open_on, open_pool, release_device
from edgepipe.models.engines.kind_edgetpu import EdgeTpuEngineSettings
from edgepipe.models.store import manifest
from edgepipe.pipeline.ops.doctor import Doctor
from edgepipe.pipeline.ops.tpu_venv import probe_line
from edgepipe.pipeline.plan import edgetpu_check
from edgepipe.pipeline.plan.placement import edgetpu_present, place

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STANDINS = str(HERE / "delegate_standins.py")
MODELS_DIR = ROOT.parent / "shared" / "assets" / "models"
FER112_CPU = MODELS_DIR / "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant.tflite"
LIBC = ctypes.util.find_library("c") or "libc.so.6"
assets = pytest.mark.skipif(not FER112_CPU.is_file(), reason="test assets not found at %s" % MODELS_DIR)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Claims in a folder of this test's own (children inherit it), a fresh probe cache, libc for libedgetpu."""
    monkeypatch.setenv("EDGEPIPE_DEVICE_LOCKS", str(tmp_path / "locks"))
    monkeypatch.setenv("EDGEPIPE_STANDIN_OPENED", str(tmp_path / "opened"))
    monkeypatch.setenv(litert.ENV_LIBRARY, LIBC)
    delegate_probe._CACHE.clear()
    yield tmp_path / "opened"
    delegate_probe._CACHE.clear()
    assert open_devices() == []


def loader(monkeypatch, name: str) -> None:
    monkeypatch.setenv(delegate_probe.ENV_LOADER, "%s:%s" % (STANDINS, name))


HOLD = """
import sys
sys.path.insert(0, %r)
from edgepipe.models.engines.devices import open_device
for name in sys.argv[1:]:
    open_device(name, name.split(":")[0])
print("claimed", flush=True)
sys.stdin.read()
"""


class Holder:
    """Another process that holds the claims of ``names`` (as a run does) until the test ends."""

    def __init__(self, *names: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD % str(ROOT)] + list(names), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "claimed"
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


# ---------------------------------------------------------------- one claim per physical device

def test_the_names_of_one_device_share_one_claim_key(tmp_path):
    assert {claim_key(n) for n in ("edgetpu:usb", "edgetpu:usb:0", "edgetpu:USB:00", "edgetpu: usb:0")} \
        == {"edgetpu:usb:0"}
    assert claim_key("edgetpu:pci") == claim_key("edgetpu:pci:0") == "edgetpu:pci:0"
    assert claim_key("edgetpu:usb:1") == "edgetpu:usb:1" and claim_key("fake:0") == "fake:0"
    nothing = tmp_path / "bare"
    nothing.mkdir()
    assert claim_key("edgetpu:", str(nothing)) == "edgetpu:usb:0"  # nothing attached: the USB default
    pcie = tmp_path / "pcie"
    (pcie / "dev").mkdir(parents=True)
    (pcie / "dev" / "apex_0").write_text("")
    assert claim_key("edgetpu:", str(pcie)) == "edgetpu:pci:0"  # only a PCIe Edge TPU: "" is that one
    usb = pcie / "sys" / "bus" / "usb" / "devices" / "2-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("18d1\n")
    (usb / "idProduct").write_text("9302\n")
    assert claim_key("edgetpu:", str(pcie)) == "edgetpu:usb:0"  # a USB Coral too: "" is the USB one


def test_first_found_and_usb0_are_one_device_in_a_process_and_across_processes():
    a = open_device("edgetpu:", "edgetpu")
    b = open_device("edgetpu:usb:0", "edgetpu")
    pool = open_pool(["edgetpu:", "edgetpu:usb:0"], "edgetpu")
    try:
        assert a is b and pool.devices == [a]  # one Device, once in a pool
    finally:
        pool.release()
        release_device(b)
        release_device(a)
    holder = Holder("edgetpu:")
    try:
        with pytest.raises(DeviceBusy, match=r"edgetpu:usb:0 is already claimed by another process \(pid %d\)"
                           % holder.pid):
            open_device("edgetpu:usb:0", "edgetpu")
    finally:
        holder.close()


# ---------------------------------------------------------------- probes leave a held device alone

def test_every_probe_names_the_holder_and_does_not_open_the_device(monkeypatch, isolated, tmp_path):
    loader(monkeypatch, "works")
    monkeypatch.setattr(edgetpu_check, "_coral_attached", lambda: True)
    holder = Holder("edgetpu:")  # a run on the first Edge TPU found
    try:
        res = delegate_probe.probe(LIBC, device="usb:0")  # the same device by another name
        assert not res.ok and res.busy and res.holder == "pid %d" % holder.pid
        assert "held by another process (pid %d)" % holder.pid in res.error
        found, why = edgetpu_present()  # placement's probe
        assert not found and "pid %d" % holder.pid in why
        line = probe_line(sys.executable)  # setup-tpu-venv's
        assert line.startswith("Edge TPU delegate probe: FAILS") and "pid %d" % holder.pid in line
        findings = Doctor(str(PI5), None, repo=tmp_path, querycap=recorded_caps, picameras=lambda: ([], ""),
                          probe=lambda python: delegate_probe.probe(LIBC)).run()  # doctor's
        skipped = [f for f in by(findings, "libedgetpu") if "probe skipped" in f.text]
        assert len(skipped) == 1 and "pid %d" % holder.pid in skipped[0].text
        claims = by(findings, "devices")
        assert [f.text for f in claims] == ["device edgetpu-usb-0 is in use by pid %d (a running pipeline or "
                                            "probe); doctor leaves it alone" % holder.pid]
    finally:
        holder.close()
    assert not isolated.exists(), "a probe opened a device another process holds"
    res = delegate_probe.probe(LIBC, device="usb:0")  # the holder is gone: the probe runs, under the claim
    assert res.ok and isolated.read_text() == "opened usb:0\n"


def test_an_engine_waits_for_a_probe_and_a_probe_never_waits(monkeypatch):
    from edgepipe.models.engines.claims import _Claim

    probing = _Claim("edgetpu:usb:0", probe=True)  # what a probe of another process holds for a moment
    try:
        res = delegate_probe.probe(LIBC, device="usb:0")
        assert res.busy and res.holder == "pid %d (a delegate probe)" % os.getpid()
        with pytest.raises(DeviceBusy, match=r"\(pid %d \(a delegate probe\)\)" % os.getpid()):
            _Claim("edgetpu:usb:0", wait_s=0.0)
    finally:
        probing.release()
    dev = open_device("edgetpu:", "edgetpu")  # free again: a run claims it at once
    release_device(dev)


def test_no_probe_once_a_model_runs_on_the_device_in_this_process(monkeypatch, isolated):
    loader(monkeypatch, "works")
    dev = open_device("edgetpu:", "edgetpu")  # this process's claim, as an engine takes it
    try:
        ran = []
        # the first model: probed under this process's own claim, then its interpreter opens
        open_on(dev, lambda: ran.append(delegate_probe.probe(LIBC, device="").ok), lambda: "interpreter 1")
        assert ran == [True] and isolated.read_text() == "opened \n" and dev.opened
        # the second model: its engine does not probe; a probe asked for anyway does not open the device
        open_on(dev, lambda: ran.append("probed again"), lambda: "interpreter 2")
        res = delegate_probe.probe(LIBC, device="usb:0")
        assert ran == [True] and res.ok and res.skipped and isolated.read_text() == "opened \n"
    finally:
        release_device(dev)


# ---------------------------------------------------------------- auto proves the runtime with the model

@assets
def test_the_probe_builds_and_invokes_the_model(monkeypatch):
    loader(monkeypatch, "works")
    res = delegate_probe.probe(LIBC, model=str(FER112_CPU))
    assert res.ok and res.stage == "done"
    loader(monkeypatch, "crash_with_model")  # load_delegate returns; the interpreter with the model dies
    delegate_probe._CACHE.clear()
    res = delegate_probe.probe(LIBC, model=str(FER112_CPU))
    assert not res.ok and res.crashed and "SIGSEGV" in res.error
    assert res.stage == "building an interpreter for %s with the delegate" % FER112_CPU.name
    assert delegate_probe.probe(LIBC).ok  # without a model the same runtime looks fine: why auto passes one


@assets
def test_auto_probes_each_roles_own_edge_tpu_model(monkeypatch, tmp_path):
    from helpers import inproc_config

    loader(monkeypatch, "crash_with_model")
    monkeypatch.setattr(edgetpu_check, "_coral_attached", lambda: True)
    cfg = inproc_config(pipeline={"engine": "auto", "profile": "fd+fer112"}, models={"paths": [str(MODELS_DIR)]})
    cfg.engine.auto.accelerator = "edgetpu"
    fer_tpu = MODELS_DIR / manifest.get("fer112").files["edgetpu"]
    # the stand-in delegate takes over no node, so the runtime refuses the Edge TPU model's custom op before
    # the delegate's crash: either way the probe of the role's own model fails, and that is the reason
    expected = delegate_probe.probe(LIBC, model=str(fer_tpu))
    assert not expected.ok and expected.stage.endswith("%s with the delegate" % fer_tpu.name)
    p = place(cfg, warn=False)
    assert p["fer"].engine == "cpu" and p["fer"].model == "fer112" and p["fer"].auto
    assert p["fer"].reason == "auto: the Edge TPU runtime fails %s: %s" % (fer_tpu.name, expected.error)


@assets
def test_a_role_auto_put_on_the_edge_tpu_falls_back_to_the_cpu_with_one_line(monkeypatch, caplog):
    loader(monkeypatch, "crash_with_model")
    spec = manifest.get("fer112")
    plain = EdgeTpuEngineSettings()
    assert plain.fallback == "" and plain.for_auto().fallback == "cpu"
    caplog.set_level(logging.WARNING, logger="edgepipe.models.engines.litert")
    expected = delegate_probe.probe_once(LIBC, "", str(MODELS_DIR / spec.files["edgetpu"]))
    assert not expected.ok  # the stand-in's delegate does not run the role's own Edge TPU model
    eng = plain.for_auto().build(spec, model_paths=[str(MODELS_DIR)])
    try:
        eng.load()  # the probe crashes with the role's own model: the role runs on the CPU, the run goes on
        assert eng.kind == "cpu" and eng.fell_back
        lines = [r.getMessage() for r in caplog.records if "falling back to the CPU" in r.getMessage()]
        assert len(lines) == 1 and expected.error in lines[0]
        assert eng.invoke([np.zeros((1, 112, 112, 3), np.int8)])[0].shape == (1, 7)
    finally:
        eng.close()


# ---------------------------------------------------------------- doctor while a pipeline runs

RUN = """
import json, sys
sys.path.insert(0, %r)
sys.path.insert(0, %r)
from helpers import inproc_config, run_async
from edgepipe.models.engines.devices import open_device
from edgepipe.pipeline.runner import RunOptions, run

tpu = open_device("edgetpu:", "edgetpu")  # the Edge TPU claim a run on the TPU would hold too

def ready(p):  # every engine is loaded and holds its device; the frames start when the test says so
    print("ready", flush=True)
    sys.stdin.readline()

cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0"})
s = run_async(run(cfg, RunOptions(frames=40), on_ready=ready))
print(json.dumps({"completed": s["frames_completed"], "partial": s["frames_partial"],
                  "dropped": s["dropped_total"], "devices": sorted(s["devices"])}), flush=True)
"""


def test_doctor_while_a_pipeline_holds_its_devices(monkeypatch, isolated, tmp_path):
    loader(monkeypatch, "works")
    child = subprocess.Popen([sys.executable, "-c", RUN % (str(ROOT), str(HERE))], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        assert child.stdout.readline().strip() == "ready"
        findings = Doctor(str(PI5), None, repo=tmp_path, querycap=recorded_caps, picameras=lambda: ([], ""),
                          probe=lambda python: delegate_probe.probe(LIBC)).run()
        child.stdin.write("go\n")
        child.stdin.flush()
        summary = json.loads(child.stdout.readline())
    finally:
        child.stdin.close()
        child.wait(120)
        child.stdout.close()
    assert child.returncode == 0
    held = sorted(f.text for f in by(findings, "devices"))
    assert held == ["device %s is in use by pid %d (a running pipeline or probe); doctor leaves it alone"
                    % (name, child.pid) for name in ("edgetpu-usb-0", "fake-0")]
    skipped = [f for f in by(findings, "libedgetpu") if "probe skipped" in f.text]
    assert len(skipped) == 1 and "pid %d" % child.pid in skipped[0].text
    assert not isolated.exists(), "doctor's probe opened the device a pipeline holds"
    assert summary == {"completed": 40, "partial": 0, "dropped": 0, "devices": ["fake:0"]}
