"""The hostile-input part of the fault suite (issue 11): over real sockets, to a running pipeline (run.py).

- 10**5 random and mutated messages (``hostile_gen.Barrage``) on the aggregator's expressions endpoint:
  malformed msgpack, unknown kinds, wrong schema versions, wrong shapes, boxes outside the frame, NaN
  confidences, headers over the bus's cap, expressions for frames that never come;
- frames over the size cap, each on its own connection (libzmq drops the connection);
- a subscription flood on the public metrics endpoint: 2,000 distinct 10 KB topics, and 2,000 small ones
  that name no kind;
- a slow and a stalled subscriber on the public results endpoint.

Checked: the pipeline never stops, every bad message is counted (the aggregator's counters add up to what
was sent, exactly), every frame is accounted for, and RSS stays bounded. The figures go to a JSON report,
``$EDGEPIPE_HOSTILE_REPORT`` (the README's: ``bench-out/faults/hostile.json``; unset, the session's tmp).
CI runs 10**5 messages;
``pytest -m soak`` runs 10**6.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict

import msgspec
import pytest
import zmq
import zmq.utils.monitor
from faults_report import update
from hostile_gen import Barrage

from edgepipe.bus.codec import encode
from edgepipe.bus.messages import Metric, Stopped
from edgepipe.pipeline.rss import peak_rss_mb, rss_mb

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 120000  # an upper bound on waiting for an event, never a pacing delay
IMAGE_CAP_MB = 4
RSS_BOUND_MB = 120  # the pipeline's peak RSS may exceed its RSS when ready by this much at most


def report_path() -> Path:
    return Path(os.environ.get("EDGEPIPE_HOSTILE_REPORT", str(ROOT / "bench-out" / "faults" / "hostile.json")))


def write_report(name: str, data: Dict[str, Any]) -> None:
    update(report_path(), [name], data)


class Metrics:
    """A well-behaved subscriber of the public metrics endpoint."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.subscribe(b"metric")
        self.sock.connect(endpoint)
        self.decoder = msgspec.msgpack.Decoder()

    def until(self, actor: str, ok) -> Metric:
        """The first snapshot of ``actor`` for which ``ok(counters, gauges)`` holds."""
        while True:
            assert self.sock.poll(WAIT_MS), "no metrics from the pipeline"
            frames = self.sock.recv_multipart()
            doc = self.decoder.decode(frames[1])[3]
            if doc.get("actor") == actor and ok(doc.get("counters", {}), doc.get("gauges", {})):
                return doc


