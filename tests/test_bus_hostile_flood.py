"""Floods over real sockets: a flood on one input starves no other and grows no queue (issue 11.5), and a
message over the size caps is refused by libzmq itself (issue 11.6)."""
from __future__ import annotations

import asyncio
import threading

import zmq
import zmq.asyncio
import zmq.utils.monitor
from helpers import inproc_config, run_async

from edgepipe.bus.codec import encode
from edgepipe.bus.messages import Expression, FaceLabel
from edgepipe.bus.sockets import MAX_SUBSCRIPTION
from edgepipe.pipeline.rss import rss_mb
from edgepipe.pipeline.runner import RunOptions, run

FLOOD_CAP = 400000  # the flood's bound: it stops there, or when the run has ended
FRAMES = 100


class Flooder(threading.Thread):
    """Another peer: PUSHes well-formed expressions for frames that never come, as fast as the pipeline takes
    them, until ``stop`` is set or FLOOD_CAP are sent."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.stop = threading.Event()
        self.sent = 0
        self.error = None

    def run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 0
        sock.sndtimeo = 200  # so that the loop sees ``stop`` while the pipeline's queue is full
        try:
            sock.connect(self.endpoint)
            happy = [FaceLabel("happy", 0.9)]
            while not self.stop.is_set() and self.sent < FLOOD_CAP:
                frames = encode(Expression(10 ** 9 + self.sent, 0, 1, "flood" * 40, 1.0, happy), self.sent + 1)
                try:
                    sock.send_multipart(frames)
                except zmq.Again:
                    continue
                self.sent += 1
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            sock.close(linger=0)
            ctx.term()


def test_an_expression_flood_neither_starves_detections_nor_grows_memory(tmp_path):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0"}, aggregator={"deadline_ms": 60000.0})
    cfg.endpoints.expressions = "ipc://%s/expressions" % tmp_path
    flooder = Flooder(cfg.endpoints.expressions)
    before = rss_mb()

    async def main():
        try:
            return await run(cfg, RunOptions(frames=FRAMES), on_ready=lambda p: flooder.start())
        finally:
            flooder.stop.set()

    s = run_async(main(), timeout=240)
    flooder.join()
    assert flooder.error is None, flooder.error
    peak = s["rss_mb"]["by_process"]["main"]
    print("flood: %d expressions sent; RSS %.1f MB before the run, peak %.1f MB" % (flooder.sent, before, peak))
    # the pipeline finished every frame while the flood still went on: detections were not starved
    assert flooder.sent < FLOOD_CAP
    assert s["frames_completed"] == FRAMES and s["frames_partial"] == 0 and s["unaccounted"] == 0
    c = s["actors"]["aggregator"]["counters"]
    flood_in = c["expressions"] - FRAMES  # one job per frame
    assert flood_in > 0
    assert c.get("early_overflow", 0) + c.get("orphan_expressions", 0) <= flood_in  # each counted once
    assert peak - before < 60, "RSS grew from %.1f to %.1f MB" % (before, peak)


def test_every_socket_that_receives_has_a_size_cap(bus):
    caps = {}
    for kind, bind in ((zmq.SUB, False), (zmq.PULL, True), (zmq.XPUB, True), (zmq.PUB, False)):
        ch = bus.open(kind, "inproc://cap-%d" % kind, bind=bind, hwm=1, name="cap-%d" % kind)
        caps[kind] = ch.sock.getsockopt(zmq.MAXMSGSIZE)
        ch.close()
    assert caps[zmq.SUB] == caps[zmq.PULL] == max(bus.max_header, bus.max_image)
    assert caps[zmq.XPUB] == caps[zmq.PUB] == MAX_SUBSCRIPTION


def test_an_oversized_message_is_refused_by_libzmq_and_the_pipeline_goes_on(tmp_path):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=30"}, bus={"max_image_mb": 1})
    cfg.endpoints.expressions = "ipc://%s/expressions" % tmp_path

    async def attack():
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 0
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        try:
            sock.connect(cfg.endpoints.expressions)
            event = zmq.utils.monitor.parse_monitor_message(await monitor.recv_multipart())
            assert event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
            big = b"\0" * (2 << 20)  # 2 MiB: over the 1 MiB cap
            await sock.send_multipart([b"expression", b"\x94\x02\x01\xc0\x80", big])
            # libzmq drops the connection on the oversized frame, before the pipeline sees any of it
            return zmq.utils.monitor.parse_monitor_message(await monitor.recv_multipart())["event"]
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            ctx.term()

    async def main():
        stop = asyncio.Event()
        ready = asyncio.Event()
        holder = {}

        def on_ready(p):
            holder["bus"] = p.one("aggregator").bus
            ready.set()

        runner = asyncio.ensure_future(run(cfg, RunOptions(), stop=stop, on_ready=on_ready))
        try:
            started = asyncio.ensure_future(ready.wait())
            await asyncio.wait([started, runner], return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            assert ready.is_set(), "the pipeline ended before it was ready"
            holder["event"] = await attack()
            # the pipeline goes on: 10 more results come out
            sub = holder["bus"].sub(cfg.endpoints.results, hwm=100, name="test.results", topics=("result",))
            try:
                for _ in range(10):
                    await sub.recv()
            finally:
                sub.close()
        finally:
            stop.set()
            s = await runner
        return holder, s

    holder, s = run_async(main(), timeout=120)
    assert holder["event"] == zmq.EVENT_DISCONNECTED
    assert s["unaccounted"] == 0 and s["frames_completed"] >= 10
    assert "rejected.oversized" not in s["actors"]["aggregator"]["counters"]  # never received in full
