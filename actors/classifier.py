"""Classifier (profile ``cls``): whole frames -> top-k labels, in place of detector + FER.

It publishes ``Detections`` with no faces and the labels, so the aggregator,
recorder and display treat it like any other frame.

Python 3.9 compatible.
"""
from __future__ import annotations

import time

from bus.messages import Control, Detections, EncodedFrame
from bus.sockets import Bus
from models.engine import EngineError
from models.registry import image_classifier
from models.spec import ModelSpec

from .base import Actor, ms_since
from .detector import decode_image
from .engines import EngineHost, EngineSettings


class Classifier(Actor):
    kind = "classifier"

    def __init__(self, name: str, bus: Bus, *, encoded_endpoint: str, detections_endpoint: str, hwm: int,
                 engine: EngineSettings, model: ModelSpec, top_k: int = 5, birds_only: bool = False,
                 freshest: bool = True, **kw) -> None:
        super().__init__(name, bus, **kw)
        self.encoded_endpoint = encoded_endpoint
        self.detections_endpoint = detections_endpoint
        self.hwm = hwm
        self.model = model
        self.freshest = freshest
        kwargs = {"birds_only": True} if birds_only else {}
        self.host = EngineHost(engine, model, name, lambda e: image_classifier(model, e, top_k=top_k, **kwargs))
        self._held = None

    async def setup(self) -> None:
        await self.host.load()
        self.sub = self.channel(self.bus.sub(self.encoded_endpoint, hwm=self.hwm, name=self.name,
                                             topics=("encoded", "control")))
        self.pub = self.channel(self.bus.pub(self.detections_endpoint, hwm=max(self.hwm, 64), name=self.name))

    async def run(self) -> None:
        while True:
            if self._held is not None:
                msg, self._held = self._held, None
            else:
                msg = await self.sub.recv()
            while self.freshest and isinstance(msg, EncodedFrame):  # the freshest frame wins
                newer = self.sub.recv_nowait()
                if newer is None:
                    break
                if not isinstance(newer, EncodedFrame):
                    self._held = newer  # never let a control overtake the frame before it
                    break
                self.stats.count("in")
                self.stats.drop("stale")
                msg = newer
            self.account_lost(self.sub, "encoded")
            if isinstance(msg, Control):
                await self._control(msg)
                continue
            if not isinstance(msg, EncodedFrame):
                continue
            self.stats.count("in")
            t0 = time.monotonic()
            try:
                labels = await self.host.call(lambda: self.host.model.classify(decode_image(msg)))
            except ValueError as exc:
                self.log.error("frame %d dropped: %s", msg.frame_id, exc)
                self.stats.drop("bad_frame")
                continue
            except EngineError as exc:
                self.log.error("frame %d dropped: engine error: %s", msg.frame_id, exc)
                self.stats.drop("engine_error")
                continue
            self.stats.busy(ms_since(t0))
            await self.pub.send(Detections(msg.frame_id, msg.t_capture, time.monotonic(), msg.width, msg.height,
                                           [], 0, msg.truth, [[l, float(p)] for l, p in labels]))
            self.stats.count("out")

    async def _control(self, msg: Control) -> None:
        if msg.command == "eos":
            self.end_of_stream(self.sub, "encoded", msg)
            await self.pub.send(Control("eos", self.name, msg.last_frame_id, {"sent": self.pub.sent("detections")}))

    async def cleanup(self) -> None:
        self.host.close()
