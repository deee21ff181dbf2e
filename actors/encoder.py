"""Encoder: frames -> encoded frames, raw (zero-copy pass-through) or JPEG.

JPEG costs CPU here and saves bandwidth where the frame leaves the host or
crosses into another interpreter over TCP; raw is cheapest in one process or
over ipc. Which one is a config choice (``encoder.format``).

With ``detector_input`` (the face detector's model, from the manifest) the
encoder also makes the detector's input pixels (resize, letterbox or stretch,
colour order) in its own thread and sends them as a second zero-copy side
frame with their fit (``EncodedFrame.tensor``, ``.fit``): that work overlaps
the detector's inference of the frame before. The detector prepares the
input itself when a frame comes without it.

A frame that fails to encode is dropped (counted); an encode that hangs past
``timeout_ms`` is dropped and the encoding thread replaced. Tests inject
faults (raise, hang, slow) with ``engine.fake.faults.encoder``.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal, Optional, Tuple

import cv2
from msgspec import Meta

from edgepipe.actors.runtime.base import Actor, ms_since
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.engines import within
from edgepipe.actors.runtime.settings import Hwm, Section
from edgepipe.bus.messages import EncodedFrame, Eos, Frame
from edgepipe.bus.sockets import Bus
from edgepipe.models.engines.engine import FaultCounter
from edgepipe.models.engines.fake import InjectedFault
from edgepipe.models.families.family import DetectorInput


class EncoderConfig(Section):
    """How frames cross into inference (--encoder)."""

    format: Annotated[Literal["raw", "jpeg"], Meta(description=(
        "raw: the pixels as they are (zero-copy) | jpeg: compressed, for a link between hosts"))] = "raw"
    jpeg_quality: Annotated[int, Meta(ge=1, le=100, description="JPEG quality of format jpeg")] = 85
    hwm: Annotated[Hwm, Meta(description="frames queued on its input and its output")] = 16



class Encoder(Actor):
    role = "encoder"

    timeout_s = 2.0  # an encode that takes longer is dropped (counted as encode_timeout)

    def __init__(self, name: str, bus: Bus, section: EncoderConfig, endpoints: Endpoints, context: Context,
                 detector_input: Optional[DetectorInput] = None) -> None:
        super().__init__(name, bus, endpoints, context)
        self.detector_input = detector_input  # the detector's input tensor is made here (None: not)
        self.camera = context.camera
        plan = context.faults.get(name, context.faults.get("encoder"))  # encoder-CAMERA's own, else every encoder's
        self.faults = FaultCounter(plan) if plan is not None else None  # what a test asked to go wrong
        self._released = threading.Event()  # frees a hung (injected) encode at the end
        self.frames_endpoint = endpoints["frames"]
        self.encoded_endpoint = endpoints["encoded"]
        self.hwm = section.hwm
        self.format = section.format
        self.params = [int(cv2.IMWRITE_JPEG_QUALITY), int(section.jpeg_quality)]
        self.executor: Optional[ThreadPoolExecutor] = None

    async def setup(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.sub = self.channel(self.bus.sub(self.frames_endpoint, hwm=self.hwm, name=self.name,
                                             topics=("frame", "eos")))
        self.pub = self.channel(self.bus.pub(self.encoded_endpoint, hwm=self.hwm, name=self.name))

    def _encode(self, image: Any) -> Tuple[Any, Any, Any]:
        """In the encoding thread: the payload for one frame, and the detector's input and its fit when this
        encoder prepares it (injected faults first, when a test asked)."""
        f = self.faults
        if f is not None:
            n = f.next_call()
            if f.plan.raises(n):
                raise InjectedFault("injected fault on encode %d" % n)
            if f.plan.hangs(n):
                self._released.wait()
                raise InjectedFault("encode %d was hung" % n)
            if f.plan.extra_s(n):
                self._released.wait(f.plan.extra_s(n))
        payload = self._jpeg(image) if self.format == "jpeg" else image
        if self.detector_input is None:
            return payload, None, None
        tensor, fit = self.detector_input.prepare(image)
        return payload, tuple(float(v) for v in fit), tensor

    def _jpeg(self, image) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, self.params)
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    async def run(self) -> None:
        while True:
            msg = await self.sub.recv()
            with self.losses_of(self.camera):
                self.loss.account(self.sub, "frame")
            if isinstance(msg, Eos):
                with self.losses_of(self.camera):
                    self.loss.end_of_stream(self.sub, "frame", msg)
                await self.pub.send(Eos(self.name, msg.last_frame_id, self.pub.sent("encoded"), camera=msg.camera))
                continue
            if not isinstance(msg, Frame) or msg.image is None or getattr(msg.image, "ndim", 0) != 3:
                self.stats.count("ignored")
                continue
            self.stats.count("in")
            t0 = time.monotonic()
            h, w = msg.image.shape[:2]
            fit = tensor = None
            if self.format == "jpeg" or self.faults is not None or self.detector_input is not None:
                try:
                    encoded = asyncio.get_running_loop().run_in_executor(self.executor, self._encode, msg.image)
                    payload, fit, tensor = await within(encoded, self.timeout_s)
                except asyncio.TimeoutError:
                    self.log.error("frame %d dropped: encoding took over %.0f ms; the encoding thread was replaced",
                                   msg.frame_id, self.timeout_s * 1000)
                    self.drop_frame("encode_timeout", msg.camera)
                    self.stats.count("restarts")
                    if self.executor is not None:
                        self.executor.shutdown(wait=False)  # the hung thread is left behind, freed at the end
                    self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
                    continue
                except Exception as exc:  # this frame only
                    self.log.error("frame %d dropped: %s: %s", msg.frame_id, type(exc).__name__, exc)
                    self.drop_frame("encode_error", msg.camera)
                    continue
            else:
                payload = msg.image
            await self.pub.send(EncodedFrame(msg.frame_id, msg.t_capture, self.format, w, h, payload, fit, tensor,
                                             camera=msg.camera))
            self.stats.count("out")
            self.stats.busy(ms_since(t0))

    async def cleanup(self) -> None:
        self._released.set()
        if self.executor is not None:
            self.executor.shutdown(wait=False)
