"""Actor lifecycle: start, ready, run, stop (safe twice), cleanup.

An actor is one task around ``serve()``: it opens its sockets (``setup``),
says it is ready the way AnyIO's ``task_status.started()`` does, then runs
``run()`` in a task group with its helpers (the metrics tick, the
subscription readers of its bound publishers). The task that runs ``serve``
is the actor's task (``self.task``), wherever it was started:

- in a supervising task group (the runner's, a group process's; AnyIO's,
  opened with ``tasks.task_group()``): ``await tg.start(actor.supervised)``.
  A setup failure raises ActorFailed naming the actor from ``tg.start``; once
  ready, an actor that fails or returns fails the group with ActorDied naming
  it, which cancels the group.
- on its own (tests, benches): ``start()`` returns once the actor is ready and
  raises ActorFailed naming it if setup failed; its failure is seen by
  ``wait()``.

``stop()`` cancels the actor's ``setup``/``run`` and waits for its task to end,
in either case; an actor stopped on purpose (or ended after ``stopping`` was
set: the owner's shutdown has begun) is not a failure of its group. That
cancellation is AnyIO's (the cancel scope around ``setup`` and ``run``), level-
triggered: every await in them is cancelled until they end, so an actor that
swallows one CancelledError (``asyncio.wait_for`` before Python 3.12 does when
its inner future finishes as the cancellation comes) still stops, and a
``finally`` in ``run`` that must await shields itself. The cleanup that follows
``run`` is shielded. Cancellation of the caller propagates. Sockets opened with ``self.channel`` are closed in ``finally``
whatever happens.

The actor composes two parts: ``self.metrics`` (actors.metrics_part: a
``Metric`` snapshot every ``metrics_interval`` seconds and a final one) and
``self.loss`` (actors.loss: transport losses, end of stream, refused messages).
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import anyio
import anyio.abc

from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.loss import LossLedger
from edgepipe.actors.runtime.metrics_part import MetricsReporter
from edgepipe.actors.runtime.stats import Stats
from edgepipe.actors.runtime.tasks import start_task, task_group
from edgepipe.bus.messages import Metric
from edgepipe.bus.sockets import Bus, Channel


class ActorFailed(RuntimeError):
    """An actor's setup or run failed; the message names the actor."""


class ActorDied(RuntimeError):
    """An actor of a supervising task group stopped while it was needed: "actor NAME stopped: why"."""

    def __init__(self, actor: str, why: Any) -> None:
        super().__init__("actor %s stopped: %s" % (actor, why))
        self.actor = actor


