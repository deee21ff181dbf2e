"""Display: draws results (boxes, labels, FPS, latency) on their frames and
shows them in a window, writes them to a video file, or does nothing.

Sinks: ``none``, ``window`` (OpenCV HighGUI; needs opencv-python, not the
headless build, and a screen), ``file:PATH.mp4`` and ``web:[HOST:]PORT`` (an
MJPEG page a browser on another machine can open). The display subscribes
to every camera's frames (one socket per camera, as the detector does) and
to results, keeps the last frames of each camera by id (``frame_buffer``
each) and joins a result with its frame on (camera, frame id). The web page
has a tile per camera, a window sink a window per camera; a video file
records one camera (several cameras are refused with ``file:``).
A window or a web page works on each camera's newest result and skips older ones, so
a slow display never slows inference; a video file is a record and writes
every result, in order, at the source's own frame rate (a video file's,
a synthetic source's; ``display.fps`` for a camera). Every result the sink
does not show counts as dropped, with its reason (``skipped`` for a newer
one, ``no_frame`` when its frame has left the buffer, ``transport`` when it
never arrived).
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from msgspec import Meta

from edgepipe.actors.runtime.base import Actor, in_thread, ms_since
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.settings import Hwm, Section
from edgepipe.actors.sinks.sinks import DisplayError, FileSink, Sink, WindowSink
from edgepipe.actors.sinks.web_sink import WebSink, web_address
from edgepipe.actors.sources.source_factory import source_rate
from edgepipe.bus.messages import Eos, Frame, Result
from edgepipe.bus.sockets import Bus, Channel, camera_link, wait_any


class DisplayConfig(Section):
    """The live view or video file of pipeline.display."""

    hwm: Annotated[Hwm, Meta(description="results queued for a window or web page (which show only the newest)")] = 4
    frame_buffer: Annotated[int, Meta(ge=1, le=10000, description=(
        "the last frames kept by id until their results come; a video file queues this many results too"))] = 64
    fps: Annotated[float, Meta(ge=1, le=240, description=(
        "a video file's frame rate when the source has none of its own (a camera, images)"))] = 30.0



FONT = cv2.FONT_HERSHEY_SIMPLEX
Rect = Tuple[int, int, int, int]  # x1, y1, x2, y2


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class TextLayout:
    """Places text boxes on a frame so that none overlaps another (each tries a few spots, then moves down)."""

    def __init__(self, width: int, height: int, scale: float, thickness: int) -> None:
        self.width, self.height = width, height
        self.scale, self.thickness = scale, thickness
        self.placed: List[Tuple[str, Rect, Tuple[int, int, int]]] = []
        self.left_out = 0  # texts for which the frame had no free room

    def size(self, text: str) -> Tuple[int, int]:
        (w, h), base = cv2.getTextSize(text, FONT, self.scale, self.thickness)
        return w + 4, h + base + 4  # a 2-pixel margin around the glyphs

    def _free(self, r: Rect) -> bool:
        return all(not _overlaps(r, p[1]) for p in self.placed)

    def place(self, text: str, spots: Sequence[Tuple[int, int]], color: Tuple[int, int, int]) -> Optional[Rect]:
        """Put ``text`` with its top-left at the first free spot, else at the free place nearest the first
        spot; None (the text is left out) when the frame has no room left for it."""
        w, h = self.size(text)
        if w > self.width or h > self.height:
            return None

        def rect(x: int, y: int) -> Rect:
            x = max(0, min(x, self.width - w))
            y = max(0, min(y, self.height - h))
            return (x, y, x + w, y + h)

        chosen = next((rect(x, y) for x, y in spots if self._free(rect(x, y))), None)
        if chosen is None:
            x0, y0 = rect(*spots[0])[:2]
            grid = [(x, y) for x in range(0, self.width - w + 1, max(1, w // 4))
                    for y in range(0, self.height - h + 1, max(1, h // 2))]
            grid.sort(key=lambda p: abs(p[0] - x0) + abs(p[1] - y0))
            chosen = next((rect(x, y) for x, y in grid if self._free(rect(x, y))), None)
        if chosen is None:
            self.left_out += 1
            return None
        self.placed.append((text, chosen, color))
        return chosen

    def draw(self, image: np.ndarray) -> None:
        for text, (x1, y1, x2, y2), color in self.placed:
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 0), -1)  # a dark backing keeps it legible
            _, base = cv2.getTextSize(text, FONT, self.scale, self.thickness)
            cv2.putText(image, text, (x1 + 2, y2 - 2 - base), FONT, self.scale, color, self.thickness, cv2.LINE_AA)


def overlay_layout(r: Result, fps: float, width: int, height: int) -> TextLayout:
    """Where every text of a result's overlay goes: the status line, the labels, one per face."""
    k = max(1.0, width / 640.0)  # text and lines grow with the frame
    layout = TextLayout(width, height, 0.55 * k, max(1, int(round(1.5 * k))))
    latency = (r.t_result - r.t_capture) * 1000.0
    status = "%.1f FPS  %.0f ms%s" % (fps, latency, "  partial" if r.partial else "")
    layout.place(status, [(4, height)], (255, 255, 255))
    for i, (label, p) in enumerate((r.labels or [])[:3]):
        layout.place("%s %.0f%%" % (label, 100 * p), [(4, 4 + i * layout.size("Ag")[1])], (0, 255, 255))
    for f in r.faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f.box.as_list())
        label = f.smoothed or f.expression
        text = label if label else "face %.2f" % f.box.score
        if label and f.smoothed and f.expression and f.smoothed != f.expression:
            text += " (%s)" % f.expression  # the vote, then this frame's own label
        h = layout.size(text)[1]
        layout.place(text, [(x1, y1 - h - 2), (x1, y2 + 2), (x1, y1 + 2)],
                     (0, 200, 0) if label else (0, 160, 255))
    return layout


