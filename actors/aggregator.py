"""Aggregator: joins detections and expressions on (camera, frame_id, face_index).

Every camera is its own stream: frame ids, frame order, deadlines' order,
face tracks and their smoothing are per camera, and a join never crosses
cameras; the run is drained once every camera's end of stream came and no
frame is pending.

A frame is complete when every face has its expression; when its deadline
passes first, it leaves as partial (counted). An expression is only ever
attached to the frame and face it names; one that arrives for a frame already
gone, for a face the frame does not have, or twice, is counted and dropped.
With ``ordered`` results leave in frame order (a complete frame waits for an
earlier pending one, at most until that one's deadline); otherwise they leave
as soon as they are complete and are marked ``in_order = False`` when they
overtake.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Annotated, Callable, Dict, List, NamedTuple, Optional, Tuple

from msgspec import Meta

from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.settings import Section, TimeoutMs
from edgepipe.actors.tracks import Tracker, TrackIds
from edgepipe.bus.messages import Detections, Done, Eos, Expression, FaceLabel, FaceResult, Result
from edgepipe.bus.sockets import Bus, wait_any


class AggregatorConfig(Section):
    """Joins each frame's detections and expressions into one result."""

    deadline_ms: Annotated[TimeoutMs, Meta(description=(
        "a frame not complete this long after its detections leaves as partial (counted)"))] = 500.0
    ordered: Annotated[bool, Meta(description=(
        "results leave in frame order (a complete frame waits for an earlier pending one, at most until that "
        "one's deadline)"))] = True
    smoothing: Annotated[int, Meta(ge=1, le=100, description=(
        "expression per face track: majority vote over the last N frames"))] = 5



BATCH = 64
"""Messages taken from one input before the other input gets its turn."""
MAX_EARLY = 1024
"""Expressions held for frames whose detections have not come (yet): beyond this the oldest frame's go."""


Key = Tuple[str, int]  # (camera, frame_id)


class FaceOutcome(NamedTuple):
    """One face's FER outcome: its label, or the error of the job it was in."""

    label: Optional[FaceLabel]
    error: str


class Pending:
    __slots__ = ("det", "expressions", "deadline", "errors")

    def __init__(self, det: Detections, deadline: float) -> None:
        self.det = det
        self.expressions: Dict[int, FaceOutcome] = {}
        self.deadline = deadline
        self.errors = 0

    @property
    def complete(self) -> bool:
        return len(self.expressions) >= self.det.expect_expressions