class Actor:
    """Base class: subclasses implement ``setup`` (open sockets) and ``run``.

    An actor takes its name, the bus, its config section (a subclass's first argument after these),
    its endpoints by name and the run's context (``actors/runtime/context.py``); one that runs a model
    also takes its ``RoleModels``. Its role (endpoints, counters, start order) is in ``actors/roles.py``.
    """

    role = "actor"
    _ready = False  # setup is done and ``task_status.started()`` was called (set by ``serve``)
    _scope: Optional[anyio.CancelScope] = None  # around ``setup`` and ``run``: ``stop()`` cancels it

    def __init__(self, name: str, bus: Bus, endpoints: Optional[Endpoints] = None,
                 context: Optional[Context] = None) -> None:
        self.name = name
        self.bus = bus
        self.endpoints: Endpoints = endpoints if endpoints is not None else {}  # none: no metrics sent
        self.context = context if context is not None else Context()
        metrics_endpoint = self.endpoints.get("metrics_in")
        metrics_interval = self.context.metrics_interval
        self.stats = Stats(name)
        self.log = logging.LoggerAdapter(logging.getLogger("edgepipe." + self.role), {})
        self.log.process = lambda msg, kw: ("[%s] %s" % (self.name, msg), kw)  # type: ignore[assignment]
        self.metrics_endpoint = metrics_endpoint
        self._channels: List[Channel] = []
        self.loss = LossLedger(self.stats, self._channels, self.log)
        self.metrics = MetricsReporter(self.stats, self.gauges, self.loss.rejected, metrics_interval)
        self._task: Optional[asyncio.Task] = None
        self.finished = False
        self.stopping = False  # stop() was called, or the owner began its shutdown: ending is no failure

    # ------------------------------------------------------------ for subclasses
    async def setup(self) -> None:
        """Open sockets and load what the actor needs; runs before ``ready``."""

    async def run(self) -> None:
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Release what ``setup`` acquired besides sockets (engines, files, windows)."""

    def channel(self, ch: Channel) -> Channel:
        self._channels.append(ch)
        return ch

    def drop_frame(self, reason: str, camera: str, n: int = 1) -> None:
        """``n`` frames of ``camera`` dropped here: counted by reason (``dropped.REASON``) and, when the run names
        its cameras, by camera too (``camera.NAME.dropped.REASON``, the summary's ``cameras``)."""
        self.stats.drop(reason, n)
        if n > 0 and self.context.several:
            self.stats.count("camera.%s.dropped.%s" % (camera, reason), n)

    @contextmanager
    def losses_of(self, camera: str) -> Iterator[None]:
        """The transport drops counted inside the block (a camera's own link) are that camera's."""
        before = self.stats.counters.get("dropped.transport", 0)
        try:
            yield
        finally:
            lost = self.stats.counters.get("dropped.transport", 0) - before
            if lost > 0 and self.context.several:
                self.stats.count("camera.%s.dropped.transport" % camera, lost)

    def gauges(self) -> Dict[str, float]:
        """Extra gauges for the metrics (an actor that runs an engine adds its devices')."""
        return {}

    def snapshot(self, final: bool = False) -> Metric:
        return self.metrics.snapshot(final)

    # ------------------------------------------------------------ lifecycle
    @property
    def task(self) -> Optional[asyncio.Task]:
        return self._task

    async def start(self) -> None:
        """Start the actor and return when it is ready; raise ActorFailed if it could not start."""
        if self._task is not None:
            return
        try:
            self._task, _ = await start_task(self.serve, name=self.name)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raise ActorFailed("%s did not start: %s" % (self.name, exc)) from None

    async def stop(self) -> None:
        """Cancel the actor and wait until it has cleaned up. Safe to call twice."""
        self.stopping = True
        task = self._task
        if task is None or task.done():
            return
        if self._scope is not None:
            self._scope.cancel()
        else:  # not in ``serve`` yet
            task.cancel()
        await asyncio.wait([task])

    async def wait(self) -> None:
        """Wait until ``run`` returns; re-raise its error."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def supervised(self, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """``serve`` as the child of a supervising task group: ActorFailed if setup fails, then ActorDied
        if the actor fails or returns before ``stopping`` (an error after it is logged, not raised)."""
        try:
            await self.serve(task_status)
        except asyncio.CancelledError:
            if self.stopping:
                # the owner's shutdown has begun (or stop() cancelled the task before ``serve`` ran): an
                # AnyIO group takes a child that ends cancelled for a failure, so this child ends quietly
                return
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if not self._ready:
                raise ActorFailed("%s did not start: %s" % (self.name, exc)) from None
            if not self.stopping:
                raise ActorDied(self.name, exc) from exc
            self.log.error("failed while stopping: %s", exc)
            return
        if not self.stopping:
            raise ActorDied(self.name, "returned early")

    async def _setup_and_run(self, task_status: anyio.abc.TaskStatus) -> None:
        if self.metrics_endpoint:
            self.metrics.open(self.bus, self.metrics_endpoint, self.name)
        await self.setup()
        self.log.debug("ready")
        self._ready = True
        task_status.started()
        async with task_group() as helpers:
            if self.metrics.pub is not None:
                helpers.start_soon(self.metrics.tick, name=self.name + ".metrics")
            # a bound publisher takes subscriptions only when they are read (bus.sockets: XPUB_MANUAL)
            for ch in self._channels:
                if ch.takes_subscriptions:
                    helpers.start_soon(ch.serve_subscriptions, name=self.name + ".subscriptions")
            await self.run()
            self.finished = True
            helpers.cancel_scope.cancel()

    async def serve(self, task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """The actor's whole life; ``task_status.started()`` once ``setup`` has opened its sockets."""
        self._task = asyncio.current_task()
        self._ready = False
        self._scope = anyio.CancelScope()
        try:
            with self._scope:
                await self._setup_and_run(task_status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if getattr(exc, "user_facing", False):
                # a problem with the input or the set-up, not a bug: no traceback, and said once, by whoever
                # reports the failure (start() raises it as ActorFailed; the runner or the group names the actor)
                self.log.debug("%s", exc)
            else:
                self.log.exception("failed")
            raise
        finally:
            # shielded: when the supervising group cancels its scope (a sibling died), that cancellation
            # is level-triggered and would cancel every await of the cleanup too
            with anyio.CancelScope(shield=True):
                try:
                    await self.cleanup()
                finally:
                    try:
                        await self.metrics.publish(final=True)
                    finally:
                        for ch in self._channels:
                            ch.close()
                        self.metrics.close()


def now() -> float:
    return time.monotonic()


def ms_since(t: float) -> float:
    return (time.monotonic() - t) * 1000.0


async def in_thread(executor: Any, fn: Any, *args: Any) -> Any:
    """Run blocking ``fn`` in the actor's own executor (one interpreter per thread)."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
