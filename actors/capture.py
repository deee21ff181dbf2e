"""Capture: reads a source, stamps frame ids and capture times, publishes frames.

A live source (a camera, or a synthetic one with a frame rate) never waits:
downstream, the freshest frame wins. A recorded source (a video file, images,
an unpaced synthetic source) is read as fast as the pipeline finishes frames,
with at most ``max_in_flight`` frames between capture and result (credit
flow control on the results stream), so that every frame is processed.

The source starts only when ``go()`` is called (the runner calls it once every
actor is ready and every subscriber is attached). After the last frame, the
actor publishes an end-of-stream message and repeats it every
``eos_interval`` seconds until stopped, because a PUB socket may drop a
message for a subscriber whose queue is full.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Callable, Dict, Optional

from msgspec import Meta

from edgepipe.actors.runtime.base import Actor, in_thread, ms_since
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.settings import Hwm, Section
from edgepipe.actors.sources.source_factory import make_source
from edgepipe.actors.sources.sources import Source, SourceError
from edgepipe.bus.codec import topic
from edgepipe.bus.messages import Eos, Frame
from edgepipe.bus.sockets import Bus


class CaptureConfig(Section):
    """Reading the source (pipeline.source) and publishing its frames."""

    hwm: Annotated[Hwm, Meta(description="frames queued for each subscriber (encoder, display)")] = 16
    loop: Annotated[bool, Meta(description=(
        "image folders and the demo clip start again at their end; a video file stops there"))] = True
    max_in_flight: Annotated[int, Meta(ge=1, le=1000, description=(
        "recorded sources (video and image files, demo:unpaced, unpaced synthetic): frames between capture "
        "and result, so that every frame is processed; a live source never waits"))] = 4
    read_timeout_s: Annotated[float, Meta(ge=0.05, le=600, description=(
        "a camera or stream that sends no frame for this long is reopened"))] = 5.0
    reconnect_max_s: Annotated[float, Meta(ge=0.05, le=3600, description=(
        "reopening backoff: 0.5 s, doubling up to this"))] = 10.0



class Capture(Actor):
    role = "capture"

    eos_interval = 0.25  # seconds between repeats of the end of stream, until the pipeline has drained
    credit_timeout_s = 2.0  # a recorded source waits this long for a frame's result, then goes on

    def __init__(self, name: str, bus: Bus, section: CaptureConfig, endpoints: Endpoints,
                 context: Context) -> None:
        super().__init__(name, bus, endpoints, context)
        self.source_spec = context.source
        self.camera = context.camera  # its camera's name, on every frame
        self.fps_limit = context.fps_limit
        self.frames_endpoint = endpoints["frames"]
        self.hwm = section.hwm
        self.max_frames = context.frames
        self.duration_s = context.duration_s
        self.loop_source = section.loop
        self.source: Optional[Source] = None
        self.pub = None
        self.executor: Optional[ThreadPoolExecutor] = None
        self._go: Optional[asyncio.Event] = None
        self.done: Optional[asyncio.Event] = None  # set when the last frame is out
        self.last_frame_id = -1
        self._finish = False
        self.results_endpoint = endpoints.get("results")
        self.max_in_flight = section.max_in_flight
        self.results = None
        # the recorder's hook for what a test source knows of each frame (both run in the main process)
        self.truth_sink: Optional[Callable[..., None]] = None  # (frame_id, truth, camera=...)
        self.done_through = -1  # highest frame id seen in the aggregator's Done messages
        self.read_timeout_s = section.read_timeout_s
        self.reconnect_max_s = section.reconnect_max_s

    async def setup(self) -> None:
        self._go = asyncio.Event()
        self.done = asyncio.Event()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.source = make_source(self.source_spec, loop=self.loop_source, read_timeout_s=self.read_timeout_s,
                                  reconnect_max_s=self.reconnect_max_s)
        await in_thread(self.executor, self.source.open)
        self.pub = self.channel(self.bus.pub(self.frames_endpoint, hwm=self.hwm, name=self.name))
        if self.lossless:
            self.results = self.channel(self.bus.sub(self.results_endpoint, hwm=1000, name=self.name + ".credits",
                                                     topics=(topic("done", self.camera),)))

    def gauges(self) -> Dict[str, float]:
        """A camera's or a stream's reconnects (a counter, kept current) and whether it delivers now."""
        src = self.source
        if src is None or not hasattr(src, "reconnects"):
            return {}
        self.stats.counters["source_reconnects"] = src.reconnects
        return {"source_up": 1.0 if getattr(src, "up", True) else 0.0}

    @property
    def lossless(self) -> bool:
        """Whether the source waits for the pipeline (recorded) instead of dropping (live)."""
        return self.results_endpoint is not None and self.source is not None and not self.source.live

    async def _credit(self, frame_id: int) -> None:
        """Wait until fewer than ``max_in_flight`` frames are between capture and result."""
        assert self.results is not None
        while frame_id - self.done_through > self.max_in_flight:
            if not await self.results.poll(int(self.credit_timeout_s * 1000)):
                # frames dropped on the way (a corrupt one, say) never come back: go on
                self.stats.count("credit_timeouts")
                self.done_through = frame_id - self.max_in_flight
                return
            while True:
                r = self.results.recv_nowait()
                if r is None:
                    break
                self.done_through = max(self.done_through, r.frame_id)  # its camera's: its only topic

    def finish(self) -> None:
        """End the stream now (Ctrl-C): no new frames; the end of stream follows."""
        self._finish = True

    def go(self) -> None:
        assert self._go is not None, "go() before start()"
        self._go.set()

    async def run(self) -> None:
        assert self._go is not None and self.done is not None and self.source is not None
        await self._go.wait()
        src = self.source
        period = 1.0 / src.fps if src.fps > 0 else 0.0
        if self.fps_limit > 0:  # the camera's own limit ([cameras.NAME] fps_limit)
            period = max(period, 1.0 / self.fps_limit)
        t0 = time.monotonic()
        next_t = t0
        frame_id = 0
        try:
            while (self.max_frames is None or frame_id < self.max_frames) and not self._finish:
                if self.duration_s is not None and time.monotonic() - t0 >= self.duration_s:
                    break
                if period:
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)  # pacing a synthetic/file source to its frame rate
                    next_t = max(next_t + period, time.monotonic() - period)
                if self.results is not None:
                    await self._credit(frame_id)
                t_read = time.monotonic()
                # a read that only hands over a kept frame costs less than a trip to a thread
                item = src.read() if src.cheap else await in_thread(self.executor, src.read)
                if self._finish:
                    break
                if item is None:
                    self.log.info("source ended after %d frames", frame_id)
                    break
                image, truth = item
                t_capture = time.monotonic()
                if truth is not None and self.truth_sink is not None:
                    # the answer key goes to the recorder, not on the bus
                    self.truth_sink(frame_id, truth, camera=self.camera)
                await self.pub.send(Frame(frame_id, t_capture, self.source_spec, image, camera=self.camera))
                self.last_frame_id = frame_id
                frame_id += 1
                self.stats.count("in")
                self.stats.count("out")
                self.stats.busy(ms_since(t_read))
        except SourceError as exc:
            self.log.error("%s", exc)
        finally:
            self.stats.count("source_errors", src.errors)
            if hasattr(src, "reconnects"):
                self.stats.counters["source_reconnects"] = src.reconnects
            self.done.set()
        eos = Eos(self.name, self.last_frame_id, self.pub.sent("frame"), camera=self.camera)
        while True:
            await self.pub.send(eos)
            await asyncio.sleep(self.eos_interval)  # repeat: a PUB may drop one for a full subscriber

    async def cleanup(self) -> None:
        if self.source is not None:
            self.source.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False)
