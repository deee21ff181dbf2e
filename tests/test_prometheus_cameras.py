"""The Prometheus exporter names cameras (issue 21): a per-camera actor's series carry ``camera``, and an
actor's counters of one camera (``camera.NAME.*``) are families with ``camera`` (and ``reason``) labels."""
from __future__ import annotations

import asyncio

from helpers import inproc_config, run_async
from prometheus_client.parser import text_string_to_metric_families

from edgepipe.bus.messages import Metric
from edgepipe.bus.sockets import Bus
from edgepipe.pipeline.config.sections import CameraConfig
from edgepipe.pipeline.metrics.prometheus import COUNTERS, DROP_REASONS, render
from edgepipe.pipeline.runner import RunOptions, run


def samples(text, name, **labels):
    return [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def test_two_cameras_snapshots_name_their_camera():
    latest = {
        "capture-a": Metric("capture-a", 1, 1.0, counters={"in": 5, "out": 5}, gauges={"fps": 10.0}),
        "capture-ab": Metric("capture-ab", 1, 1.0, counters={"in": 7, "out": 7}, gauges={"fps": 12.0}),
        "encoder-ab": Metric("encoder-ab", 1, 1.0, counters={"dropped.encode_error": 1, "dropped": 1}),
        "detector": Metric("detector", 2, 1.0, counters={
            "dropped": 4, "dropped.stale": 3, "dropped.transport": 1, "camera.a.dropped.stale": 3,
            "camera.ab.dropped.transport": 1}),
        "aggregator": Metric("aggregator", 2, 1.0, counters={"completed": 9, "camera.a.completed": 4,
                                                             "camera.ab.completed": 5, "camera.ab.partial": 2}),
    }
    text = render(latest)
    # a per-camera actor: its camera beside its name, on counters and gauges alike, and its role's counters
    assert samples(text, "edgepipe_fps", actor="capture-ab")[0].labels == {"actor": "capture-ab", "camera": "ab"}
    assert samples(text, "edgepipe_in_total", actor="capture-a", camera="a")[0].value == 5.0
    for name in COUNTERS["capture"]:  # capture-a is a capture: every counter of the role, at 0 until counted
        assert samples(text, "edgepipe_%s_total" % name, actor="capture-a", camera="a"), name
    for reason in DROP_REASONS["encoder"]:
        assert samples(text, "edgepipe_dropped_by_reason_total", actor="encoder-ab", camera="ab", reason=reason)
    # the detector's drops of each camera: one family with camera and reason, no mangled names
    stale = samples(text, "edgepipe_camera_dropped_by_reason_total", actor="detector", camera="a", reason="stale")
    assert [s.value for s in stale] == [3.0]
    assert samples(text, "edgepipe_camera_dropped_by_reason_total", camera="ab", reason="transport")[0].value == 1.0
    assert samples(text, "edgepipe_dropped_by_reason_total", actor="detector", reason="stale")[0].value == 3.0
    assert "camera" not in samples(text, "edgepipe_dropped_total", actor="detector")[0].labels  # its total
    assert samples(text, "edgepipe_camera_completed_total", actor="aggregator", camera="ab")[0].value == 5.0
    assert samples(text, "edgepipe_camera_partial_total", camera="ab")[0].value == 2.0
    names = {f.name for f in text_string_to_metric_families(text)}
    assert not [n for n in names if "camera_a_" in n or "camera_ab_" in n], names  # none mangled
    for f in text_string_to_metric_families(text):
        assert f.documentation and not f.documentation.startswith("edgepipe metric camera"), f.name


def test_the_one_camera_is_default():
    text = render({"capture": Metric("capture", 1, 1.0, counters={"in": 3}),
                   "encoder": Metric("encoder", 1, 1.0, gauges={"fps": 3.0}),
                   "detector": Metric("detector", 1, 1.0, counters={"in": 3})})
    assert samples(text, "edgepipe_in_total", actor="capture")[0].labels == {"actor": "capture", "camera": "default"}
    assert samples(text, "edgepipe_fps", actor="encoder")[0].labels["camera"] == "default"
    assert samples(text, "edgepipe_in_total", actor="detector")[0].labels == {"actor": "detector"}


def test_a_run_with_two_cameras_exports_each_cameras_series(tmp_path):
    """The final snapshot of every actor of a run with cameras a and ab, from its public metrics endpoint."""
    cfg = inproc_config()
    cfg.cameras = {"a": CameraConfig(source="synthetic:faces=1,fps=0,size=160x120"),
                   "ab": CameraConfig(source="synthetic:faces=2,fps=0,size=160x120,seed=3")}
    cfg.endpoints.metrics = "ipc://%s" % (tmp_path / "metrics")
    latest = {}

    async def main():
        bus = Bus()
        sub = bus.sub(cfg.endpoints.metrics, hwm=100000, name="test", topics=("metric",))  # before the start
        try:
            async def listen():
                while True:
                    msg = await sub.recv()
                    latest[msg.actor] = msg
                    if msg.actor == "metrics" and msg.final:  # the hub's final one comes last
                        return
            summary, _ = await asyncio.gather(run(cfg, RunOptions(frames=10)), listen())
            return summary
        finally:
            bus.close()

    s = run_async(main(), timeout=120)
    assert all(m.final for m in latest.values()) and set(latest) >= {"capture-a", "capture-ab", "detector"}
    text = render(latest)
    for cam in ("a", "ab"):
        c = s["cameras"][cam]
        assert samples(text, "edgepipe_out_total", actor="capture-%s" % cam, camera=cam)[0].value == 10.0
        assert samples(text, "edgepipe_out_total", actor="encoder-%s" % cam, camera=cam)[0].value == 10.0
        done = sum(x.value for x in samples(text, "edgepipe_camera_completed_total", actor="aggregator", camera=cam))
        partial = sum(x.value for x in samples(text, "edgepipe_camera_partial_total", actor="aggregator", camera=cam))
        assert (done, partial) == (c["frames_completed"], c["frames_partial"]) and done + partial == 10
