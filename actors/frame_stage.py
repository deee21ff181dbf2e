"""The shared shape of the detector and the classifier: encoded frames in,
one engine call per frame, detections out.

The freshest frame wins when ``freshest`` is set (live sources): frames that
queued up while the engine was busy are dropped and counted
(``dropped.stale``). An end of stream met while skipping is held back so
that an end of stream never overtakes the frame before it. A corrupt frame or
an engine error drops that frame (counted); an engine call that hangs past
``invoke_timeout_ms`` drops it and reloads the engine (watchdog).

Python 3.9 compatible.
"""
from __future__ import annotations

import abc
import asyncio
import time
from typing import Any

import numpy as np

from bus.messages import EncodedFrame, Eos
from bus.sockets import Bus
from models.engine import EngineError

from .base import Actor, ms_since
from .engines import EngineHost


def decode_image(msg: EncodedFrame) -> np.ndarray:
    """The frame's BGR image; ValueError naming the problem for a corrupt one."""
    import cv2
    if msg.format == "raw":
        img = msg.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError("raw frame is not an HxWx3 uint8 image")
        return img
    if msg.format == "jpeg":
        if not isinstance(msg.image, (bytes, bytearray)):
            raise ValueError("jpeg frame has no bytes")
        img = cv2.imdecode(np.frombuffer(msg.image, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("corrupt JPEG (%d bytes)" % len(msg.image))
        return img
    raise ValueError("unknown frame format %r" % msg.format)


class FrameStage(Actor, abc.ABC):
    def __init__(self, name: str, bus: Bus, *, encoded_endpoint: str, detections_endpoint: str, hwm: int,
                 host: EngineHost, freshest: bool = True, invoke_timeout_ms: float = 2000.0, **kw) -> None:
        super().__init__(name, bus, **kw)
        self.encoded_endpoint = encoded_endpoint
        self.detections_endpoint = detections_endpoint
        self.hwm = hwm
        self.host = host
        self.freshest = freshest
        self.timeout_s = invoke_timeout_ms / 1000.0
        self._held: Any = None

    @abc.abstractmethod
    def work(self, msg: EncodedFrame) -> Any:
        """Decode and run the model on one frame (blocking, in the engine's thread)."""

    @abc.abstractmethod
    async def publish(self, msg: EncodedFrame, result: Any) -> None:
        """Send what ``work`` found."""

    async def setup(self) -> None:
        await self.host.load()
        self.sub = self.channel(self.bus.sub(self.encoded_endpoint, hwm=self.hwm, name=self.name,
                                             topics=("encoded", "eos")))
        self.pub = self.channel(self.bus.pub(self.detections_endpoint, hwm=max(self.hwm, 64), name=self.name))

    async def _next(self) -> Any:
        if self._held is not None:
            msg, self._held = self._held, None
            return msg
        msg = await self.sub.recv()
        if self.freshest and isinstance(msg, EncodedFrame):
            while True:
                newer = self.sub.recv_nowait()
                if newer is None:
                    break
                if not isinstance(newer, EncodedFrame):
                    self._held = newer
                    break
                self.stats.count("in")
                self.stats.drop("stale")
                msg = newer
        return msg

    async def _eos(self, msg: Eos) -> None:
        self.end_of_stream(self.sub, "encoded", msg)
        await self.pub.send(Eos(self.name, msg.last_frame_id, self.pub.sent("detections")))

    async def run(self) -> None:
        while True:
            msg = await self._next()
            self.account_lost(self.sub, "encoded")
            if isinstance(msg, Eos):
                await self._eos(msg)
                continue
            if not isinstance(msg, EncodedFrame):
                self.stats.count("ignored")
                continue
            self.stats.count("in")
            t0 = time.monotonic()
            try:
                result = await self.host.call(self.work, msg, timeout=self.timeout_s)
            except asyncio.TimeoutError:
                self.log.error("frame %d dropped: the engine took over %.0f ms; restarting it",
                               msg.frame_id, self.timeout_s * 1000)
                self.stats.drop("engine_timeout")
                self.stats.count("restarts")
                await self.host.restart()
                continue
            except ValueError as exc:
                self.log.error("frame %d dropped: %s", msg.frame_id, exc)
                self.stats.drop("bad_frame")
                continue
            except EngineError as exc:
                self.log.error("frame %d dropped: engine error: %s", msg.frame_id, exc)
                self.stats.drop("engine_error")
                continue
            self.stats.busy(ms_since(t0))
            await self.publish(msg, result)
            self.stats.count("out")

    async def cleanup(self) -> None:
        self.host.close()
