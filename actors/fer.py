"""FER worker: one of a pool pulling face jobs (PUSH/PULL) and pushing expressions.

Each worker owns one engine in its own thread. An invoke that raises gives an
``Expression`` with ``error`` set (the aggregator then completes the frame as
partial). An invoke that hangs past ``invoke_timeout_ms`` is abandoned: the
worker closes that engine, loads a fresh one in a new thread (the watchdog
restart) and reports the face as failed.

Python 3.9 compatible.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from bus.messages import Expression, FaceJob
from bus.sockets import Bus
from models.engine import EngineError
from models.registry import expression_model
from models.spec import ModelSpec

from .base import Actor, in_thread, ms_since
from .engines import EngineSettings, load_engine


class FerWorker(Actor):
    kind = "fer"

    def __init__(self, name: str, bus: Bus, *, facejobs_endpoint: str, expressions_endpoint: str, hwm: int,
                 engine: EngineSettings, model: ModelSpec, invoke_timeout_ms: float = 2000.0, **kw) -> None:
        super().__init__(name, bus, **kw)
        self.facejobs_endpoint = facejobs_endpoint
        self.expressions_endpoint = expressions_endpoint
        self.hwm = hwm
        self.engine_settings = engine
        self.model = model
        self.timeout_s = invoke_timeout_ms / 1000.0
        self.executor: Optional[ThreadPoolExecutor] = None
        self.engine = None
        self.restarts = 0

    async def _load(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.engine = await in_thread(self.executor, load_engine, self.engine_settings, self.model, self.name)
        self.classifier = expression_model(self.model, self.engine)

    async def setup(self) -> None:
        await self._load()
        self.jobs = self.channel(self.bus.pull(self.facejobs_endpoint, hwm=self.hwm, bind=False, name=self.name))
        self.out = self.channel(self.bus.push(self.expressions_endpoint, hwm=max(64, self.hwm), bind=False,
                                              name=self.name + ".out"))

    async def _restart(self) -> None:
        """Watchdog: abandon a hung engine and its thread, load a fresh one."""
        old_engine, old_executor = self.engine, self.executor
        self.engine = None
        if old_engine is not None:
            old_engine.close()
        if old_executor is not None:
            old_executor.shutdown(wait=False)
        self.restarts += 1
        self.stats.count("restarts")
        await self._load()

    async def run(self) -> None:
        while True:
            job = await self.jobs.recv()
            if not isinstance(job, FaceJob) or job.image is None:
                self.stats.count("ignored")
                continue
            self.stats.count("in")
            t0 = time.monotonic()
            label, confidence, scores, error = "", 0.0, None, ""
            try:
                fut = in_thread(self.executor, self.classifier.classify, job.image)
                result = await asyncio.wait_for(fut, self.timeout_s)
                label, confidence, scores = result.label, result.confidence, result.scores
            except asyncio.TimeoutError:
                error = "invoke timed out after %.0f ms" % (self.timeout_s * 1000)
                self.log.error("frame %d face %d: %s; restarting the engine", job.frame_id, job.face_index, error)
                self.stats.count("timeouts")
                await self._restart()
            except (EngineError, RuntimeError, ValueError) as exc:
                error = "%s: %s" % (type(exc).__name__, exc)
                self.log.warning("frame %d face %d: %s", job.frame_id, job.face_index, error)
                self.stats.count("errors")
            busy = ms_since(t0)
            self.stats.busy(busy)
            await self.out.send(Expression(job.frame_id, job.face_index, label, confidence, self.name, busy,
                                           scores, error))
            self.stats.count("out")

    async def cleanup(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False)
