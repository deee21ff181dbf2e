"""Detector: encoded frames -> detections (PUB) and one FER job per face (PUSH).

The freshest frame wins: when frames queued up while the engine was busy, the
older ones are dropped and counted (``dropped.stale``). FER jobs of a frame
that is kept are never dropped: sending them waits for a free FER worker, and
that back-pressure makes this actor skip stale frames instead.

Python 3.9 compatible.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, List, Optional, Tuple

import cv2
import numpy as np

from bus.messages import Box, Control, Detections, EncodedFrame, FaceJob
from bus.sockets import Bus
from models.engine import EngineError
from models.registry import expression_model, face_detector
from models.spec import FaceBox, ModelSpec

from .base import Actor, ms_since
from .engines import EngineHost, EngineSettings


def decode_image(msg: EncodedFrame) -> np.ndarray:
    """The frame's BGR image; ValueError naming the problem for a corrupt one."""
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


class Detector(Actor):
    kind = "detector"

    def __init__(self, name: str, bus: Bus, *, encoded_endpoint: str, detections_endpoint: str,
                 facejobs_endpoint: Optional[str], hwm: int, jobs_hwm: int, engine: EngineSettings,
                 model: ModelSpec, fer_model: Optional[ModelSpec], score_threshold: float = 0.5,
                 max_faces: int = 16, freshest: bool = True, invoke_timeout_ms: float = 2000.0, **kw) -> None:
        super().__init__(name, bus, **kw)
        self.encoded_endpoint = encoded_endpoint
        self.detections_endpoint = detections_endpoint
        self.facejobs_endpoint = facejobs_endpoint
        self.hwm = hwm
        self.jobs_hwm = jobs_hwm
        self.model = model
        self.fer_model = fer_model
        self.freshest = freshest
        self.timeout_s = invoke_timeout_ms / 1000.0
        self.host = EngineHost(engine, model, name, lambda e: face_detector(
            model, e, score_threshold=score_threshold, max_faces=max_faces))
        self.jobs = None
        self._held: Any = None

    async def setup(self) -> None:
        await self.host.load()
        self.cropper = expression_model(self.fer_model, None) if self.fer_model else None
        self.sub = self.channel(self.bus.sub(self.encoded_endpoint, hwm=self.hwm, name=self.name,
                                             topics=("encoded", "control")))
        self.pub = self.channel(self.bus.pub(self.detections_endpoint, hwm=max(self.hwm, 64), name=self.name))
        if self.cropper is not None and self.facejobs_endpoint:
            self.jobs = self.channel(self.bus.push(self.facejobs_endpoint, hwm=self.jobs_hwm, bind=True,
                                                   name=self.name + ".jobs"))

    def _work(self, msg: EncodedFrame) -> Tuple[List[FaceBox], List[Any]]:
        image = decode_image(msg)
        faces = self.host.model.detect(image)
        crops = [self.cropper.prepare(image, f) for f in faces] if self.cropper is not None else []
        return faces, crops

    async def _next(self) -> Any:
        """The next message; with ``freshest``, the newest of the frames already queued.

        A control message found while skipping is held back and returned next,
        so that an end of stream never overtakes the frame before it.
        """
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

    async def _control(self, msg: Control) -> None:
        if msg.command == "eos":
            self.end_of_stream(self.sub, "encoded", msg)
            await self.pub.send(Control("eos", self.name, msg.last_frame_id, {"sent": self.pub.sent("detections")}))

    async def run(self) -> None:
        while True:
            msg = await self._next()
            self.account_lost(self.sub, "encoded")
            if isinstance(msg, Control):
                await self._control(msg)
                continue
            if not isinstance(msg, EncodedFrame):
                self.stats.count("ignored")
                continue
            self.stats.count("in")
            t0 = time.monotonic()
            try:
                faces, crops = await self.host.call(self._work, msg, timeout=self.timeout_s)
            except asyncio.TimeoutError:
                # watchdog: a stuck accelerator is abandoned and the engine reloaded
                self.log.error("frame %d dropped: detection took over %.0f ms; restarting the engine",
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
            boxes = [Box(f.x1, f.y1, f.x2, f.y2, f.score,
                         [list(p) for p in f.landmarks] if f.landmarks else None) for f in faces]
            n_jobs = len(crops) if self.jobs is not None else 0
            await self.pub.send(Detections(msg.frame_id, msg.t_capture, time.monotonic(), msg.width, msg.height,
                                           boxes, n_jobs, msg.truth))
            self.stats.count("out")
            self.stats.count("faces", len(faces))
            if self.jobs is not None:
                for i, crop in enumerate(crops):
                    await self.jobs.send(FaceJob(msg.frame_id, i, len(crops), msg.t_capture, np.ascontiguousarray(crop)))
                self.stats.count("jobs", n_jobs)

    async def cleanup(self) -> None:
        self.host.close()
