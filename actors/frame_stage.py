"""The shared shape of the detector and the classifier: encoded frames in,
one engine call per frame, detections out.

The freshest frame wins when ``freshest`` is set (live sources): frames that
queued up while the engine was busy are dropped and counted
(``dropped.stale``). An end of stream met while skipping is held back so
that an end of stream never overtakes the frame before it.

With several cameras the stage subscribes to each camera's ``encoded``
endpoint (one socket each: its own sequence numbers and end of stream) and
takes turns: round robin over the cameras that have a frame, each turn one
frame of one camera (its freshest when that camera is live, the next one when
it is recorded, losing none). A flooding camera never starves a quiet one and
a stalled one holds nobody; drops are counted per camera too
(``camera.NAME.dropped.REASON``). A corrupt frame or
an engine error of any type drops that frame (counted; the first of a burst
logged), and a few in a row reload the engine; an engine call that hangs past
``invoke_timeout_ms`` drops it and reloads the engine (watchdog).

Up to ``depth`` frames are worked on at once, in as many engine threads, and
published in the order they came: the pre- and post-processing of one frame
overlap the accelerator's invoke of another, so the device always has the
next frame queued. A device runs one invoke at a time; on the CPU each of
the ``depth`` threads has its own interpreter, so frames are detected on as
many cores at once (``EngineHost.lend``).
"""
from __future__ import annotations

import abc
import asyncio
import time
from typing import Any, Dict, List, Optional, Protocol, Tuple

import cv2
import numpy as np

from edgepipe.actors.runtime.base import Actor, ms_since
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.engines import EngineHost, ErrorBursts
from edgepipe.actors.runtime.loss import LossLedger
from edgepipe.actors.runtime.tasks import task_group
from edgepipe.actors.sources.sources import is_live
from edgepipe.bus.messages import EncodedFrame, Eos
from edgepipe.bus.sockets import Bus, Channel, camera_link, wait_any
from edgepipe.models.engines.devices import DeviceGone


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


def _forget(fut: "asyncio.Future[Any]") -> None:
    """Retrieve the outcome of a call whose frame was abandoned (no "exception never retrieved")."""
    if not fut.cancelled():
        fut.exception()


class StageSettings(Protocol):
    """The keys a frame stage's section has (``DetectorConfig``, ``ClassifierConfig``)."""

    hwm: int  # encoded frames queued for the stage
    freshest: bool  # with a live source: drop stale frames (counted) and work on the newest
    depth: int  # frames worked on at once
    invoke_timeout_ms: float  # watchdog: a stuck invoke is abandoned and the engine reloaded


