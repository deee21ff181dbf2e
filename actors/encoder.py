"""Encoder: frames -> encoded frames, raw (zero-copy pass-through) or JPEG.

JPEG costs CPU here and saves bandwidth where the frame leaves the host or
crosses into another interpreter over TCP; raw is cheapest in one process or
over ipc. Which one is a config choice (``encoder.format``).

Python 3.9 compatible.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import cv2

from bus.messages import EncodedFrame, Eos, Frame
from bus.sockets import Bus

from .base import Actor, in_thread, ms_since


class Encoder(Actor):
    kind = "encoder"

    def __init__(self, name: str, bus: Bus, *, frames_endpoint: str, encoded_endpoint: str, hwm: int,
                 format: str = "raw", jpeg_quality: int = 85, **kw) -> None:
        super().__init__(name, bus, **kw)
        self.frames_endpoint = frames_endpoint
        self.encoded_endpoint = encoded_endpoint
        self.hwm = hwm
        self.format = format
        self.params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        self.executor: Optional[ThreadPoolExecutor] = None

    async def setup(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.sub = self.channel(self.bus.sub(self.frames_endpoint, hwm=self.hwm, name=self.name,
                                             topics=("frame", "eos")))
        self.pub = self.channel(self.bus.pub(self.encoded_endpoint, hwm=self.hwm, name=self.name))

    def _jpeg(self, image) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, self.params)
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    async def run(self) -> None:
        while True:
            msg = await self.sub.recv()
            self.account_lost(self.sub, "frame")
            if isinstance(msg, Eos):
                self.end_of_stream(self.sub, "frame", msg)
                await self.pub.send(Eos(self.name, msg.last_frame_id, self.pub.sent("encoded")))
                continue
            if not isinstance(msg, Frame) or msg.image is None or getattr(msg.image, "ndim", 0) != 3:
                self.stats.count("ignored")
                continue
            self.stats.count("in")
            t0 = time.monotonic()
            h, w = msg.image.shape[:2]
            if self.format == "jpeg":
                try:
                    payload = await in_thread(self.executor, self._jpeg, msg.image)
                except (ValueError, cv2.error) as exc:
                    self.log.error("frame %d: %s", msg.frame_id, exc)
                    self.stats.drop("encode_error")
                    continue
            else:
                payload = msg.image
            await self.pub.send(EncodedFrame(msg.frame_id, msg.t_capture, self.format, w, h, payload))
            self.stats.count("out")
            self.stats.busy(ms_since(t0))

    async def cleanup(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)
