"""How an actor gets and runs its engine.

``EngineSettings`` comes from the config and the role's placement: the
settings of the chosen engine kind (``models/engines/kind_*.py``: one class per
kind, tagged by ``type``) and where model files are found. ``EngineHost`` owns
one engine, the counter of the faults its actor asked for (kept across engine
restarts), and the single thread that loads and calls it (one interpreter per
thread; an accelerator engine hands the invoke itself to its device's owner
thread), runs blocking calls off the event loop with an optional time limit,
and restarts the engine when a call hangs (the watchdog of the detector and
FER workers).

Fail-over: when the accelerator is lost (``DeviceGone`` from an invoke or a
load, errors in a row, a watchdog reload that fails), the host moves the role
to its ``fallback`` (the CPU engine and the profile's CPU model), runs the
calls in flight again there, and re-probes the device in the background
(with backoff; loading the model there, which claims the device for this
process); once the device takes the model again the role is promoted back.
A role with no fallback drops its frames (``DeviceGone``) until then.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import msgspec

from edgepipe.actors.runtime.backoff import SYSTEM_CLOCK, Clock
from edgepipe.actors.runtime.failover import Whereabouts, reprobe
from edgepipe.actors.runtime.tasks import owned_task
from edgepipe.models.engines.devices import DeviceGone
from edgepipe.models.engines.engine import Engine, EngineError, FaultCounter
from edgepipe.models.engines.kinds import AnyEngineKind, FakeEngineSettings, engine_kind
from edgepipe.models.spec import ModelSpec

log = logging.getLogger("edgepipe.engines")


async def within(fut: "asyncio.Future[Any]", timeout: float) -> Any:
    """The result of ``fut`` (a thread's work), or asyncio.TimeoutError after ``timeout`` seconds.

    Not ``asyncio.wait_for``: before Python 3.12 it swallows a cancellation of the caller that comes in the
    same turn of the loop as ``fut``'s result (the result wins), and an actor being stopped then waits for
    its next message for ever. ``asyncio.wait`` raises the cancellation whatever ``fut`` did."""
    try:
        done, _ = await asyncio.wait([fut], timeout=timeout)
    except asyncio.CancelledError:
        fut.cancel()
        raise
    if not done:
        fut.cancel()
        raise asyncio.TimeoutError()
    return fut.result()


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    """A role's engine: the settings of its kind and where model files are; shared by the role's actors."""

    engine: AnyEngineKind = msgspec.field(default_factory=FakeEngineSettings)
    model_paths: Tuple[str, ...] = ()

    @classmethod
    def of(cls, kind: str, model_paths: Sequence[str] = (), **values: Any) -> "EngineSettings":
        """The settings of engine ``kind`` with ``values`` (EngineError naming an unknown kind or key)."""
        return cls(engine=engine_kind(dict(values, type=kind)), model_paths=tuple(str(p) for p in model_paths))

    @property
    def kind(self) -> str:
        return self.engine.kind

    def build(self, spec: ModelSpec, faults: Optional[FaultCounter] = None) -> Engine:
        """An unloaded engine for ``spec``; ``faults`` counts its actor's injected faults."""
        return self.engine.build(spec, model_paths=self.model_paths, faults=faults)

    def fault_counter(self, actor: str) -> Optional[FaultCounter]:
        """A fresh counter of the faults ``actor`` asked for (None when it asked for none)."""
        plan = self.engine.fault_plan(actor)
        return FaultCounter(plan) if plan is not None else None


def load_engine(settings: EngineSettings, spec: ModelSpec, faults: Optional[FaultCounter] = None) -> Engine:
    """Build and load (blocking; call it in the thread that will invoke the engine)."""
    engine = settings.build(spec, faults)
    engine.load()
    return engine


RELOAD_AFTER_ERRORS = 3  # engine calls that fail in a row before the engine is reloaded


class ErrorBursts:
    """Engine errors of one actor: the first of a burst is logged, the rest counted; every
    ``reload_after`` in a row ask for a reload of the engine (as the watchdog does for a hang)."""

    def __init__(self, log: Any, reload_after: int = RELOAD_AFTER_ERRORS) -> None:
        self.log = log
        self.reload_after = max(1, reload_after)
        self.in_a_row = 0

    def failed(self, what: str, exc: BaseException) -> bool:
        """Note one failed call (``what`` names the frame or job); True when the engine should be reloaded."""
        self.in_a_row += 1
        if self.in_a_row == 1:
            self.log.error("%s dropped: engine error: %s: %s (the next errors in a row are counted, not logged)",
                           what, type(exc).__name__, exc)
        reload = self.in_a_row % self.reload_after == 0
        if reload:
            self.log.error("%d engine errors in a row: reloading the engine (on an accelerator: the CPU if it "
                           "fails)", self.in_a_row)
        return reload

    def ok(self) -> None:
        if self.in_a_row > 1:
            self.log.warning("engine errors ended after %d in a row", self.in_a_row)
        self.in_a_row = 0


class EngineHost:
    """An actor's engine, its threads, a restart for when it hangs, and a fail-over for when its device goes.

    ``threads`` calls run at once. On an accelerator they share one engine, whose device runs one invoke
    at a time while the calls' pre- and post-processing overlap. With ``copies_on_cpu``, an engine that
    runs on the CPU is loaded once per thread instead: a CPU has no device to share, and one interpreter
    per thread lets the calls' invokes run on as many cores (``lend()`` gives each call its own copy).
    ``fallback`` (settings, model) is where the role goes when its accelerator is lost; ``count`` is the
    actor's counter (``failovers``, ``promotions``); ``where`` is ``device``, ``cpu`` (failed over) or
    ``away`` (lost, no fallback: calls fail with DeviceGone).
    """

    def __init__(self, settings: EngineSettings, spec: ModelSpec, actor: str,
                 wrap: Callable[[Engine], Any] = lambda e: e, threads: int = 1, copies_on_cpu: bool = False,
                 fallback: "Optional[Tuple[EngineSettings, ModelSpec]]" = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.threads = max(1, threads)  # calls at once
        self.copies_on_cpu = copies_on_cpu
        self.spec = spec  # the model loaded now (the fallback's after a fail-over)
        self.actor = actor
        self.wrap = wrap  # engine -> the model family object the actor calls (``engine.model`` is its spec)
        self.primary = (settings, spec)
        self.fallback = fallback if settings.kind != "cpu" else None
        self.clock = clock
        self.count: Callable[[str], None] = lambda name: None
        self.where = "device" if settings.kind != "cpu" else "cpu"
        self.away: Optional[str] = None  # why, while the device is lost and there is no fallback
        self.faults = settings.fault_counter(actor)  # counts across restarts of the engine
        self.executor: Optional[ThreadPoolExecutor] = None
        self.engine: Optional[Engine] = None  # the first (or only) engine: its devices and kind
        self.engines: List[Engine] = []
        self.model: Any = None  # the first engine's model object
        self._spare: "queue.SimpleQueue[Any]" = queue.SimpleQueue()  # CPU copies not lent to a call
        self.restarts = 0  # also the engine's generation: a call started on generation N failed with it
        self._last_gauges: Dict[str, float] = {}
        self.whereabouts = Whereabouts()  # the on.X gauges and the seconds on each engine kind
        self._probe: "Optional[asyncio.Task[None]]" = None
        self._loaded: Optional[asyncio.Event] = None  # set while an engine is loaded (clear during a restart)

    async def load(self) -> None:
        if self._loaded is None:
            self._loaded = asyncio.Event()
        executor = ThreadPoolExecutor(self.threads, thread_name_prefix=self.actor)
        self.executor = executor
        loop = asyncio.get_running_loop()
        engines = [await loop.run_in_executor(executor, load_engine, self.settings, self.spec, self.faults)]
        if self.copies_on_cpu and engines[0].kind == "cpu":  # also an Edge TPU engine that fell back to it
            while len(engines) < self.threads:
                engines.append(await loop.run_in_executor(executor, load_engine, self.settings,
                                                          self.spec, self.faults))
        self._install(executor, engines)

    def _install(self, executor: ThreadPoolExecutor, engines: List[Engine]) -> None:
        self.executor = executor
        self.engine, self.engines = engines[0], engines
        models = [self.wrap(e) for e in engines]
        self.model = models[0]
        self._spare = queue.SimpleQueue()
        for m in models:
            self._spare.put(m)
        self.whereabouts.moved(engines[0].kind)
        if self._loaded is not None:
            self._loaded.set()

    @contextlib.contextmanager
    def lend(self) -> Iterator[Any]:
        """The model object for one call (in an engine thread): its own copy when there are copies."""
        if len(self.engines) <= 1:
            yield self.model
            return
        # as many copies as threads, and each call holds one: a call never waits here. A call that hangs
        # keeps its copy, and hands it back to the queue it came from (a restart makes a new one)
        spare = self._spare
        model = spare.get()
        try:
            yield model
        finally:
            spare.put(model)

    def submit(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        """Start ``fn(*args)`` in one of the engine's threads; await the result later."""
        if self.executor is None:
            raise EngineError("the engine of %s is not loaded" % self.actor)
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def start(self, fn: Callable[..., Any], *args: Any) -> "Tuple[int, asyncio.Future[Any]]":
        """(generation, future of ``fn(*args)``), once an engine is loaded (not during a restart); while the
        device is lost with no fallback, a future that fails with DeviceGone."""
        if self._loaded is not None:
            await self._loaded.wait()
        if self.away is not None:
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(DeviceGone(self.away))
            return self.restarts, fut
        return self.restarts, self.submit(fn, *args)

    async def result(self, started: "Tuple[int, asyncio.Future[Any]]", fn: Callable[..., Any], *args: Any,
                     timeout: float) -> Any:
        """The result of ``fn(*args)`` started with ``start`` (which gave ``started``).

        A call that failed because the watchdog replaced its engine meanwhile runs once more on the
        new one; so does a call whose device went (DeviceGone), on the fallback the role moves to. A call
        that takes over ``timeout`` seconds restarts the engine (the watchdog) and raises
        ``asyncio.TimeoutError``.
        """
        generation, fut = started
        try:
            try:
                return await within(fut, timeout)
            except DeviceGone as exc:
                if self.restarts == generation:
                    await self.fail_over(generation, exc)
                if self.away is not None:
                    raise
            except EngineError:
                if self.restarts == generation:
                    raise
            log.info("%s: a call was in flight when the engine was replaced; running it again", self.actor)
            generation, fut = await self.start(fn, *args)
            return await within(fut, timeout)
        except asyncio.TimeoutError:
            await self.restart(generation)
            raise

    async def call(self, fn: Callable[..., Any], *args: Any, timeout: Optional[float] = None) -> Any:
        """Run ``fn(*args)`` in the engine's thread; asyncio.TimeoutError after ``timeout`` seconds."""
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        if timeout is None:
            return await fut
        return await within(fut, timeout)

    async def restart(self, generation: Optional[int] = None) -> None:
        """Abandon the engine and its (maybe hung) thread; load a fresh one. A reload on a device that
        fails moves the role off the device (``fail_over``).

        With ``generation``, only if the engine is still that one (two calls that timed out on one engine
        restart it once).
        """
        if not self._replace(generation):
            if self._loaded is not None:
                await self._loaded.wait()
            return
        try:
            await self.load()
        except EngineError as exc:
            if self.where != "device":
                raise
            self._release()
            await self._leave_device(exc)

    async def fail_over(self, generation: int, exc: BaseException) -> None:
        """The device failed (``exc``): load the model there again, else move to the fallback, or drop calls
        until the device is back. Once per generation (the calls in flight on the lost device all fail)."""
        if self.where != "device" or not self._replace(generation):
            if self._loaded is not None:
                await self._loaded.wait()
            return
        try:  # a device that was reset and is back again takes the model at once (its old handle is dead)
            await self.load()
            log.warning("%s: its device failed (%s: %s); the model was loaded there again", self.actor,
                        type(exc).__name__, exc)
            self.count("restarts")
            return
        except EngineError as again:
            self._release()
            await self._leave_device(again)

    def _replace(self, generation: Optional[int]) -> bool:
        """Release the engine of ``generation`` (any: None) for a new one; False when it was replaced."""
        if generation is not None and generation != self.restarts:
            return False
        if self._loaded is not None:
            self._loaded.clear()
        self._release()
        self.restarts += 1
        return True

    async def _leave_device(self, exc: BaseException) -> None:
        devices = ", ".join(self.primary[0].engine.device_names()) or self.primary[0].kind
        why = "%s: %s" % (type(exc).__name__, exc)
        if self.fallback is not None:
            self.settings, self.spec = self.fallback
            try:
                await self.load()
                log.warning("%s: its device %s failed (%s): failed over to the CPU with %s until it is back",
                            self.actor, devices, why, self.spec.name)
                self.where = "cpu"
                self.count("failovers")
            except EngineError as cpu_exc:
                self._release()
                log.error("%s: its device %s failed (%s) and its CPU model %s does not load either: %s",
                          self.actor, devices, why, self.spec.name, cpu_exc)
                self.fallback = None
        if self.fallback is None:
            log.warning("%s: its device %s failed (%s) and model %s has no CPU fallback: its frames are dropped "
                        "until the device is back", self.actor, devices, why, self.primary[1].name)
            self.where, self.away = "away", "%s is gone (%s)" % (devices, why)
            self.whereabouts.moved("")
            if self._loaded is not None:
                self._loaded.set()
        self._start_probe()

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = owned_task(self._promote, name=self.actor + ".probe")  # close() cancels it

    async def _promote(self) -> None:
        """Once the device takes the model again, the role goes back to it (``failover.reprobe``)."""
        settings, spec = self.primary
        executor, engine = await reprobe(lambda: load_engine(settings, spec, self.faults), settings.kind,
                                         self.actor, self.threads, self.clock)
        if self._loaded is not None:
            await self._loaded.wait()  # not in the middle of a restart of the CPU engine
        self._replace(None)
        self.settings, self.spec, self.where, self.away = settings, spec, "device", None
        self._install(executor, [engine])
        log.warning("%s: its device %s is back: %s runs there again", self.actor,
                    ", ".join(engine.device_names) or engine.kind, spec.name)
        self.count("promotions")

    def device_gauges(self) -> Dict[str, float]:
        """Where the role runs (``on.DEVICE``, 0 where it ran before), the seconds it ran on each engine kind,
        and the busy %, invokes and switches of its devices (none on the CPU)."""
        if self.engine is None and self.away is None:  # closed: what it last said
            return dict(self._last_gauges)
        now: Dict[str, float] = {}
        pool = self.engine.pool if self.engine is not None else None
        if self.engine is not None and pool is None:
            now["on.%s" % self.engine.kind] = 1.0  # where this actor's engine runs, for the metrics
        for dev in pool.devices if pool is not None else ():
            now["on.%s" % dev.name] = 1.0
            st = dev.stats.as_dict()
            key = "device.%s." % dev.name
            now[key + "busy_pct"] = dev.busy_pct()
            for k in ("invokes", "switches", "busy_s", "active_s"):
                now[key + k] = float(st[k])
        self._last_gauges = self.whereabouts.gauges(now)
        return self._last_gauges

    def _release(self) -> None:
        """Release the engine (which frees a hung fake invoke) and the thread. Safe twice."""
        if self.engine is not None:
            self.device_gauges()  # keep the devices' final figures for the summary
        engines, executor = self.engines or ([self.engine] if self.engine is not None else []), self.executor
        self.engine = self.executor = None
        self.engines = []
        for engine in engines:
            engine.close()
        if executor is not None:
            executor.shutdown(wait=False)

    def close(self) -> None:
        """Stop re-probing the device, release the engine and the thread. Safe twice."""
        if self._probe is not None:
            self._probe.cancel()
        if self.away is not None:
            self.device_gauges()
            self.away = None
        self.whereabouts.moved("")
        self._release()