def annotate(image: np.ndarray, r: Result, fps: float) -> np.ndarray:
    out = np.array(image, copy=True)
    k = max(1.0, out.shape[1] / 640.0)
    t = max(1, int(round(2 * k)))
    for f in r.faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f.box.as_list())
        color = (0, 200, 0) if (f.smoothed or f.expression) else (0, 160, 255)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, t)
    overlay_layout(r, fps, out.shape[1], out.shape[0]).draw(out)
    return out


def make_sink(spec: str, fps: float) -> Optional[Sink]:
    if spec == "none":
        return None
    if spec == "window":
        return WindowSink()
    if spec.startswith("file:") and len(spec) > 5:
        return FileSink(spec[5:], fps)
    if spec == "web" or spec.startswith("web:"):
        try:
            return WebSink(*web_address(spec))
        except ValueError as exc:
            raise DisplayError("display %r: %s" % (spec, exc)) from None
    raise DisplayError("unknown display %r; use none, window, file:PATH.mp4 or web[:[HOST:]PORT]" % spec)


class Display(Actor):
    role = "display"

    def __init__(self, name: str, bus: Bus, section: DisplayConfig, endpoints: Endpoints, context: Context,
                 sink: Sink) -> None:
        super().__init__(name, bus, endpoints, context)
        self.sink = sink
        self.results_endpoint = endpoints["results"]
        self.hwm = section.hwm
        self.frame_buffer = section.frame_buffer
        self.cameras: List[str] = list(context.camera_sources())  # in name order
        # per camera: the last frames by id (at most frame_buffer each), the times of the last results shown,
        # a record's results whose frame has not come yet, the newest frame id seen
        self.frames: Dict[str, "OrderedDict[int, np.ndarray]"] = {cam: OrderedDict() for cam in self.cameras}
        self.shown: Dict[str, "deque[float]"] = {cam: deque(maxlen=30) for cam in self.cameras}
        self.waiting: Dict[str, "deque[Result]"] = {cam: deque() for cam in self.cameras}
        self.last_frame_seen: Dict[str, int] = {cam: -1 for cam in self.cameras}
        self.frames_subs: Dict[str, Channel] = {}  # camera -> its capture's frames
        self.executor: Optional[ThreadPoolExecutor] = None
        self.every_frame = getattr(sink, "every_frame", False)
        self._rate_known = not isinstance(sink, FileSink)
        self.results_expected: Optional[int] = None  # results the aggregator sent, once its end of stream came
        self.drained: Optional[asyncio.Event] = None  # every result the aggregator sent is written or counted

    async def setup(self) -> None:
        self.drained = asyncio.Event()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        await in_thread(self.executor, self.sink.open)
        for cam in self.cameras:  # one socket per camera, as the detector has for the encoded frames
            self.frames_subs[cam] = self.channel(self.bus.sub(
                camera_link(self.endpoints, "frames", cam, self.cameras),
                hwm=self.frame_buffer,
                name=self.name if len(self.cameras) == 1 else "%s.%s" % (self.name, cam), topics=("frame", "eos")))
        # a record keeps as many results queued as frames, so that a slow write loses none
        hwm = max(self.hwm, self.frame_buffer) if self.every_frame else self.hwm
        self.results_sub = self.channel(self.bus.sub(self.results_endpoint, hwm=hwm, name=self.name + ".results",
                                                     topics=("result", "eos")))

    def _fps(self, camera: str = "") -> float:
        """Results shown per second, of ``camera`` (default: the first)."""
        shown = self.shown.get(camera or self.cameras[0], ())
        if len(shown) < 2:
            return 0.0
        return (len(shown) - 1) / max(1e-6, shown[-1] - shown[0])

    async def run(self) -> None:
        inputs = list(self.frames_subs.values()) + [self.results_sub]
        while True:
            await wait_any(inputs)
            # frames first, and always: a frame may land between the poll and its result
            await self._take_frames()
            latest: Dict[str, Result] = {}  # camera -> its newest result of this batch
            while True:
                r = self.results_sub.recv_nowait()
                if r is None:
                    break
                if isinstance(r, Eos):
                    if self.loss.end_of_stream(self.results_sub, "result", r):
                        self.results_expected = r.sent
                elif isinstance(r, Result):
                    self.stats.count("in")
                    if r.camera not in self.frames:
                        self.stats.drop("no_frame")  # a camera this display does not know: nothing to draw on
                    elif self.every_frame:
                        self.waiting[r.camera].append(r)
                    else:
                        if r.camera in latest:
                            self.stats.drop("skipped")  # a newer result of its camera is here: show that one
                        latest[r.camera] = r
            for r in latest.values():
                await self._show(r)
            for cam, waiting in self.waiting.items():
                while waiting:  # a record: in order; a result whose frame has not come yet waits for it
                    await self._take_frames()
                    if waiting[0].frame_id > self.last_frame_seen[cam]:
                        break
                    await self._show(waiting.popleft())
            self.loss.account(self.results_sub, "result")
            self._check_drained()

    async def _take_frames(self) -> None:
        for cam, sub in self.frames_subs.items():
            buffer = self.frames[cam]
            while True:
                f = sub.recv_nowait()
                if f is None:
                    break
                if isinstance(f, Eos):
                    self.camera_ended(cam)
                elif isinstance(f, Frame) and f.image is not None:
                    if not self._rate_known:
                        await self._take_source_rate(f.source)
                    buffer[f.frame_id] = f.image
                    self.last_frame_seen[cam] = max(self.last_frame_seen[cam], f.frame_id)
                    self.frame_came(cam, f)
                    while len(buffer) > self.frame_buffer:
                        buffer.popitem(last=False)

    def frame_came(self, camera: str, frame: Frame) -> None:
        """A frame of ``camera`` reached the display (the live view marks the camera live)."""

    def camera_ended(self, camera: str) -> None:
        """``camera``'s capture sent its end of stream (the live view shows it on the camera's tile)."""

    def _check_drained(self) -> None:
        done = self.stats.counters.get("out", 0) + self.stats.dropped
        if self.results_expected is not None and done >= self.results_expected and self.drained is not None:
            self.drained.set()

    async def _take_source_rate(self, spec: str) -> None:
        """A video file is written at the source's frame rate when the source has one."""
        self._rate_known = True
        rate = await in_thread(self.executor, source_rate, spec)
        if rate > 0 and isinstance(self.sink, FileSink):
            self.sink.fps = rate
        self.log.info("writing %s at %.3f fps (%s)", getattr(self.sink, "path", "the video"),
                      getattr(self.sink, "fps", 0.0), "the source's rate" if rate > 0 else "display.fps")

    async def _show(self, r: Result) -> None:
        frames = self.frames[r.camera]
        image = frames.get(r.frame_id)
        if image is None:
            self.log.debug("no frame for result %d of camera %s; have %s", r.frame_id, r.camera, list(frames)[:5])
            self.stats.drop("no_frame")  # its frame left the buffer (or never came): nothing to draw on
            return
        for fid in [k for k in frames if k <= r.frame_id]:
            del frames[fid]
        t0 = time.monotonic()
        self.shown[r.camera].append(t0)
        annotated = annotate(image, r, self._fps(r.camera))
        loop = asyncio.get_running_loop()
        per_camera = getattr(self.sink, "write_camera", None)
        if per_camera is not None:  # a sink with a view per camera (the live view's tiles, a window each)
            written = loop.run_in_executor(self.executor, per_camera, r.camera, annotated)
        else:
            written = loop.run_in_executor(self.executor, self.sink.write, annotated)
        self.stats.count("out")
        # shielded: cancelling us must not cancel a write still queued in the sink's thread,
        # or a frame counted as shown would never reach the file
        await asyncio.shield(written)
        self.stats.busy(ms_since(t0))

    async def cleanup(self) -> None:
        if self.executor is not None:
            try:
                await in_thread(self.executor, self.sink.close)
            finally:
                self.executor.shutdown(wait=False)