class FrameStage(Actor, abc.ABC):
    def __init__(self, name: str, bus: Bus, section: StageSettings, endpoints: Endpoints, context: Context,
                 host: EngineHost) -> None:
        super().__init__(name, bus, endpoints, context)
        self.depth = max(1, section.depth)
        host.threads = self.depth
        host.copies_on_cpu = True  # on the CPU, frames in flight are detected on as many cores
        self.detections_endpoint = endpoints["detections"]
        self.hwm = section.hwm
        self.host = host
        host.count = self.stats.count  # failovers, promotions
        self.freshest = section.freshest and context.live  # a recorded source loses no frame
        self.timeout_s = section.invoke_timeout_ms / 1000.0
        self._held: Any = None
        self.errors = ErrorBursts(self.log)
        self.cameras: List[str] = list(context.camera_sources())
        # per camera: whether its freshest frame wins (a live camera); a recorded one loses no frame
        self.fresh_of = {cam: self.freshest if not context.several else section.freshest and is_live(src)
                         for cam, src in context.camera_sources().items()}
        self.subs: Dict[str, Channel] = {}  # camera -> its encoded frames
        self.ledgers: Dict[str, LossLedger] = {}  # camera -> its link's transport losses and end of stream
        self.held: Dict[str, Any] = {}  # camera -> an end of stream met while skipping its stale frames
        self._turn = 0  # the camera whose turn is next

    @abc.abstractmethod
    def work(self, msg: EncodedFrame) -> Any:
        """Decode and run the model on one frame (blocking, in the engine's thread)."""

    @abc.abstractmethod
    async def publish(self, msg: EncodedFrame, result: Any) -> None:
        """Send what ``work`` found."""

    async def setup(self) -> None:
        await self.host.load()
        for cam in self.cameras:
            self.subs[cam] = self.channel(self.bus.sub(
                camera_link(self.endpoints, "encoded", cam, self.cameras),
                hwm=self.hwm,
                name=self.name if len(self.cameras) == 1 else "%s.%s" % (self.name, cam), topics=("encoded", "eos")))
            self.ledgers[cam] = self.loss if len(self.cameras) == 1 else LossLedger(self.stats, [], self.log)
        self.sub = self.subs[self.cameras[0]]
        self.pub = self.channel(self.bus.pub(self.detections_endpoint, hwm=max(self.hwm, 64), name=self.name))

    async def _next_of_any(self) -> Tuple[str, Any]:
        """(camera, message): the next camera's turn that has one, round robin; waits when none has."""
        n = len(self.cameras)
        while True:
            for _ in range(n):
                cam = self.cameras[self._turn]
                self._turn = (self._turn + 1) % n
                msg = self._take(cam)
                if msg is not None:
                    return cam, msg
            await wait_any(list(self.subs.values()))

    def _take(self, cam: str) -> Any:
        """A camera's next message, or None: its freshest frame when it is live (the older ones dropped)."""
        if cam in self.held:
            return self.held.pop(cam)
        ch = self.subs[cam]
        msg = ch.recv_nowait()
        if msg is not None and self.fresh_of[cam] and isinstance(msg, EncodedFrame):
            while True:
                newer = ch.recv_nowait()
                if newer is None:
                    break
                if not isinstance(newer, EncodedFrame):
                    self.held[cam] = newer
                    break
                self.stats.count("in")
                self.drop_frame("stale", cam)
                msg = newer
        return msg

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
        cam = msg.camera if msg.camera in self.subs else self.cameras[0]
        with self.losses_of(cam):
            self.ledgers[cam].end_of_stream(self.subs[cam], "encoded", msg)
        await self.pub.send(Eos(self.name, msg.last_frame_id, self.pub.sent("detections"), camera=msg.camera))

    async def run(self) -> None:
        slots = asyncio.Semaphore(self.depth)
        queue: "asyncio.Queue[Tuple[Any, float, Optional[Tuple[int, asyncio.Future[Any]]]]]" = asyncio.Queue()
        try:
            async with task_group() as tg:  # the reader's error ends the publishing, and the other way round
                tg.start_soon(self._read, slots, queue, name=self.name + ".reader")
                await self._publish_in_order(slots, queue)
        finally:
            while not queue.empty():  # stopped with work in flight: its outcome no longer matters
                started = queue.get_nowait()[2]
                if started is not None:
                    started[1].add_done_callback(_forget)

    async def _read(self, slots: asyncio.Semaphore, queue: "asyncio.Queue[Any]") -> None:
        """Take frames and start their work, at most ``depth`` at once."""
        while True:
            await slots.acquire()
            if len(self.cameras) == 1:
                msg = await self._next()
                self.loss.account(self.sub, "encoded")
            else:
                cam, msg = await self._next_of_any()
                with self.losses_of(cam):
                    self.ledgers[cam].account(self.subs[cam], "encoded")
            if not isinstance(msg, EncodedFrame):
                slots.release()
                if isinstance(msg, Eos):
                    queue.put_nowait((msg, 0.0, None))  # after the frames before it
                else:
                    self.stats.count("ignored")
                continue
            self.stats.count("in")
            t0 = time.monotonic()
            queue.put_nowait((msg, t0, await self.host.start(self.work, msg)))

    async def _publish_in_order(self, slots: asyncio.Semaphore, queue: "asyncio.Queue[Any]") -> None:
        while True:
            msg, t0, started = await queue.get()
            if started is None:
                await self._eos(msg)
                continue
            try:
                result = await self._outcome(msg, started)
                if result is not None:
                    self.stats.busy(ms_since(t0))
                    await self.publish(msg, result[0])
                    self.stats.count("out")
            finally:
                slots.release()

    async def _outcome(self, msg: EncodedFrame, started: "Tuple[int, asyncio.Future[Any]]") -> Optional[Tuple[Any]]:
        """(result,) of a frame's work, or None when the frame is dropped (counted, logged)."""
        try:
            result = (await self.host.result(started, self.work, msg, timeout=self.timeout_s),)
            self.errors.ok()
            return result
        except asyncio.TimeoutError:
            self.log.error("frame %d dropped: the engine took over %.0f ms; it was restarted",
                           msg.frame_id, self.timeout_s * 1000)
            self.drop_frame("engine_timeout", msg.camera)
            self.stats.count("restarts")
        except ValueError as exc:
            self.log.error("frame %d dropped: %s", msg.frame_id, exc)
            self.drop_frame("bad_frame", msg.camera)
        except DeviceGone:  # lost, and no fallback: dropped until it is back (logged once, by the host)
            self.drop_frame("device_gone", msg.camera)
        except Exception as exc:  # any engine failure (EngineError, LiteRT's RuntimeError, ...) costs this frame
            self.drop_frame("engine_error", msg.camera)
            if self.errors.failed("frame %d" % msg.frame_id, exc):
                await self.host.restart(started[0])  # a reload that fails moves the role to the CPU
                self.stats.count("restarts")
        return None

    def gauges(self) -> Dict[str, float]:
        return self.host.device_gauges()

    async def cleanup(self) -> None:
        self.host.close()
