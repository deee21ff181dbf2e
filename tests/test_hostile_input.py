"""Bad input while the pipeline runs: corrupt frames and hostile messages are counted, nothing stops."""
from __future__ import annotations

import asyncio

import cv2
import numpy as np
import zmq
from helpers import inproc_config, run_async

from edgepipe.actors.detector import Detector, DetectorConfig
from edgepipe.actors.runtime.context import Context, RoleModels
from edgepipe.actors.runtime.engines import EngineSettings
from edgepipe.actors.sources.source_factory import make_source
from edgepipe.bus.codec import encode
from edgepipe.bus.messages import Detections, EncodedFrame, Eos, Expression, FaceLabel
from edgepipe.models.families.family import input_for
from edgepipe.models.store import manifest
from edgepipe.pipeline.runner import RunOptions, run


def ssd_detector(bus) -> Detector:
    """A detector on the fake engine (Coral's SSD face model): encoded frames in on inproc://enc, every frame
    worked on (not only the freshest), detections out on inproc://det."""
    return Detector("detector", bus, DetectorConfig(hwm=16), {"encoded": "inproc://enc", "detections": "inproc://det"},
                    Context(live=False), RoleModels(EngineSettings(), manifest.get("coral-ssd-face")))


def test_detector_drops_corrupt_frames_and_goes_on(bus):
    async def main():
        det = ssd_detector(bus)
        pub = bus.pub("inproc://enc", hwm=16, name="test.enc")
        sub = bus.sub("inproc://det", hwm=16, name="test.det")
        try:
            await det.start()
            await pub.wait_subscribers(1)
            await det.pub.wait_subscribers(1)
            img, _ = make_source("synthetic:faces=2,fps=0").read()
            ok, jpeg = cv2.imencode(".jpg", img)
            await pub.send(EncodedFrame(0, 0.0, "jpeg", 640, 480, b"\xff\xd8 broken"))
            await pub.send(EncodedFrame(1, 0.0, "raw", 640, 480, np.zeros((4, 4), np.uint8)))
            await pub.send(EncodedFrame(2, 0.0, "jpeg", 640, 480, jpeg.tobytes()))
            await pub.send(Eos("test", 2, pub.sent("encoded")))
            got = await sub.recv()
            assert isinstance(got, Detections) and got.frame_id == 2 and len(got.faces) == 2
            assert isinstance(await sub.recv(), Eos)
            assert det.stats.counters["dropped.bad_frame"] == 1  # the broken JPEG
            # the 4x4 "640x480" raw frame is refused on the wire: counted as rejected, and as lost on the link
            assert det.loss.rejected() == {"bad_value": 1}
            assert det.stats.counters["dropped.transport"] == 1
            assert det.stats.counters["in"] == 2 and det.stats.counters["out"] == 1
        finally:
            await det.stop()
            pub.close()
            sub.close()
    run_async(main())


def test_detector_uses_the_encoders_input_when_it_fits_and_makes_it_otherwise(bus):
    async def main():
        spec = manifest.get("coral-ssd-face")
        det = ssd_detector(bus)
        pub = bus.pub("inproc://enc", hwm=16, name="test.enc")
        sub = bus.sub("inproc://det", hwm=16, name="test.det")
        try:
            await det.start()
            await pub.wait_subscribers(1)
            await det.pub.wait_subscribers(1)
            img, _ = make_source("synthetic:faces=2,fps=0").read()
            pixels, fit = input_for(spec).prepare(img)
            fit = tuple(float(v) for v in fit)
            await pub.send(EncodedFrame(0, 0.0, "raw", 640, 480, img, fit, pixels))  # as the encoder sends it
            await pub.send(EncodedFrame(1, 0.0, "raw", 640, 480, img, fit, pixels[:10]))  # another model's size
            await pub.send(EncodedFrame(2, 0.0, "raw", 640, 480, img))  # an encoder that does not make it
            await pub.send(Eos("test", 2, pub.sent("encoded")))
            got = [await sub.recv() for _ in range(3)]
            assert [d.frame_id for d in got] == [0, 1, 2]
            assert [d.faces for d in got[1:]] == [got[0].faces] * 2 and len(got[0].faces) == 2
            assert isinstance(await sub.recv(), Eos)
            c = det.stats.counters
            assert c["input_ahead"] == 1 and c["input_mismatch"] == 1 and c["out"] == 3
        finally:
            await det.stop()
            pub.close()
            sub.close()
    run_async(main())


def test_hostile_messages_into_a_running_pipeline():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=0"})
    cfg.endpoints.expressions = "inproc://expressions"

    async def main():
        injected = asyncio.Event()
        holder = {}

        def on_ready(p):
            holder["p"] = p
            injected.set()

        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=80), on_ready=on_ready))
        await injected.wait()
        bus = holder["p"].one("aggregator").bus  # the same process and context: inproc reaches it
        raw = bus.ctx.socket(zmq.PUSH)
        raw.linger = 0
        raw.connect(cfg.endpoints.expressions)
        try:
            await raw.send_multipart([b"expression/default/", b"\x92\x01"])  # truncated msgpack
            await raw.send_multipart([b"result", b"x" * 10, b"y"])  # wrong kind on this socket, bad header
            await raw.send_multipart([b"\x00" * 40])  # one frame of junk
            happy = [FaceLabel("happy", 1.0)]
            await raw.send_multipart(encode(Expression(10 ** 9, 0, 1, "evil", 0.0, happy)))  # no such frame
            await raw.send_multipart(encode(Expression(3, 99, 1, "evil", 0.0, happy)))  # no such face
            # refused on the wire: a NaN confidence for a real face, a negative frame id
            await raw.send_multipart(encode(Expression(3, 0, 1, "evil", 0.0, [FaceLabel("angry", float("nan"))])))
            await raw.send_multipart(encode(Expression(-3, 0, 1, "evil", 0.0, happy)))
        finally:
            raw.close()
        return await runner

    s = run_async(main())
    assert s["frames_completed"] + s["frames_partial"] == 80 and s["unaccounted"] == 0
    agg = s["actors"]["aggregator"]
    assert agg["rejected"] == 5
    assert agg["counters"]["rejected.bad_value"] == 2
    # nothing was joined wrongly: every face that has an expression has the drawn one
    f = s["faces"]
    assert f["matched"] == f["truth"] == 160
    assert f["expression_correct"] == 160
