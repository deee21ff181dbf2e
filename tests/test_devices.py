"""Accelerator devices: one invoke at a time whatever the pool size, model switches, one owner process.

No timing thresholds: the device keeps emulated time, so what is checked is the schedule it kept (its
invoke spans never overlap and each lasts its latency), which holds however loaded the machine is.
"""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers import inproc_config, run_async

from edgepipe.models.engines.devices import Device, DeviceBusy, DeviceModel, open_device, open_devices, release_device
from edgepipe.models.engines.fake import FakeEngine, fake_pool
from edgepipe.models.store import manifest
from edgepipe.pipeline.runner import RunOptions, run


def spans(dev: Device):
    return sorted(dev._recent)


def assert_one_at_a_time(dev: Device, min_ms: float) -> None:
    s = spans(dev)
    assert s, "no invokes"
    for (a0, a1), (b0, b1) in zip(s, s[1:]):
        assert b0 >= a1 - 1e-9, "two invokes overlapped on %s" % dev.name
    for a0, a1 in s:
        assert a1 - a0 >= min_ms / 1000.0 - 1e-9


@pytest.mark.parametrize("engines", [1, 2, 6])
def test_one_fake_device_never_runs_two_invokes_at_once(engines):
    spec = manifest.get("fer64")
    pool_engines = [FakeEngine(spec, latency_ms=2.0, open_pool=lambda: fake_pool(1)) for _ in range(engines)]
    for e in pool_engines:
        e.load()
    x = np.zeros(e.inputs[0].shape, np.float32)
    start = threading.Barrier(engines)

    def work(e):
        start.wait()
        for _ in range(10):
            e.invoke([x])

    threads = [threading.Thread(target=work, args=(e,)) for e in pool_engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        (dev,) = open_devices()
        assert dev.stats.invokes == 10 * engines
        assert_one_at_a_time(dev, 2.0)
        # its throughput is at most 1 / latency, whatever the number of engines
        assert dev.stats.as_dict()["active_s"] >= 10 * engines * 0.002 - 1e-6
    finally:
        for e in pool_engines:
            e.close()
    assert open_devices() == []  # the last engine let go of the device


def test_model_switch_is_charged_and_cocompiled_models_switch_free():
    big = DeviceModel("coral-ssd-face", param_mb=6.7, est_ms=1.0)
    small = DeviceModel("fer112", param_mb=1.91, est_ms=1.0)
    tiny = DeviceModel("fer64", param_mb=0.09, est_ms=1.0)
    dev = Device("fake:test", "fake", emulated=True, switch_ms_per_mb=1.0)
    stop = threading.Event()
    try:
        for m in (big, small, big, small):  # 6.7 + 1.91 MB do not fit 8 MB together: 3 switches
            dev.run(m, dev.occupy, 0.001, stop)
        assert dev.stats.switches == 3
        assert dev.stats.switch_s == pytest.approx(2 * 0.00191 + 0.0067)
        assert_one_at_a_time(dev, 1.0)
        for m in (big, tiny, big, tiny):  # 6.7 + 0.09 MB fit: no switch
            dev.run(m, dev.occupy, 0.001, stop)
        assert dev.stats.switches == 4  # one more: fer112 -> coral-ssd-face at the start of this round
    finally:
        dev.close()
    together = Device("fake:test2", "fake", emulated=True, switch_ms_per_mb=1.0)
    big2 = DeviceModel("coral-ssd-face", 6.7, frozenset({"fer112"}), 1.0)
    small2 = DeviceModel("fer112", 1.91, frozenset({"coral-ssd-face"}), 1.0)
    try:
        for m in (big2, small2, big2, small2):
            together.run(m, together.occupy, 0.001, stop)
        assert together.stats.switches == 0 and together.stats.switch_s == 0.0
    finally:
        together.close()


def test_a_hung_invoke_holds_the_device_until_its_engine_closes():
    from edgepipe.models.engines.engine import EngineError, FaultCounter, FaultPlan

    spec = manifest.get("fer64")
    hung = FakeEngine(spec, latency_ms=1.0, faults=FaultCounter(FaultPlan(hang_after=1)))
    hung.load()
    try:
        (dev,) = open_devices()
        stuck = dev.submit(hung.device_model, hung._occupy, 1, dev)  # invoke 1 hangs (hang_after=1)
        behind = dev.submit(hung.device_model, lambda: "ran")  # FIFO: queued behind the hung invoke
        assert not behind.done() and not stuck.done()
        hung.close()  # what the watchdog does: the hung invoke ends, the device is free again
        assert behind.result(timeout=30) == "ran"
        with pytest.raises(EngineError, match="closed while hung"):
            stuck.result(timeout=30)
    finally:
        hung.close()
    assert open_devices() == []


CLAIM = """
import sys
sys.path.insert(0, %r)
from edgepipe.models.engines.devices import open_device
open_device("fake:0", "fake")
print("claimed", flush=True)
sys.stdin.read()
"""


def test_a_second_process_cannot_claim_a_device(tmp_path):
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", CLAIM % root], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "claimed"
        with pytest.raises(DeviceBusy, match=r"fake:0 is already claimed by another process \(pid %d\)" % child.pid):
            open_device("fake:0", "fake")
        # the pipeline says so too, and stops cleanly
        cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"})
        with pytest.raises(Exception, match="fake:0 is already claimed by another process"):
            run_async(run(cfg, RunOptions(frames=5)))
    finally:
        child.stdin.close()
        child.wait(30)
        child.stdout.close()
    dev = open_device("fake:0", "fake")  # the claim died with its process
    release_device(dev)
    assert open_devices() == []


def test_pipeline_on_one_fake_device_keeps_to_its_bound():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0"}, fer={"workers": 4})
    s = run_async(run(cfg, RunOptions(frames=30)))
    assert s["frames_completed"] == 30
    assert s["placement"]["detector"]["devices"] == ["fake:0"] and s["placement"]["fer"]["devices"] == ["fake:0"]
    dev = s["devices"]["fake:0"]
    n_det, n_fer = 30, 60
    assert dev["invokes"] == n_det + n_fer
    # emulated device time: every invoke took its latency, one after the other
    assert dev["busy_s"] >= n_det * 0.00816 + n_fer * 0.00647 - 1e-6
    assert dev["active_s"] >= dev["busy_s"] - 1e-6
    assert 0 < dev["busy_pct"] <= 100.0


def test_two_fake_devices_share_the_work():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=3,fps=0"}, fer={"workers": 4})
    cfg.engine.fake.devices = 2
    s = run_async(run(cfg, RunOptions(frames=30)))
    assert s["frames_completed"] == 30
    assert set(s["devices"]) == {"fake:0", "fake:1"}
    assert all(d["invokes"] > 0 for d in s["devices"].values())
    assert sum(d["invokes"] for d in s["devices"].values()) == 30 + 90