class SlowSubscriber(threading.Thread):
    """Reads results, one every 20 ms (a client on a slow link)."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = 10
        self.sock.subscribe(b"result")
        self.sock.connect(endpoint)
        self.stop = threading.Event()
        self.received = 0
        self.got_one = threading.Event()  # set on the first result: what the test asserts, waited for

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.sock.poll(100):
                    self.sock.recv_multipart()
                    self.received += 1
                    self.got_one.set()
                    time.sleep(0.02)  # the slowness under test, not a synchronisation
        finally:
            self.sock.close()


def _wait_events(monitor, want: int, n: int) -> int:
    got = 0
    while got < n:
        assert monitor.poll(WAIT_MS), "no socket event %d" % want
        if zmq.utils.monitor.parse_monitor_message(monitor.recv_multipart())["event"] == want:
            got += 1
    return got


def _oversized_frames(ctx: zmq.Context, endpoint: str, count: int) -> int:
    """Send ``count`` frames over the size cap, each on its own connection; return how many libzmq refused."""
    refused = 0
    for _ in range(count):
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 0
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        try:
            sock.connect(endpoint)
            _wait_events(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED, 1)
            sock.send_multipart([b"expression", b"\x94\x02\x01\xc0\x80", b"\0" * ((IMAGE_CAP_MB + 1) << 20)])
            refused += _wait_events(monitor, zmq.EVENT_DISCONNECTED, 1)
        finally:
            sock.disable_monitor()
            monitor.close()
            sock.close()
    return refused


def _subscription_floods(ctx: zmq.Context, endpoint: str) -> Dict[str, int]:
    out = {}
    big = ctx.socket(zmq.SUB)
    big.linger = 0
    big.sndhwm = 0
    monitor = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        big.connect(endpoint)
        for i in range(2000):
            big.subscribe(b"%05d" % i + b"x" * (10 * 1024 - 5))
        out["big_topics"] = 2000
        out["big_connections_dropped"] = _wait_events(monitor, zmq.EVENT_DISCONNECTED, 1)
    finally:
        big.disable_monitor()
        monitor.close()
        big.close()
    small = ctx.socket(zmq.SUB)
    small.linger = 0
    small.sndhwm = 0
    try:
        small.connect(endpoint)
        for i in range(2000):
            small.subscribe(b"not-a-kind-%05d" % i)
        small.subscribe(b"metric")  # the last one: it is taken, and a metric comes once all were read
        out["small_topics"] = 2000
        assert small.poll(WAIT_MS), "the pipeline never took the subscription that names a kind"
    finally:
        small.close()
    return out


def _start(tmp_path):
    overlay = tmp_path / "hostile.toml"
    eps = {name: "ipc://%s/%s" % (tmp_path, name) for name in ("expressions", "results", "metrics")}
    overlay.write_text('[bus]\nmax_image_mb = %d\nmetrics_interval_s = 0.5\n\n[endpoints]\n%s\n'
                       % (IMAGE_CAP_MB, "\n".join('%s = "%s"' % kv for kv in eps.items())))
    summary = tmp_path / "summary.json"
    with open(tmp_path / "pipeline.log", "wb") as log:  # a file: a pipe nobody reads would fill and block it
        proc = subprocess.Popen(
            [sys.executable, "run.py", "--config", str(overlay), "--engine", "fake", "--source",
             "synthetic:faces=2,fps=30,size=320x240", "--duration", "3000", "--summary", str(summary)],
            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=log,
            env=dict(os.environ, EDGEPIPE_RUN_DIR=str(tmp_path / "runs")))
    return proc, eps, summary


def _stop(proc, tmp_path):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, (tmp_path / "pipeline.log").read_text(errors="replace")


WAIT_S = WAIT_MS / 1000


def hostile_run(tmp_path, n_messages: int, name: str) -> Dict[str, Any]:
    proc, eps, summary_path = _start(tmp_path)
    ctx = zmq.Context()
    metrics = slow = stalled = None
    t0 = time.monotonic()
    try:
        metrics = Metrics(ctx, eps["metrics"])
        metrics.until("aggregator", lambda c, g: True)  # the pipeline runs
        rss_ready = rss_mb(proc.pid)
        slow = SlowSubscriber(ctx, eps["results"])
        slow.start()
        stalled = ctx.socket(zmq.SUB)  # subscribes and never reads
        stalled.linger = 0
        stalled.rcvhwm = 1
        stalled.subscribe(b"")
        stalled.connect(eps["results"])

        floods = _subscription_floods(ctx, eps["metrics"])
        hub = metrics.until("metrics", lambda c, g: c.get("rejected.bad_subscription", 0) >= 2000)
        floods["refused_counted_by_the_pipeline"] = hub["counters"]["rejected.bad_subscription"]

        barrage = Barrage(seed=11, oversized_header=2 << 20)
        push = ctx.socket(zmq.PUSH)
        push.linger = WAIT_MS  # what is still queued at close goes out (the sentinel above all)
        try:
            push.connect(eps["expressions"])
            for _ in range(n_messages):
                push.send_multipart(barrage.make()[1])
            push.send_multipart(encode(Stopped("hostile-sentinel", 0)))  # the aggregator ignores it, and counts
        finally:
            push.close()
        refused = _oversized_frames(ctx, eps["expressions"], 5)

        # Every message on the barrage's connection is read in order: once the sentinel is counted, the
        # aggregator's counters hold every one of them.
        agg = metrics.until("aggregator", lambda c, g: c.get("ignored", 0) >= 1)
        c, g = agg["counters"], agg["gauges"]
        rejected = {k[len("rejected."):]: v for k, v in c.items() if k.startswith("rejected.")}
        strays = {k: c.get(k, 0) for k in ("orphan_expressions", "early_overflow", "duplicate_expressions")}
        strays["early_now"] = int(g.get("early", 0))
        counted = sum(rejected.values()) + c["ignored"] + sum(strays.values())
        slow.got_one.wait(WAIT_MS / 1000.0)  # results reach the slow subscriber (asserted below)
        alive = proc.poll() is None
        peak = peak_rss_mb(proc.pid)
        rss_end = rss_mb(proc.pid)
    finally:
        if slow is not None:
            slow.stop.set()
            slow.join()
        for s in (stalled, metrics.sock if metrics else None):
            if s is not None:
                s.close()
        ctx.term()
        rc, err = _stop(proc, tmp_path)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    report = {
        "messages_sent": n_messages,
        "by_category": dict(sorted(barrage.sent.items())),
        "counted_by_the_pipeline": counted - 1,  # less the sentinel
        "rejected_by_reason": dict(sorted(rejected.items())),
        "well_formed_strays": strays,
        "oversized_frames_refused_by_libzmq": refused,
        "subscriptions": floods,
        "slow_subscriber_results": slow.received if slow else 0,
        "rss_mb": {"ready": rss_ready, "end": rss_end, "peak": peak},
        "frames": {k: summary.get(k) for k in ("frames_captured", "frames_completed", "frames_partial",
                                               "dropped_total", "unaccounted")},
        "exit_code": rc,
        "seconds": round(time.monotonic() - t0, 1),
    }
    write_report(name, report)
    print(json.dumps(report, indent=1))
    assert alive and rc == 0, err[-3000:]
    assert counted == n_messages + 1, report
    assert summary["unaccounted"] == 0, report
    assert floods["refused_counted_by_the_pipeline"] == 2000 and floods["big_connections_dropped"] == 1
    assert refused == 5
    assert slow.received > 0
    assert peak - rss_ready < RSS_BOUND_MB, report
    return report


def test_hostile_input_over_real_sockets(tmp_path):
    hostile_run(tmp_path, 10 ** 5, "hostile_ci")


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_hostile_input_soak(tmp_path):
    hostile_run(tmp_path, 10 ** 6, "hostile_soak")
