"""A Coral that comes and goes: the fake device is gone after N invokes and back T seconds later. The roles on
it fail over to the CPU (the profile's CPU models), are promoted back once the device is back, and no frame
is lost uncounted. Figures (longest gap between results, frames unaccounted, seconds from the device's
return to the promotion, FPS while on the CPU) go to the fault report (faults_report, section "failover")."""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest
from fake_clock import FakeClock
from faults_report import read_results, record, timing, wrong_joins
from helpers import ASSETS, inproc_config, run_async

from edgepipe.actors.runtime.engines import EngineHost, EngineSettings
from edgepipe.models.engines.devices import DeviceGone
from edgepipe.models.engines.fake import Vanishing
from edgepipe.models.engines.litert import is_device_gone
from edgepipe.models.store import fetch, manifest
from edgepipe.pipeline.runner import RunOptions, run

MODELS = ASSETS / "models"
FRAMES = 300  # 10 s at 30 FPS
BACK_AFTER_S = 3.0


def cpu_models_or_skip(*names):
    for name in names:
        try:
            fetch.resolve(manifest.get(name), "cpu", model_paths=[str(MODELS)], fetch=False)
        except Exception as exc:  # noqa: BLE001  (no file here: the fail-over has no CPU model to run)
            pytest.skip("CPU model %s not found: %s" % (name, exc))


def test_a_vanishing_device_is_gone_after_n_invokes_and_back_after_t_seconds():
    clock = FakeClock()
    v = Vanishing(3, back_after_s=2.0, clock=clock.monotonic)
    handle = v.opened("fake:0")
    for _ in range(3):
        v.invoke("fake:0", handle)
    assert v.is_gone("fake:0") and not v.is_gone("fake:1")
    with pytest.raises(DeviceGone):
        v.invoke("fake:0", handle)
    with pytest.raises(DeviceGone):
        v.opened("fake:0")  # a load on a gone device fails too
    clock.advance(1.999)
    assert v.is_gone("fake:0")
    clock.advance(0.001)
    assert not v.is_gone("fake:0")
    with pytest.raises(DeviceGone):
        v.invoke("fake:0", handle)  # a handle from before the reset is dead: the model must be loaded again
    again = v.opened("fake:0")
    for _ in range(10):
        v.invoke("fake:0", again)  # it goes once
    assert not v.is_gone("fake:0")


def test_a_device_that_never_comes_back_stays_gone():
    clock = FakeClock()
    v = Vanishing(1, clock=clock.monotonic)
    v.invoke("fake:0", v.opened("fake:0"))
    clock.advance(1e6)
    assert v.is_gone("fake:0")


@pytest.mark.parametrize("text, gone", [
    ("Failed to load delegate from libedgetpu.so.1", True),
    ("F :1185] HandleQueuedBulkIn transfer in failed. Not found: LIBUSB_ERROR_NOT_FOUND", True),
    ("Deadline exceeded: USB transfer error 2 [LibUsbDataOutCallback]", True),
    ("Node number 2 (EdgeTpuDelegateForCustomOp) failed to invoke.", True),
    ("Cannot set tensor: Dimension mismatch", False),
])
def test_libedgetpu_errors_that_mean_the_device_is_gone(text, gone):
    assert is_device_gone(RuntimeError(text)) is gone


async def _invoke_once(host, x):
    """One FER invoke through the host as an actor makes it (start, then its result under the watchdog)."""
    started = await host.start(lambda: host.model.invoke([x]))
    return await host.result(started, lambda: host.model.invoke([x]), timeout=5.0)


def _fer_input():
    return np.zeros((1,) + tuple(manifest.get("fer64").input_shape), np.float32)


def test_a_role_with_no_fallback_fails_its_calls_until_the_device_is_back():
    # fer64 on a fake device that goes after 2 invokes and is back 0.2 s later; no CPU fallback
    settings = EngineSettings.of("fake", vanish_after=2, back_after_s=0.2)
    counted = []

    async def main():
        host = EngineHost(settings, manifest.get("fer64"), "fer-0", lambda e: e)
        host.count = counted.append
        await host.load()
        x = _fer_input()

        def once():
            return _invoke_once(host, x)
        try:
            await once()
            await once()
            assert host.device_gauges()["on.fake:0"] == 1.0
            with pytest.raises(DeviceGone):
                await once()
            assert host.where == "away" and host.device_gauges()["on.fake:0"] == 0.0
            with pytest.raises(DeviceGone):
                await once()  # at once, while it is away
            await host._probe  # the re-probe ends when the device took the model again
            assert host.where == "device" and host.device_gauges()["on.fake:0"] == 1.0
            assert len(await once()) == 1
        finally:
            host.close()

    run_async(main(), timeout=30)
    assert counted == ["promotions"]  # no fail-over: there was nowhere to go


def test_a_role_fails_over_to_the_cpu_runs_its_call_there_and_is_promoted_back():
    cpu_models_or_skip("fer64")
    settings = EngineSettings.of("fake", vanish_after=1, back_after_s=0.3)
    fallback = (EngineSettings.of("cpu", model_paths=[str(MODELS)]), manifest.get("fer64"))
    counted = []

    async def main():
        host = EngineHost(settings, manifest.get("fer64"), "fer-0", lambda e: e, threads=2, fallback=fallback)
        host.count = counted.append
        await host.load()
        x = _fer_input()

        def once():
            return _invoke_once(host, x)
        try:
            await once()
            assert len(await once()) == 1  # the device went: this call ran again on the CPU
            g = host.device_gauges()
            assert host.where == "cpu" and g["on.cpu"] == 1.0 and g["on.fake:0"] == 0.0 and g["on_fake_s"] > 0
            await host._probe
            g = host.device_gauges()
            assert host.where == "device" and g["on.cpu"] == 0.0 and g["on.fake:0"] == 1.0 and g["on_cpu_s"] > 0
            assert len(await once()) == 1
        finally:
            host.close()

    run_async(main(), timeout=30)
    assert counted == ["failovers", "promotions"]


