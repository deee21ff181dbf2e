"""FER worker: one of a pool pulling face jobs (PUSH/PULL) and pushing expressions.

A job is the faces of one frame: one batched invoke on the CPU where the
model allows it (one invoke per face on an Edge TPU), and one ``Expression``
message back with every face's label.

Each worker owns one engine in its own thread. An invoke that raises gives an
``Expression`` with ``error`` set (the aggregator then completes the frame as
partial). An invoke that hangs past ``invoke_timeout_ms`` is abandoned: the
worker closes that engine, loads a fresh one in a new thread (the watchdog
restart) and reports the face as failed. A worker has up to ``depth`` jobs in
flight, so that one crop is handed over while the accelerator runs another.
"""
from __future__ import annotations

import asyncio
import math
import time
from typing import Annotated, Dict, List

from msgspec import Meta

from edgepipe.actors.runtime.base import Actor, ms_since
from edgepipe.actors.runtime.context import Context, Endpoints, RoleModels
from edgepipe.actors.runtime.engines import EngineHost, EngineSettings, ErrorBursts
from edgepipe.actors.runtime.settings import Hwm, Section, TimeoutMs
from edgepipe.actors.runtime.tasks import task_group
from edgepipe.bus.messages import Expression, FaceJob, FaceLabel
from edgepipe.bus.sockets import Bus
from edgepipe.models.registry import expression_model
from edgepipe.models.spec import ModelSpec


class FerConfig(Section):
    """The expression (FER) workers: a pool fed face jobs over PUSH/PULL."""

    workers: Annotated[int, Meta(ge=1, le=64, description="FER pool size (--fer-workers)")] = 2
    depth: Annotated[int, Meta(ge=1, le=8, description=(
        "jobs in flight per worker on an accelerator: one is handed over while the device runs another "
        "(1 on the CPU)"))] = 2
    hwm: Annotated[Hwm, Meta(description="face jobs and expressions queued between detector, workers and aggregator")] = 8
    invoke_timeout_ms: Annotated[TimeoutMs, Meta(description=(
        "a hung invoke is abandoned, its face reported as failed and the engine reloaded"))] = 2000.0
    processes: Annotated[bool, Meta(description=(
        "true: each worker in a child process of its own (group fer-K), so that 2 CPU workers use 2 cores; "
        "FER must run on the CPU (--engine cpu or --place fer=cpu)"))] = False



class FerWorker(Actor):
    role = "fer"

    def __init__(self, name: str, bus: Bus, section: FerConfig, endpoints: Endpoints, context: Context,
                 models: RoleModels) -> None:
        super().__init__(name, bus, endpoints, context)
        model = models.model
        # a CPU interpreter runs one invoke at a time: a second job in flight would only wait
        self.depth = max(1, section.depth) if models.engine.kind != "cpu" else 1
        self.facejobs_endpoint = endpoints["facejobs"]
        self.expressions_endpoint = endpoints["expressions"]
        self.hwm = section.hwm
        # e.model: the role's model, or its fallback's after a fail-over
        self.host = EngineHost(models.engine, model, name, lambda e: expression_model(e.model, e), threads=self.depth,
                               fallback=models.fallback_of())
        self.host.count = self.stats.count  # failovers, promotions
        self.timeout_s = section.invoke_timeout_ms / 1000.0
        self.errors = ErrorBursts(self.log)

    async def setup(self) -> None:
        await self.host.load()
        self.jobs = self.channel(self.bus.pull(self.facejobs_endpoint, hwm=self.hwm, bind=False, name=self.name))
        self.out = self.channel(self.bus.push(self.expressions_endpoint, hwm=max(64, self.hwm), bind=False,
                                              name=self.name + ".out"))

    async def run(self) -> None:
        slots = asyncio.Semaphore(self.depth)  # jobs in flight: one pre/post-processed while one is invoked
        async with task_group() as running:  # a job that fails outside the engine stops the worker
            while True:
                await slots.acquire()
                job = await self.jobs.recv()
                if not isinstance(job, FaceJob) or job.image is None or job.image.ndim != 4:
                    self.stats.count("ignored")
                    slots.release()
                    continue
                self.stats.count("in")
                running.start_soon(self._classify, job, slots)

    async def _classify(self, job: FaceJob, slots: asyncio.Semaphore) -> None:
        t0 = time.monotonic()
        crops = job.image
        labels: List[FaceLabel] = []
        error = ""
        started = None
        try:
            started = await self.host.start(self._labels, crops)
            results = await self.host.result(started, self._labels, crops, timeout=self.timeout_s)
            for r in results:
                if not 0.0 <= r.confidence <= 1.0 or not all(map(math.isfinite, r.scores or ())):
                    # NaN included: the wire refuses it, so the faces are reported as failed instead
                    raise ValueError("the model gave confidence %r, scores %r" % (r.confidence, r.scores))
            labels = [FaceLabel(r.label, r.confidence, r.scores) for r in results]
            self.errors.ok()
        except asyncio.TimeoutError:
            error = "invoke timed out after %.0f ms" % (self.timeout_s * 1000)
            self.log.error("frame %d faces %d-%d: %s; the engine was restarted", job.frame_id, job.face_index,
                           job.face_index + len(crops) - 1, error)
            self.stats.count("timeouts")
            self.stats.count("restarts")
        except Exception as exc:  # any engine failure fails this job's faces only
            error = "%s: %s" % (type(exc).__name__, exc)
            self.stats.count("errors")
            what = "frame %d faces %d-%d" % (job.frame_id, job.face_index, job.face_index + len(crops) - 1)
            if self.errors.failed(what, exc) and started is not None:
                await self.host.restart(started[0])  # a reload that fails moves the role to the CPU
                self.stats.count("restarts")
        finally:
            slots.release()
        busy = ms_since(t0)
        self.stats.busy(busy)
        await self.out.send(Expression(job.frame_id, job.face_index, len(crops), self.name, busy,
                                       [] if error else labels, error, camera=job.camera))
        self.stats.count("out")
        self.stats.count("faces", len(crops))
        if error:
            self.stats.count("faces_failed", len(crops))

    def _labels(self, crops):  # in an engine thread; the model of the engine loaded now (after a restart too)
        return self.host.model.classify_batch(crops)

    def gauges(self) -> Dict[str, float]:
        return self.host.device_gauges()

    async def cleanup(self) -> None:
        self.host.close()
