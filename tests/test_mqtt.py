"""MQTT out against a real Mosquitto broker (Debian's ``mosquitto``), read by a real client."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_clock import FakeClock
from helpers import inproc_config, run_async
from mqtt_broker import MOSQUITTO, Broker, Recorder, Relay, free_port, tls_files

from edgepipe.actors.runtime.context import Context
from edgepipe.actors.sinks.mqtt_sink import MqttSink
from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.loading import MqttConfig
from edgepipe.pipeline.config.mqtt_options import check_mqtt
from edgepipe.pipeline.runner import RunOptions, run

pytestmark = pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Debian's mosquitto (CI installs it)")

ROOT = Path(__file__).resolve().parents[1]

ENDPOINTS = {"results": "inproc://results", "metrics": "inproc://metrics"}  # the sink reads results and the public metrics


@pytest.fixture
def broker(tmp_path):
    b = Broker(str(tmp_path))
    try:
        b.start()
        yield b
    finally:
        b.stop()


def sink_config(port, name, **kw):
    return MqttConfig(host="127.0.0.1", port=port, name=name, reconnect_min_s=0.05, reconnect_max_s=0.5, **kw)


def test_discovery_is_retained_and_the_last_will_says_offline(broker, bus):
    clock = FakeClock()  # the reconnect backoff waits on it: the test steps it

    async def main():
        async with Relay(broker.port) as relay, Recorder(broker.port) as live:
            sink = MqttSink("mqtt", bus, sink_config(relay.port, "hall"), ENDPOINTS, Context(profile="fd+fer64"),
                            clock=clock)
            await sink.start()
            try:
                avail = "edgepipe/hall/availability"
                configs = ("homeassistant/sensor/hall/faces/config", "homeassistant/sensor/hall/expression/config")
                await live.wait_for(lambda r: r.on(avail) == [b"online"] and all(r.on(t) for t in configs))
                # a client that subscribes later gets the retained discovery configs and availability
                async with Recorder(broker.port) as late:
                    await late.wait_for(lambda r: all(r.on(t) for t in configs + (avail,)))
                    assert all(retain for t, _, retain in late.messages if t in configs + (avail,))
                    faces, expr = (json.loads(late.on(t)[0]) for t in configs)
                    assert faces["state_topic"] == expr["state_topic"] == "edgepipe/hall/state"
                    assert faces["availability_topic"] == avail
                    assert faces["device"]["identifiers"] == ["edgepipe_hall"] == expr["device"]["identifiers"]
                    assert faces["device"]["model"] == "profile fd+fer64"
                    assert late.on(avail) == [b"online"]
                # the publisher's connection dies without a DISCONNECT: the broker sends its last will
                relay.cut()
                await live.wait_for(lambda r: r.on(avail)[-1:] == [b"offline"])
                backoff = await clock.step()  # lost: it waits reconnect_min_s before it reconnects
                assert backoff.duration == pytest.approx(0.05) and not sink.connected
                await sink.wait_for(lambda s: s.connected and s.stats.counters["reconnects"] == 1)
                await live.wait_for(lambda r: r.on(avail) == [b"online", b"offline", b"online"])
            finally:
                await sink.stop()
            await live.wait_for(lambda r: r.on(avail) == [b"online", b"offline", b"online", b"offline"])
            assert not sink.connected
    run_async(main())
    assert clock.slept == pytest.approx([0.05])


def test_broker_down_at_start_is_retried_with_backoff(tmp_path, bus):
    port = free_port()
    b = Broker(str(tmp_path), port=port)
    clock = FakeClock()

    async def main():
        sink = MqttSink("mqtt", bus, sink_config(port, "porch", queue=3), ENDPOINTS, Context(), clock=clock)
        await sink.start()
        try:
            steps = [await clock.step()]  # each refused connection waits on the clock: step it
            while len(steps) < 5:
                steps.append(await clock.step(begun_after=steps[-1].index))
            waiting = await clock.sleeper(begun_after=steps[-1].index)  # after the 6th failure: not stepped yet
            assert [s.duration for s in steps + [waiting]] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
            assert sink.stats.counters["connect_failures"] == 6 and not sink.connected
            for i in range(5):  # held while the broker is away; the queue keeps the newest 3
                sink.enqueue("edgepipe/porch/test", b"%d" % i)
            assert sink.stats.counters["queue_dropped"] == 2
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, b.start)
            clock.advance_to(waiting.deadline)
            async with Recorder(port) as rec:
                await sink.wait_for(lambda s: s.connected)
                sink.enqueue("edgepipe/porch/test", b"5")
                await rec.wait_for(lambda r: b"5" in r.on("edgepipe/porch/test"))
                assert rec.on("edgepipe/porch/test")[-1:] == [b"5"]
                assert set(rec.on("edgepipe/porch/test")) <= {b"2", b"3", b"4", b"5"}
            assert sink.stats.counters["connects"] == 1 and sink.stats.counters["reconnects"] == 0
            # connected, the backoff starts again: the broker going away now is retried after reconnect_min_s
            await loop.run_in_executor(None, b.stop)
            again = await clock.sleeper(begun_after=waiting.index)
            assert again.duration == pytest.approx(0.05) and not sink.connected
            await loop.run_in_executor(None, b.start)
            clock.advance_to(again.deadline)
            await sink.wait_for(lambda s: s.connected)
        finally:
            await sink.stop()
        c = sink.stats.counters
        assert c["connects"] == 1 and c["reconnects"] == 1 and c["connect_failures"] == 6
    try:
        run_async(main())
    finally:
        b.stop()


@pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("mosquitto_passwd")),
                    reason="needs openssl and mosquitto_passwd")
def test_tls_with_user_and_password(tmp_path, bus):
    import ssl

    import aiomqtt
    t = tls_files(str(tmp_path))
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "cam", "s3cret"], check=True, capture_output=True)
    b = Broker(str(tmp_path), listener="cafile %s\ncertfile %s\nkeyfile %s\nallow_anonymous false\npassword_file %s\n"
               % (t["ca.pem"], t["server.pem"], t["server.key"], pw))

    clocks = {"tls": FakeClock(), "tls-bad": FakeClock()}

    def sink(url, name):
        cfg = config.load(mqtt=url)
        cfg.mqtt.ca_file, cfg.mqtt.name = t["ca.pem"], name
        cfg.mqtt.reconnect_min_s = cfg.mqtt.reconnect_max_s = 0.05
        check_mqtt(cfg.mqtt)
        return MqttSink("mqtt-" + name, bus, cfg.mqtt, ENDPOINTS, Context(), clock=clocks[name])

    async def main():
        good = sink("mqtts://cam:s3cret@127.0.0.1:%d" % b.port, "tls")
        bad = sink("mqtts://cam:wrong@127.0.0.1:%d" % b.port, "tls-bad")
        async with Recorder(b.port, username="cam", password="s3cret",
                            tls_params=aiomqtt.TLSParameters(ca_certs=t["ca.pem"], cert_reqs=ssl.CERT_REQUIRED)) as rec:
            for s in (good, bad):
                await s.start()
            try:
                await rec.wait_for(lambda r: r.on("edgepipe/tls/availability") == [b"online"])
                await clocks["tls-bad"].step()  # refused: it retries after the backoff
                await bad.wait_for(lambda s: s.stats.counters["connect_failures"] >= 2)
                assert good.connected and not bad.connected and bad.stats.counters["connects"] == 0
            finally:
                for s in (good, bad):
                    await s.stop()
            await rec.wait_for(lambda r: r.on("edgepipe/tls/availability") == [b"online", b"offline"])
        assert rec.on("edgepipe/tls-bad/availability") == []
        assert clocks["tls"].slept == [] and len(clocks["tls-bad"].slept) >= 2
    b.start()
    try:
        run_async(main())
    finally:
        b.stop()


def run_recorded(cfg, broker, frames: int):
    """Run the pipeline for ``frames`` in this process; its summary and everything its MQTT sink published,
    recorded until its last message (availability "offline") arrived."""
    async def main():
        async with Recorder(broker.port) as rec:
            s = await run(cfg, RunOptions(frames=frames))
            await rec.wait_for(lambda r: r.on("edgepipe/%s/availability" % cfg.mqtt.name)[-1:] == [b"offline"])
            return s, rec
    return run_async(main())


def test_face_events_from_a_pipeline_run(broker):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0,size=640x480,change=7"},
                        mqtt={"host": "127.0.0.1", "port": broker.port, "name": "desk", "results_hz": 1000.0})

    s, rec = run_recorded(cfg, broker, frames=60)
    assert s["unaccounted"] == 0 and s["leaked_sockets"] == [] and s["frames_completed"] == 60
    counters = s["actors"]["mqtt"]["counters"]
    assert counters["queue_dropped"] == 0 and counters["results_lost"] == 0
    events = rec.json("edgepipe/desk/events")
    by_kind = {k: [e for e in events if e["event"] == k] for k in ("appeared", "expression", "gone")}
    # the synthetic source draws two faces all along: two tracks, each appears once and goes at the end
    assert sorted(e["track"] for e in by_kind["appeared"]) == [0, 1]
    assert sorted((e["track"], e["reason"], e["last_frame_id"]) for e in by_kind["gone"]) == [(0, "end", 59),
                                                                                              (1, "end", 59)]
    # their expressions change every 7 frames: the smoothed label follows, one event per change
    assert by_kind["expression"], events
    for tid in (0, 1):
        seq = [e for e in events if e["track"] == tid]
        assert seq[0]["event"] == "appeared" and seq[-1]["event"] == "gone"
        labels = [seq[0]["expression"]] + [e["expression"] for e in seq if e["event"] == "expression"]
        assert all(a != b for a, b in zip(labels, labels[1:]))
        assert [e["previous"] for e in seq if e["event"] == "expression"] == labels[:-1]
    results = rec.json("edgepipe/desk/results")
    assert results and all(len(r["faces"]) == 2 and len(r["faces"][0]["box"]) == 4 for r in results)
    assert [r["frame_id"] for r in results] == sorted({r["frame_id"] for r in results})
    state = rec.json("edgepipe/desk/state")
    assert state[-1]["faces"] == 2 and state[-1]["expression"] is not None
    summary = rec.json("edgepipe/desk/metrics")[-1]
    assert summary["mqtt"]["queue_dropped"] == 0 and "aggregator" in summary["actors"]
    # the one camera default: its status in the pipeline's summary, from the run's own actors
    default = summary["cameras"]["default"]
    assert (default["frames_captured"], default["frames_completed"], default["dropped"]) == (60, 60, 0), default
    # every queued message reached the subscriber (QoS 1 both ways)
    queued_topics = ("events", "results", "state", "metrics")
    got = sum(len(rec.on("edgepipe/desk/" + t)) for t in queued_topics)
    assert got == counters["published"] == counters["queued"]
    assert counters["events"] == len(events)


def test_with_the_web_display_a_recorded_source_runs_to_its_end(broker):
    # the start-up waits for the results' subscribers: MQTT beside the display and the recorder must not stall it
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0", "display": "web:127.0.0.1:0"},
                        mqtt={"host": "127.0.0.1", "port": broker.port, "name": "web"})

    s, rec = run_recorded(cfg, broker, frames=20)
    assert s["frames_completed"] == 20 and s["unaccounted"] == 0
    assert [e["event"] for e in rec.json("edgepipe/web/events")] == ["appeared", "gone"]


def test_broker_killed_and_restarted_mid_run(broker):
    # a live 30 FPS source; the broker dies mid-run and comes back on the same port
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=30,size=320x240,change=7"},
                        mqtt={"host": "127.0.0.1", "port": broker.port, "name": "lab", "results_hz": 1000.0,
                              "queue": 8, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5})
    seen = {}

    async def main():
        stop = asyncio.Event()
        ready = asyncio.get_running_loop().create_future()
        runner = asyncio.ensure_future(run(cfg, RunOptions(), stop, on_ready=ready.set_result))
        try:
            p = await asyncio.wait_for(asyncio.shield(ready), 60)
            sink = p.one("mqtt")
            await sink.wait_for(lambda s: s.stats.counters["published"] >= 10)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, broker.stop)
            await sink.wait_for(lambda s: not s.connected)
            seen["in_at_kill"] = sink.stats.counters["in"]
            # inference goes on while the broker is away; the queue keeps the newest 8 messages
            await sink.wait_for(lambda s: s.stats.counters["in"] >= seen["in_at_kill"] + 30
                                and s.stats.counters["queue_dropped"] > 0)
            assert len(sink.queue) == 8 and not sink.connected
            await loop.run_in_executor(None, broker.start)
            async with Recorder(broker.port) as rec:  # a broker without persistence: discovery comes again
                await sink.wait_for(lambda s: s.connected and s.stats.counters["reconnects"] >= 1)
                await rec.wait_for(lambda r: bool(r.on("homeassistant/sensor/lab/faces/config"))
                                   and bool(r.on("edgepipe/lab/events") or r.on("edgepipe/lab/results")))
                assert rec.on("edgepipe/lab/availability")[:1] == [b"online"]
            seen["dropped_mid_run"] = sink.stats.counters["queue_dropped"]
            stop.set()
            return await runner
        finally:
            stop.set()
            if not runner.done():
                await asyncio.wait([runner])
    s = run_async(main(), timeout=120)
    assert s["unaccounted"] == 0 and s["leaked_sockets"] == []
    c = s["actors"]["mqtt"]["counters"]
    assert c["reconnects"] >= 1 and c["queue_dropped"] >= seen["dropped_mid_run"] > 0
    assert s["actors"]["mqtt"]["in"] >= seen["in_at_kill"] + 30


def run_py_recorded(broker, tmp_path, name: str, args, timeout: float, mqtt_conf: str = ""):
    """``run.py --mqtt`` to the test broker as camera ``name``; returns its stdout and everything it published,
    recorded until its last will (availability "offline") arrives."""
    conf = tmp_path / "cam.toml"
    conf.write_text('[mqtt]\nname = "%s"\n%s' % (name, mqtt_conf))

    async def main():
        async with Recorder(broker.port) as rec:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "run.py"), "--config", str(conf), *args,
                "--metrics-endpoint", "ipc://%s" % (tmp_path / "metrics"),
                "--mqtt", "mqtt://127.0.0.1:%d" % broker.port,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(tmp_path))
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            await rec.wait_for(lambda r: r.on("edgepipe/%s/availability" % name)[-1:] == [b"offline"])
            return out.decode(), rec
    return run_async(main(), timeout=timeout)


def test_run_py_with_mqtt_publishes_discovery_and_events(broker, tmp_path):
    out, rec = run_py_recorded(broker, tmp_path, "cli", ["--engine", "fake", "--source",
                                                          "synthetic:faces=1,fps=0,change=5", "--frames", "30"], 120,
                               mqtt_conf="results_hz = 0\n")
    assert rec.on("homeassistant/sensor/cli/faces/config") and rec.on("homeassistant/sensor/cli/expression/config")
    events = rec.json("edgepipe/cli/events")
    assert [e["event"] for e in events][:1] == ["appeared"] and events[-1]["event"] == "gone"
    assert rec.on("edgepipe/cli/results") == []  # results_hz = 0: no per-frame results
    line = next(x for x in out.splitlines() if x.startswith("mqtt: "))
    sent = "mqtt: %d messages published" % len(
        [m for m in rec.messages if m[0].split("/")[-1] in ("events", "state", "metrics")])
    assert (line == sent or line.startswith(sent + ", ")) and "dropped" not in line  # none dropped: not a word


def test_demo_clip_on_the_cpu_with_the_web_view_sends_a_real_face(broker, tmp_path):
    # the command (python run.py --profile fd+fer64 --source demo --display web --mqtt ...) on real models:
    # the demo clip has one face; Home Assistant's discovery and that face's events reach the broker
    out, rec = run_py_recorded(broker, tmp_path, "demo", [
        "--profile", "fd+fer64", "--engine", "cpu", "--source", "demo:unpaced", "--display", "web:127.0.0.1:0",
        "--frames", "40"], 240)
    assert "frames: 40 captured, 40 completed" in out
    configs = [json.loads(p) for t, p, _ in rec.messages if t.startswith("homeassistant/sensor/demo/")]
    assert sorted(c["name"] for c in configs) == ["Dominant expression", "FPS", "Faces"]
    events = rec.json("edgepipe/demo/events")
    appeared = [e for e in events if e["event"] == "appeared"]
    assert appeared and appeared[0]["expression"] and len(appeared[0]["box"]) == 4
    assert {e["track"] for e in events if e["event"] == "gone"} == {e["track"] for e in appeared}
    assert rec.json("edgepipe/demo/state")[0]["faces"] == 1
