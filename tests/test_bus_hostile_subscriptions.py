"""Subscriptions from a hostile peer: a bound publisher reads them, takes kinds only, and cannot be made to grow.

Issue 11.1: a peer that sent 2,000 distinct 10 KB subscriptions took the pipeline to 1.06 GB of RSS, because
the metrics XPUB never read its subscription messages and libzmq kept every topic in its table.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import zmq
from helpers import run_async

from edgepipe.bus import messages as m
from edgepipe.bus.sockets import MAX_SUBSCRIPTION
from edgepipe.pipeline.rss import peak_rss_mb, rss_mb

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 60000  # an upper bound on waiting for an event, never a pacing delay


def test_a_publisher_takes_kinds_and_their_prefixes_only(bus):
    async def main():
        pub = bus.pub("inproc://subs", hwm=100, name="pub")
        good = bus.sub("inproc://subs", hwm=100, name="good", topics=("metric",))
        raw = bus.ctx.socket(zmq.SUB)
        raw.linger = 0
        serve = None
        try:
            await pub.wait_subscribers(1)
            import asyncio
            serve = asyncio.ensure_future(pub.serve_subscriptions())
            raw.connect("inproc://subs")
            for topic in (b"bogus", b"metricX", b"x" * 30, b"met", b""):
                raw.subscribe(topic)
            await pub.wait_subscribers(3)  # good's "metric", raw's "met" and ""
            await pub.send(m.Metric("a", 1, 1.0))
            assert isinstance(await good.recv(), m.Metric)
            frames = await raw.recv_multipart()
            assert frames[0] == b"metric"
            assert pub.rejected == {"bad_subscription": 3}
            assert pub.subscribers == 3
        finally:
            if serve is not None:
                serve.cancel()
                await asyncio.wait([serve])
            raw.close()
            pub.close()
            good.close()
    run_async(main())


def _start_pipeline(tmp_path, endpoint):
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, "run.py", "--engine", "fake", "--source", "synthetic:faces=1,fps=10,size=320x240",
         "--duration", "300",
         "--metrics-endpoint", endpoint, "--summary", str(summary)],
        cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, summary


def _stop_pipeline(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err.decode(errors="replace")


def _next_metric(sock):
    assert sock.poll(WAIT_MS), "no metric from the pipeline"
    frames = sock.recv_multipart()
    assert frames[0] == b"metric"


def test_a_subscription_flood_does_not_grow_the_pipeline(tmp_path):
    """2,000 distinct 10 KB subscriptions to the public metrics endpoint of a running pipeline (run.py)."""
    endpoint = "ipc://%s/metrics" % tmp_path
    proc, summary = _start_pipeline(tmp_path, endpoint)
    ctx = zmq.Context()
    legit = flood = monitor = None
    report = {}
    try:
        legit = ctx.socket(zmq.SUB)
        legit.linger = 0
        legit.subscribe(b"metric")
        legit.connect(endpoint)
        _next_metric(legit)  # the pipeline runs
        before = rss_mb(proc.pid)
        flood = ctx.socket(zmq.SUB)
        flood.linger = 0
        flood.sndhwm = 0  # else libzmq itself would drop subscriptions beyond 1,000 queued
        monitor = flood.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        flood.connect(endpoint)
        for i in range(2000):
            flood.subscribe(b"%05d" % i + b"x" * (10 * 1024 - 5))
        flood.subscribe(b"metric")
        # Either the pipeline took every subscription (then the last one brings a metric) or it dropped the
        # flooder's connection.
        poller = zmq.Poller()
        poller.register(flood, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        drops = 0
        while drops < 1:
            ready = dict(poller.poll(WAIT_MS))
            assert ready, "neither a metric nor a dropped connection"
            if flood in ready:
                flood.recv_multipart()
                break  # every subscription was taken
            monitor.recv_multipart()
            drops += 1
        _next_metric(legit)  # after the flood, a subscriber that behaves still gets its metrics
        after, peak = rss_mb(proc.pid), peak_rss_mb(proc.pid)
        report = {"rss_before_mb": before, "rss_after_mb": after, "peak_rss_mb": peak, "connections_dropped": drops}
        print(json.dumps(report))
        assert proc.poll() is None, "the pipeline stopped"
        assert drops == 1, "the pipeline took 2,000 subscriptions of 10 KB"
        assert after - before < 30, report
    finally:
        for s in (monitor, flood, legit):
            if s is not None:
                s.close(linger=0)
        ctx.term()
        rc, err = _stop_pipeline(proc)
    assert rc == 0, err[-2000:]
    assert json.loads(summary.read_text())["unaccounted"] == 0
    assert MAX_SUBSCRIPTION < 10 * 1024


def test_short_unknown_topics_are_refused_and_counted(tmp_path):
    """20,000 distinct short topics that name no kind: each refused and counted. libzmq still keeps each one
    (about 2 KB) until the peer disconnects: this measures that, the limit README states."""
    endpoint = "ipc://%s/metrics" % tmp_path
    proc, summary = _start_pipeline(tmp_path, endpoint)
    ctx = zmq.Context()
    legit = flood = None
    try:
        legit = ctx.socket(zmq.SUB)
        legit.linger = 0
        legit.subscribe(b"metric")
        legit.connect(endpoint)
        _next_metric(legit)
        before = rss_mb(proc.pid)
        flood = ctx.socket(zmq.SUB)
        flood.linger = 0
        flood.sndhwm = 0
        flood.connect(endpoint)
        for i in range(20000):
            flood.subscribe(b"not-a-kind-%08d" % i + b"y" * 30)
        flood.subscribe(b"metric")
        _next_metric(flood)  # taken last: every one before it was read
        decoder = msgspec.msgpack.Decoder()
        while True:  # the hub's own report counts them
            assert legit.poll(WAIT_MS)
            doc = decoder.decode(legit.recv_multipart()[1])[3]
            if doc["actor"] == "metrics" and doc["counters"].get("rejected.bad_subscription", 0) >= 20000:
                break
        after = rss_mb(proc.pid)
        print(json.dumps({"short_unknown_topics": 20000, "rss_before_mb": before, "rss_after_mb": after}))
        assert doc["counters"]["rejected.bad_subscription"] == 20000
        assert after - before < 150
    finally:
        for s in (flood, legit):
            if s is not None:
                s.close(linger=0)
        ctx.term()
        rc, err = _stop_pipeline(proc)
    assert rc == 0, err[-2000:]