class Aggregator(Actor):
    role = "aggregator"

    def __init__(self, name: str, bus: Bus, section: AggregatorConfig, endpoints: Endpoints, context: Context,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name, bus, endpoints, context)
        self.clock = clock  # the deadlines' clock; tests pass one they move by hand
        self.detections_endpoint = endpoints["detections"]
        self.expressions_endpoint = endpoints["expressions"]
        self.results_endpoint = endpoints["results"]
        self.hwm = context.fer_hwm
        self.deadline_s = section.deadline_ms / 1000.0
        self.ordered = section.ordered
        self.window = section.smoothing
        self.track_ids = TrackIds()  # track ids are unique across the cameras
        self.trackers: Dict[str, Tracker] = {}  # camera -> its face tracks
        self.pending: Dict[str, "OrderedDict[int, Pending]"] = {}  # camera -> its frames waiting, in arrival order
        self.early: Dict[Key, Dict[int, Expression]] = {}  # expressions that beat their detections
        self.early_t: Dict[Key, float] = {}
        self.early_n = 0  # expressions in ``early``, at most MAX_EARLY
        self.last_emitted: Dict[str, int] = {}  # camera -> its highest frame id sent
        self.emitted: "OrderedDict[Key, None]" = OrderedDict()  # recent frames, to spot late expressions
        self.drained: Optional[asyncio.Event] = None
        self.cameras = list(context.camera_sources())
        self.eos_last: Dict[str, int] = {}  # camera -> the last frame of its ended stream

    async def setup(self) -> None:
        self.drained = asyncio.Event()
        self.det = self.channel(self.bus.sub(self.detections_endpoint, hwm=max(self.hwm, 64), name=self.name,
                                             topics=("detections", "eos")))
        self.expr = self.channel(self.bus.pull(self.expressions_endpoint, hwm=max(self.hwm, 256), bind=True,
                                               name=self.name + ".expressions"))
        self.pub = self.channel(self.bus.pub(self.results_endpoint, hwm=max(self.hwm, 256), name=self.name))

    async def run(self) -> None:
        while True:
            timeout = self._next_timeout_ms()
            events = await wait_any((self.det, self.expr), timeout)
            # Fair between the inputs: at most BATCH messages of each per turn, so that a flood on one
            # (expressions come from a bound socket any local peer can reach) never starves the other;
            # what is left waits in the socket's queue, bounded by its high-water mark.
            if self.expr in events:
                for _ in range(BATCH):
                    msg = self.expr.recv_nowait()
                    if msg is None:
                        break
                    self._on_expression(msg)
            if self.det in events:
                for _ in range(BATCH):
                    msg = self.det.recv_nowait()
                    if msg is None:
                        break
                    await self._on_detections(msg)
            self.loss.account(self.det, "detections")
            await self._release(self.clock())
            self.stats.gauge("pending", self.n_pending)
            self.stats.gauge("early", self.early_n)
            await self._check_drained()

    @property
    def n_pending(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def _next_timeout_ms(self) -> Optional[int]:
        times = [p.deadline for q in self.pending.values() for p in q.values()]
        times += [t + self.deadline_s for t in self.early_t.values()]
        if not times:
            return None
        return max(0, int((min(times) - self.clock()) * 1000) + 1)

    async def _on_detections(self, msg) -> None:
        if isinstance(msg, Eos):
            self.loss.end_of_stream(self.det, "detections", msg)
            self.eos_last.setdefault(msg.camera, msg.last_frame_id)
            if self.drained is not None and self.drained.is_set():
                await self._send_eos()
            return
        if not isinstance(msg, Detections):
            self.stats.count("ignored")
            return
        self.stats.count("in")
        key = (msg.camera, msg.frame_id)
        queue = self.pending.setdefault(msg.camera, OrderedDict())
        if msg.frame_id in queue or key in self.emitted:
            self.stats.count("duplicate_detections")
            return
        p = Pending(msg, self.clock() + self.deadline_s)
        early = self.early.pop(key, {})
        self.early_n -= len(early)
        for i, e in early.items():
            self._attach(p, e)
        self.early_t.pop(key, None)
        queue[msg.frame_id] = p

    def _attach(self, p: Pending, e: Expression) -> None:
        if not 0 <= e.face_index or e.face_index + e.count > p.det.expect_expressions:
            self.stats.count("bad_expressions")
            return
        faces = range(e.face_index, e.face_index + e.count)
        if any(i in p.expressions for i in faces):
            self.stats.count("duplicate_expressions")
            return
        for j, i in enumerate(faces):
            p.expressions[i] = FaceOutcome(e.faces[j] if not e.error else None, e.error)
        if e.error:
            p.errors += e.count

    def _on_expression(self, e) -> None:
        if not isinstance(e, Expression):
            self.stats.count("ignored")
            return
        self.stats.count("expressions")
        key = (e.camera, e.frame_id)
        p = self.pending.get(e.camera, {}).get(e.frame_id)
        if p is not None:
            self._attach(p, e)
        elif key in self.emitted or e.frame_id <= self.last_emitted.get(e.camera, -1) and self.ordered:
            self.stats.count("late_expressions")
        else:
            early = self.early.setdefault(key, {})
            if e.face_index in early:
                self.stats.count("duplicate_expressions")
                return
            early[e.face_index] = e  # a job's message, by its first face
            self.early_n += 1
            self.early_t.setdefault(key, self.clock())
            while self.early_n > MAX_EARLY:  # a flood of expressions for frames that never come
                self._forget_early(next(iter(self.early_t)), "early_overflow")

    def _forget_early(self, key: Key, counter: str) -> None:
        self.early_t.pop(key, None)
        gone = len(self.early.pop(key, {}))
        self.early_n -= gone
        self.stats.count(counter, gone)

    async def _release(self, now: float) -> None:
        # expressions whose detections never came (lost upstream): forget them after a deadline
        for key in [k for k, t in self.early_t.items() if now - t > self.deadline_s]:
            self._forget_early(key, "orphan_expressions")
        for queue in self.pending.values():  # each camera in its own frame order: none waits for another's
            if self.ordered:
                while queue:
                    fid, p = next(iter(queue.items()))
                    if not (p.complete or now >= p.deadline):
                        break
                    queue.popitem(last=False)
                    await self._emit(p, now)
            else:
                for fid in [f for f, p in queue.items() if p.complete or now >= p.deadline]:
                    await self._emit(queue.pop(fid), now)

    async def _emit(self, p: Pending, now: float) -> None:
        det = p.det
        faces: List[FaceResult] = []
        for i, b in enumerate(det.faces):
            e = p.expressions.get(i)
            got = e.label if e is not None else None
            faces.append(FaceResult(b, got.label if got else None, got.confidence if got else None))
        if det.expect_expressions:
            tracker = self.trackers.get(det.camera)
            if tracker is None:
                tracker = self.trackers[det.camera] = Tracker(window=self.window, ids=self.track_ids)
            for f, (tid, vote) in zip(faces, tracker.update(det.frame_id, [(f.box.as_list(), f.expression)
                                                                            for f in faces])):
                f.track, f.smoothed = tid, vote
        partial = not p.complete or p.errors > 0
        last = self.last_emitted.get(det.camera, -1)
        in_order = det.frame_id > last
        self.last_emitted[det.camera] = max(last, det.frame_id)
        self.emitted[(det.camera, det.frame_id)] = None
        while len(self.emitted) > 4096:
            self.emitted.popitem(last=False)
        t_result = time.monotonic()
        await self.pub.send(Result(det.frame_id, det.t_capture, t_result, det.width, det.height, faces,
                                   partial, in_order, det.labels, camera=det.camera))
        # capture's credit: a tiny message it decodes instead of the Result
        await self.pub.send(Done(det.frame_id, camera=det.camera))
        self.stats.count("out")
        self.stats.count("partial" if partial else "completed")
        if self.context.several:
            self.stats.count("camera.%s.%s" % (det.camera, "partial" if partial else "completed"))
        if not in_order:
            self.stats.count("out_of_order")
        self.stats.latency((t_result - det.t_capture) * 1000.0)

    async def _check_drained(self) -> None:
        if (any(cam not in self.eos_last for cam in self.cameras) or self.n_pending or self.drained is None
                or self.drained.is_set()):
            return
        self.drained.set()
        self.log.debug("drained: every frame of every camera is out (%s)", self.eos_last)
        await self._send_eos()

    async def _send_eos(self) -> None:
        """The end of the results: after every camera's (one camera: its own; several: ``camera`` "")."""
        camera = self.cameras[0] if len(self.cameras) == 1 else ""
        await self.pub.send(Eos(self.name, max(self.eos_last.values(), default=-1), self.pub.sent("result"),
                                camera=camera))
