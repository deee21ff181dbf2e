"""Actor lifecycle: start, ready, run, stop (safe twice), metrics, cleanup.

An actor is an asyncio task around ``run()``. ``start()`` returns once the
actor has opened its sockets (``setup``) and is ready; it raises if setup
failed. ``stop()`` cancels the task and waits for it; cancellation of the
caller propagates. Sockets opened with ``self.open_*`` are closed in
``finally`` whatever happens. Every actor publishes a ``Metric`` snapshot on
the metrics endpoint every ``metrics_interval`` seconds and a final one when
it ends.

Python 3.9 compatible.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional

import zmq

from bus.messages import Eos
from bus.sockets import Bus, Channel

from .resources import process_gauges
from .stats import Stats


class ActorFailed(RuntimeError):
    """An actor's setup or run failed; the message names the actor."""


class Actor:
    """Base class: subclasses implement ``setup`` (open sockets) and ``run``."""

    kind = "actor"

    def __init__(self, name: str, bus: Bus, metrics_endpoint: Optional[str] = None,
                 metrics_interval: float = 1.0) -> None:
        self.name = name
        self.bus = bus
        self.stats = Stats(name)
        self.log = logging.LoggerAdapter(logging.getLogger("edgepipe." + self.kind), {})
        self.log.process = lambda msg, kw: ("[%s] %s" % (self.name, msg), kw)  # type: ignore[assignment]
        self.metrics_endpoint = metrics_endpoint
        self.metrics_interval = metrics_interval
        self._channels: List[Channel] = []
        self._metrics: Optional[Channel] = None
        self._task: Optional[asyncio.Task] = None
        self._ready: Optional[asyncio.Event] = None
        self.finished = False
        self.eos_received = False
        self._lost_seen: Dict[Any, int] = {}

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

    def account_lost(self, ch: Channel, kind: str) -> None:
        """Count as dropped the frames a PUB link lost on the way to this actor."""
        lost = ch.lost.get(kind, 0)
        seen = self._lost_seen.get((id(ch), kind), 0)
        if lost > seen:
            self.stats.drop("transport", lost - seen)
            self._lost_seen[(id(ch), kind)] = lost

    def end_of_stream(self, ch: Channel, kind: str, eos: Eos) -> bool:
        """Handle an end-of-stream message; True the first time.

        The sender tells how many ``kind`` messages it sent (``eos.sent``);
        those that never arrived were lost in transport and are counted.
        """
        self.account_lost(ch, kind)
        if self.eos_received:
            return False
        self.eos_received = True
        if eos.sent > ch.seen(kind):
            self.stats.drop("transport", eos.sent - ch.seen(kind))
        self.log.debug("end of stream after frame %s", eos.last_frame_id)
        return True

    def rejected(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for ch in self._channels:
            for reason, n in ch.rejected.items():
                out[reason] = out.get(reason, 0) + n
        return out

    # ------------------------------------------------------------ lifecycle
    @property
    def task(self) -> Optional[asyncio.Task]:
        return self._task

    async def start(self) -> None:
        """Start the actor and return when it is ready; raise ActorFailed if it could not start."""
        if self._task is not None:
            return
        self._ready = asyncio.Event()
        self._task = asyncio.ensure_future(self._main())
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait([ready, self._task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready.is_set():
            exc = self._task.exception() if not self._task.cancelled() else None
            raise ActorFailed("%s did not start: %s" % (self.name, exc or "cancelled"))

    async def stop(self) -> None:
        """Cancel the actor and wait until it has cleaned up. Safe to call twice."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task])

    async def wait(self) -> None:
        """Wait until ``run`` returns; re-raise its error."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _main(self) -> None:
        pub = None
        try:
            if self.metrics_endpoint:
                self._metrics = pub = self.bus.pub(self.metrics_endpoint, hwm=100, bind=False,
                                                   name=self.name + ".metrics")
            await self.setup()
            self.log.debug("ready")
            assert self._ready is not None
            self._ready.set()
            helpers = [asyncio.ensure_future(self._tick())] if pub is not None else []
            # a bound publisher takes subscriptions only when they are read (bus.sockets: XPUB_MANUAL)
            helpers += [asyncio.ensure_future(ch.serve_subscriptions()) for ch in self._channels
                        if ch.kind == zmq.XPUB]
            try:
                await self.run()
                self.finished = True
            finally:
                for h in helpers:
                    h.cancel()
                if helpers:
                    await asyncio.wait(helpers)
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
            try:
                await self.cleanup()
            finally:
                if pub is not None:
                    await self._publish(final=True)
                for ch in self._channels:
                    ch.close()
                if pub is not None:
                    pub.close()

    def gauges(self) -> Dict[str, float]:
        """Extra gauges for the metrics (an actor that runs an engine adds its devices')."""
        return {}

    def snapshot(self, final: bool = False):
        for k, v in self.gauges().items():
            self.stats.gauge(k, v)
        for k, v in process_gauges().items():  # this process's CPU % and RSS
            self.stats.gauge(k, v)
        return self.stats.snapshot(self.rejected(), final=final)

    async def _publish(self, final: bool = False) -> None:
        if self._metrics is not None and not self._metrics.closed:
            await self._metrics.send(self.snapshot(final), nowait=True)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_interval)
            await self._publish()


def now() -> float:
    return time.monotonic()


def ms_since(t: float) -> float:
    return (time.monotonic() - t) * 1000.0


async def in_thread(executor: Any, fn: Any, *args: Any) -> Any:
    """Run blocking ``fn`` in the actor's own executor (one interpreter per thread)."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