class Moves(logging.Handler):
    """The monotonic time of each fail-over and promotion message, by actor."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.failed, self.back = {}, {}

    def emit(self, rec):
        msg = rec.getMessage()
        actor = msg.partition(":")[0]
        if "failed over to the CPU" in msg or "has no CPU fallback" in msg:
            self.failed.setdefault(actor, time.monotonic())
        elif "is back:" in msg:
            self.back.setdefault(actor, time.monotonic())


def cpu_fps(lines, on_cpu):
    """Results per second while the role ran on the CPU (the results its CPU model made)."""
    t = [r["t_ms"] for r in lines if on_cpu(r)]
    return round(1000.0 * (len(t) - 1) / (t[-1] - t[0]), 1) if len(t) > 1 and t[-1] > t[0] else None


# name: (config sections, placement, source, vanish_after (device invokes), roles that fail over, a result made
# on the CPU)
SETUPS = {
    # every role on the fake device, the synthetic source: the detector falls over to BlazeFace full range,
    # which finds none of the synthetic source's drawn faces (so the FER workers get no job while the device
    # is away, and reload on it when it is back). The fake detector scores every face 0.95: a frame that the
    # CPU detector saw has no face, or faces with other scores
    "all-on-device-synthetic": ({}, {}, "synthetic:faces=2,fps=30,size=640x480", 270, ("detector",),
                                lambda r: not r["faces"] or any(f["score"] != 0.95 for f in r["faces"])),
    # the real CPU detector on the demo clip, FER on the fake device (the fake FER is 0.9 sure of every face)
    "fer-on-device-demo": ({}, {"detector": "cpu", "fer": "fake"}, "demo", 90, ("fer",),
                           lambda r: any(f["confidence"] not in (None, 0.9) for f in r["faces"])),
}


@pytest.mark.parametrize("name", list(SETUPS))
def test_the_coral_goes_away_and_comes_back(name, tmp_path):
    sections, placement, source, vanish_after, moved, on_cpu = SETUPS[name]
    cpu_models_or_skip("blazeface-full", "fer64")
    if source == "demo" and not (ASSETS / "video").is_dir():
        pytest.skip("the demo clip is not at %s" % ASSETS)
    cfg = inproc_config(pipeline={"profile": "fd+fer64", "source": source}, fer={"workers": 2}, **sections)
    cfg.models.paths = [str(MODELS)]
    for role, engine in placement.items():
        setattr(cfg.placement, role, engine)
    cfg.engine.fake.vanish_after = vanish_after
    cfg.engine.fake.back_after_s = BACK_AFTER_S
    results = tmp_path / "r.jsonl"
    moves = Moves()
    log = logging.getLogger("edgepipe.engines")
    log.addHandler(moves)
    try:
        s = run_async(run(cfg, RunOptions(frames=FRAMES, results_path=str(results))), timeout=180)
    finally:
        log.removeHandler(moves)
    lines = read_results(results)
    # every frame accounted for; no expression on the wrong face
    assert s["frames_captured"] == FRAMES and s["unaccounted"] == 0
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]
    assert wrong_joins(lines) == 0
    # each actor of a role that lost its device failed over once at most and came back as often (a FER worker
    # that had no job while the device was away finds its handle dead after the return, and reloads there)
    actors = {a: c["counters"] for a, c in s["actors"].items() if a.partition("-")[0] in ("detector", "fer")}
    assert all(c.get("failovers", 0) == c.get("promotions", 0) <= 1 for c in actors.values()), actors
    for role in moved:
        assert sum(c.get("failovers", 0) for a, c in actors.items() if a.partition("-")[0] == role) >= 1
    if "detector" in moved:
        assert actors["detector"]["failovers"] == 1 and actors["detector"]["promotions"] == 1
    v = cfg.engine.fake.vanishing()
    returned = v.gone_at["fake:0"] + BACK_AFTER_S
    truth_faces = sum(len(r.get("truth") or ()) for r in lines if on_cpu(r))
    record("failover", name, {
        "setup": {"profile": "fd+fer64", "source": source, "placement": placement or "every role on fake:0",
                  "vanish_after_invokes": vanish_after, "back_after_s": BACK_AFTER_S, "frames": FRAMES},
        "frames": {k: s[k] for k in ("frames_captured", "frames_completed", "frames_partial", "dropped_total",
                                     "unaccounted")},
        "dropped_by_reason": s["dropped_by_reason"],
        "wrong_expressions": wrong_joins(lines),
        "failovers": {a: c.get("failovers", 0) for a, c in actors.items()},
        "promotions": {a: c.get("promotions", 0) for a, c in actors.items()},
        "return_to_promotion_s": {a: round(t - returned, 3) for a, t in moves.back.items()},
        "restarts": {a: c.get("restarts", 0) for a, c in actors.items()},
        "fps_on_cpu": cpu_fps(lines, on_cpu),
        "frames_on_cpu": sum(1 for r in lines if on_cpu(r)),
        "faces_found_on_cpu": sum(len(r["faces"]) for r in lines if on_cpu(r)),
        "true_faces_in_those_frames": truth_faces,
        "timing": timing(lines),
    })
