"""The metrics hub forwards metrics without decoding them; its consumers decode with the typed decoder, so a
hostile metric sent to the hub's input is refused and counted at the consumer (or at the hub, for what the hub
checks itself: frames, header, version, the actor's name) and never stops either of them."""
from __future__ import annotations

import msgspec
from helpers import run_async

from edgepipe.actors.monitoring.metrics_hub import MetricsHub
from edgepipe.actors.runtime.context import Context
from edgepipe.bus.messages import SCHEMA_VERSION, Metric

NAN = float("nan")


def body(**fields):
    doc = {"kind": "metric", "actor": "a", "pid": 1, "t": 1.0}
    doc.update(fields)
    return doc


def frames(doc, version=SCHEMA_VERSION, kind=b"metric"):
    return [kind, msgspec.msgpack.encode([version, 1, None, doc])]


# what the hub forwards (its header checks pass) and the consumer's typed decoder refuses, with the reason
REFUSED_BY_THE_CONSUMER = [
    (body(actor="victim", t=NAN), "bad_value"),
    (body(counters={"in": 1.5}), "bad_field"),
    (body(gauges={"fps": "fast"}), "bad_field"),
    (body(pid=-1), "bad_value"),
    (body(colour="red"), "unknown_field"),
    ({"kind": "metric", "actor": "a", "t": 1.0}, "missing_field"),
    (body(kind="nope"), "unknown_kind"),
    (body(kind="eos", sender="x", last_frame_id=1, sent=0), "unknown_field"),  # another kind, with an actor
]
# what the hub refuses itself (it cannot forward it or needs the actor's name)
REFUSED_BY_THE_HUB = [
    ([b"metric", b"\xc1\xc1"], "malformed"),
    ([b"metric", msgspec.msgpack.encode([SCHEMA_VERSION, 1, ["uint8", [1]], body()])], "malformed"),  # an image
    (frames(body()) + [b"extra"], "bad_frames"),
    (frames(body(), version=SCHEMA_VERSION - 1), "wrong_version"),
    (frames(body(actor=["not", "a", "name"])), "bad_field"),
    (frames(body(actor="x" * 300)), "bad_field"),
    (frames({"kind": "eos", "sender": "x", "last_frame_id": 1, "sent": 0}), "bad_field"),  # no actor
]


def test_hub_forwards_raw_and_hostile_metrics_are_refused_and_counted(bus):
    async def main():
        hub = MetricsHub("metrics", bus, {"metrics_in": "inproc://metrics-in", "metrics": "inproc://metrics"},
                         Context(metrics_interval=3600.0))  # its own report does not come during the test
        sender = bus.pub("inproc://metrics-in", hwm=1000, bind=False, name="test.sender")
        consumer = bus.sub("inproc://metrics", hwm=1000, name="test.consumer", topics=("metric",))
        try:
            await hub.start()
            await hub.public.wait_subscribers(1)
            # the hub's SUB may not have our PUB's pipe yet: probe until one metric went through
            n = 0
            while True:
                n += 1
                await sender.send(Metric("probe", 1, float(n)))
                if await consumer.poll(200):
                    break
            good = Metric("victim", 7, 2.0, {"in": 3, "out": 2}, {"fps": 30.0, "odd": NAN})
            await sender.send(good)
            got = await consumer.recv()
            while got.actor == "probe":  # the probes that went through first
                got = await consumer.recv()
            assert got.actor == "victim" and got.counters == {"in": 3, "out": 2} and got.pid == 7
            assert got.gauges["fps"] == 30.0 and got.gauges["odd"] != got.gauges["odd"]  # NaN, as sent
            assert hub.latest["victim"].counters == {"in": 3, "out": 2}
            out_before = hub.stats.counters["out"]  # the probes and the victim

            for doc, _ in REFUSED_BY_THE_CONSUMER:
                await sender.sock.send_multipart(frames(doc))
            for f, _ in REFUSED_BY_THE_HUB:
                await sender.sock.send_multipart(f)
            await sender.send(Metric("end", 1, 3.0, final=True))
            last = await consumer.recv()  # every hostile one is skipped: the next valid one is the end
            assert last.actor == "end" and last.final

            want_consumer = {}
            for _, reason in REFUSED_BY_THE_CONSUMER:
                want_consumer[reason] = want_consumer.get(reason, 0) + 1
            assert consumer.rejected == want_consumer
            want_hub = {}
            for _, reason in REFUSED_BY_THE_HUB:
                want_hub[reason] = want_hub.get(reason, 0) + 1
            assert hub.inbound.rejected == want_hub
            # the hub forwarded the consumer's hostile ones (it does not decode them) ...
            assert hub.stats.counters["out"] - out_before == len(REFUSED_BY_THE_CONSUMER) + 1
            # ... and its summary keeps the victim's last good snapshot, counting the bad one when it decodes it
            assert hub.latest["victim"].t == 2.0 and hub.latest["end"].final
            assert hub.inbound.rejected["bad_value"] == 1
            snap = hub.snapshot()
            assert snap.counters["rejected.malformed"] == 2 and snap.counters["rejected.bad_value"] == 1
        finally:
            await hub.stop()
            sender.close()
            consumer.close()

    run_async(main())
