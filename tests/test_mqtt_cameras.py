"""MQTT with several cameras against a real Mosquitto broker: each camera's results, state, events and status
under ``PREFIX/CAMERA/...``, a Home Assistant device per camera, and the stale discovery configs removed."""
from __future__ import annotations

import json
import os

import aiomqtt
import pytest
from helpers import run_async
from mqtt_broker import MOSQUITTO, Recorder
from test_cameras_multi import check_cameras, two_cameras
from test_mqtt import ENDPOINTS, broker, run_py_recorded, run_recorded, sink_config  # noqa: F401 (a fixture)

from edgepipe.actors.runtime.context import Context
from edgepipe.actors.sinks.mqtt_sink import MqttSink

pytestmark = pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Debian's mosquitto (CI installs it)")

SENSORS = ("faces", "expression", "fps")


def configs_of(rec: Recorder, node: str):
    """The discovery configs the recorder holds: topic -> the last one (None: removed, an empty payload)."""
    out = {}
    for t, p, _ in rec.messages:
        if t.startswith("homeassistant/sensor/%s/" % node):
            out[t] = json.loads(p) if p else None
    return out


def test_two_cameras_each_under_its_own_topics_with_its_own_device(broker):
    cfg = two_cameras("synthetic:faces=1,fps=0,size=320x240,change=7", "synthetic:faces=2,fps=0,size=640x480",
                      mqtt={"host": "127.0.0.1", "port": broker.port, "name": "duo", "results_hz": 1000.0})
    cfg.cameras["a"].label = "Front door"
    s, rec = run_recorded(cfg, broker, frames=40)
    check_cameras(s)
    assert s["actors"]["mqtt"]["counters"]["queue_dropped"] == 0
    for cam, faces in (("a", 1), ("b", 2)):
        results = rec.json("edgepipe/duo/%s/results" % cam)
        # every result of a camera is that camera's: its own face count, its frames in order
        assert results and all(len(r["faces"]) == faces for r in results), cam
        assert [r["frame_id"] for r in results] == sorted({r["frame_id"] for r in results})
        assert rec.json("edgepipe/duo/%s/state" % cam)[-1]["faces"] == faces
        events = rec.json("edgepipe/duo/%s/events" % cam)
        appeared = sorted(e["track"] for e in events if e["event"] == "appeared")
        gone = sorted((e["track"], e["reason"]) for e in events if e["event"] == "gone")
        assert len(appeared) == faces and gone == [(t, "end") for t in appeared], (cam, events)
        status = rec.json("edgepipe/duo/%s/metrics" % cam)[-1]  # the last one: at the end of the run
        assert (status["camera"], status["frames_captured"], status["frames_completed"], status["dropped"]) == \
            (cam, 40, 40, 0), status
        assert status["frames_encoded"] == 40 and status["label"] == ("Front door" if cam == "a" else "b")
    # nothing on the one camera's topics: every camera's results are under its name
    assert not any(rec.on("edgepipe/duo/" + t) for t in ("results", "state", "events"))
    summary = rec.json("edgepipe/duo/metrics")[-1]
    assert summary["frames_captured"] == 80 and set(summary["cameras"]) == {"a", "b"}
    assert summary["cameras"]["b"]["frames_completed"] == 40
    # Home Assistant: a device per camera, three sensors each, unique ids per camera, the pipeline's availability
    configs = configs_of(rec, "duo")
    assert set(configs) == {"homeassistant/sensor/duo/%s_%s/config" % (c, k) for c in "ab" for k in SENSORS}
    for cam, name in (("a", "Front door"), ("b", "b")):
        mine = [configs["homeassistant/sensor/duo/%s_%s/config" % (cam, k)] for k in SENSORS]
        assert all(c["device"]["identifiers"] == ["edgepipe_duo_%s" % cam] and c["device"]["name"] == name
                   for c in mine)
        base = "edgepipe/duo/%s/" % cam
        assert [c["state_topic"] for c in mine] == [base + "state", base + "state", base + "metrics"]
        assert all(c["availability_topic"] == "edgepipe/duo/availability" for c in mine)
    assert len({c["unique_id"] for c in configs.values()}) == 6


def test_stale_discovery_configs_are_removed(broker, bus):
    """One camera, then two under the same name, then discovery off: each run removes the configs it no
    longer publishes; a client that subscribes afterwards gets only the current ones."""
    two = {"a": "synthetic:faces=1", "b": "synthetic:faces=2"}
    runs = [({}, True, {"faces", "expression", "fps"}),
            (two, True, {"%s_%s" % (c, k) for c in "ab" for k in SENSORS}),
            (two, False, set())]

    async def retained_now():
        """The retained discovery configs a new subscriber gets: a marker published after it subscribed
        comes after them (the broker queues the retained ones at the subscription)."""
        async with Recorder(broker.port) as late:
            async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                await c.publish("test/marker", b"1", qos=1)
            await late.wait_for(lambda r: bool(r.on("test/marker")))
            return {t.split("/")[-2] for t, p in configs_of(late, "move").items() if p is not None}

    async def main():
        seen = []
        for cameras, discovery, expected in runs:
            sink = MqttSink("mqtt", bus, sink_config(broker.port, "move", discovery=discovery), ENDPOINTS,
                            Context(profile="fd+fer64", cameras=cameras))
            async with Recorder(broker.port) as live:
                await sink.start()
                try:
                    before = seen[-1] if seen else set()
                    topics = {"homeassistant/sensor/move/%s/config" % o for o in before - expected}
                    # published: the current configs; removed (an empty retained payload): the previous run's
                    await live.wait_for(lambda r: all(r.on("homeassistant/sensor/move/%s/config" % o) for o in expected)
                                        and all(r.on(t)[-1:] == [b""] for t in topics))
                finally:
                    await sink.stop()
            seen.append(await retained_now())
        return seen
    assert run_async(main()) == [e for _, _, e in runs]


def test_run_py_with_two_cameras(broker, tmp_path):
    out, rec = run_py_recorded(broker, tmp_path, "pair", [
        "--engine", "fake", "--camera", "a=synthetic:faces=1,fps=0", "--camera", "b=synthetic:faces=2,fps=0",
        "--frames", "20"], 120, mqtt_conf="results_hz = 1000\n")
    for cam, faces in (("a", 1), ("b", 2)):
        results = rec.json("edgepipe/pair/%s/results" % cam)
        assert results and {len(r["faces"]) for r in results} == {faces}, cam
        assert rec.json("edgepipe/pair/%s/metrics" % cam)[-1]["frames_captured"] == 20
    devices = {json.loads(p)["device"]["identifiers"][0] for t, p, _ in rec.messages
               if t.startswith("homeassistant/sensor/pair/")}
    assert devices == {"edgepipe_pair_a", "edgepipe_pair_b"}
