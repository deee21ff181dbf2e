"""The parts of an engine fail-over that need no engine host: re-probing a lost device, and where a role ran.

``reprobe`` tries to load the role's model on its device again, with backoff, until it loads (a real
load: it claims the device for this process, so a device another process holds is never opened);
``Whereabouts`` keeps the ``on.DEVICE`` gauges true after a move (0 where the role no longer runs) and the
seconds the role ran on each engine kind (``on_KIND_s``). ``EngineHost`` (``engines.py``) uses both.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional, Tuple

from edgepipe.actors.runtime.backoff import Backoff, Clock
from edgepipe.models.engines.engine import Engine

log = logging.getLogger("edgepipe.engines")

PROBE_FIRST_S, PROBE_MAX_S = 0.25, 2.0  # re-probing a lost device: the first wait, the longest


async def reprobe(load: Callable[[], Engine], kind: str, actor: str, threads: int,
                  clock: Clock) -> Tuple[ThreadPoolExecutor, Engine]:
    """``load()`` in a new executor of ``threads`` threads, again and again (backoff), until it gives an engine
    of ``kind``: that executor and engine. An engine loaded after this is cancelled is closed."""
    backoff = Backoff(PROBE_FIRST_S, PROBE_MAX_S)
    loop = asyncio.get_running_loop()
    while True:
        await clock.sleep(backoff.next())
        executor = ThreadPoolExecutor(threads, thread_name_prefix=actor)
        fut = loop.run_in_executor(executor, load)
        try:
            await asyncio.wait([fut])  # not cancelled with this task: an engine it loads is closed below
            engine = fut.result()
        except asyncio.CancelledError:
            fut.add_done_callback(_close_loaded)
            executor.shutdown(wait=False)
            raise
        except Exception as exc:  # still gone, claimed by another process, ...: try again later
            executor.shutdown(wait=False)
            log.debug("%s: the device is not back yet: %s", actor, exc)
            continue
        if engine.kind == kind:
            return executor, engine
        engine.close()  # an Edge TPU engine that fell back to the CPU: the device is not back
        executor.shutdown(wait=False)


def _close_loaded(fut: "asyncio.Future[Engine]") -> None:
    """An engine a cancelled re-probe loaded anyway: close it (its device claim with it)."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


class Whereabouts:
    """Where a role's engine runs, for the gauges: ``on.X`` (1 where it runs, 0 where it ran before) and
    ``on_KIND_s``, the seconds it ran on each engine kind."""

    def __init__(self) -> None:
        self.runs_on: Dict[str, float] = {}  # every on.X gauge so far
        self.seconds: Dict[str, float] = {}  # on_KIND_s -> seconds before the current stay
        self.since: Optional[Tuple[str, float]] = None  # (kind, since when) it runs on now

    def moved(self, kind: str) -> None:
        """It runs on engine ``kind`` from now ("" = nowhere): count the seconds of the one before."""
        now = time.monotonic()
        if self.since is not None and self.since[0]:
            key = "on_%s_s" % self.since[0]
            self.seconds[key] = self.seconds.get(key, 0.0) + now - self.since[1]
        self.since = (kind, now)

    def gauges(self, now_on: Dict[str, Any]) -> Dict[str, float]:
        """The gauges with ``now_on`` (the on.X keys where it runs now, and its devices' figures)."""
        out = {k: 0.0 for k in self.runs_on}
        out.update(self.seconds)
        if self.since is not None and self.since[0]:
            key = "on_%s_s" % self.since[0]
            out[key] = out.get(key, 0.0) + time.monotonic() - self.since[1]
        out.update(now_on)
        self.runs_on.update((k, v) for k, v in out.items() if k.startswith("on."))
        return out
