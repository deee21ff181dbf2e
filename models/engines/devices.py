"""Accelerator devices: one owner per device, one invoke at a time.

An Edge TPU runs one inference at a time, keeps the parameters of the models
it ran in an 8 MB on-chip cache, and belongs to one process. ``Device`` is
that: a thread (the owner) and a queue; every engine placed on the device
hands its invokes to the owner, which runs them one after the other. The
device counts its invokes, its busy time and its model switches.

A model switch happens when the previous invoke on the device was another
model and the parameters of the two do not fit the cache together (unless
the two were compiled together, "co-compiled"): the device then reloads the
new model's parameters. A real device pays that in hardware and we only
count it; the fake device (``emulated``) also spends the time, at
``switch_ms_per_mb`` per MB of the new model's parameters. A fake device
keeps emulated time (``occupy``): each invoke starts when the device is free
and the invoke has arrived, never earlier, and holds the device for exactly
its latency, so a late wake-up of the owner thread (the GIL, a loaded
machine) delays that result but never makes the device faster or slower.

A process opens a device once (``open_device``) and shares it among its
engines (reference counted). A second process that claims the same device
gets ``DeviceBusy`` naming the process that holds it: the claim is an
exclusive ``flock`` on a file per physical device (``claims.py``: how the
names a config gives a device map to one claim). A delegate probe
(``probe_claim``) takes the same claim, without waiting, for the time its
child has the device open; an engine that finds a probe's claim waits for it
(``PROBE_WAIT_S``), so ``run.py doctor`` never fails a starting run. In a
process where a model already runs on the device, no probe runs: that
process's runtime is proven, and a second opener breaks its USB transfers.

``DevicePool`` is the devices a role may use. Each invoke goes to the device
whose queue will be free first (its queued work, in estimated milliseconds,
plus the switch it would cause), so with two devices the detector and the
FER pool spread over both.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple

from edgepipe.models.engines.claims import PROBE_WAIT_S, DeviceBusy, _Claim, claim_key, lock_dir  # noqa: F401
from edgepipe.models.errors import EngineError

log = logging.getLogger(__name__)

CACHE_MB = 8.0  # the Edge TPU's on-chip parameter cache (Coral: "Parameter data caching")
DEFAULT_SWITCH_MS_PER_MB = 3.0  # reloading parameters over USB 3 at about 330 MB/s (fake devices)


class DeviceGone(EngineError):
    """The accelerator is gone: unplugged, reset, or not enumerated (yet). Every invoke on it, and every
    (re)load of a model on it, fails with this until it is back; the actor moves its model to the CPU
    (``actors/runtime/engines.py``) and a re-probe brings it back."""


@dataclass(frozen=True)
class DeviceModel:
    """What the device needs to know of a model: its name, parameter size and co-compiled partners."""

    name: str
    param_mb: float = 0.0
    cocompiled: FrozenSet[str] = frozenset()  # models compiled together with this one (share the cache)
    est_ms: float = 1.0  # expected invoke time, for choosing a device in a pool


@dataclass
class DeviceStats:
    invokes: int = 0
    switches: int = 0
    busy_s: float = 0.0
    switch_s: float = 0.0
    t_first: Optional[float] = None  # start of the first invoke
    t_last: Optional[float] = None  # end of the last one
    by_model: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        active = (self.t_last - self.t_first) if self.t_first is not None and self.t_last is not None else 0.0
        return {"invokes": self.invokes, "switches": self.switches, "busy_s": round(self.busy_s, 4),
                "switch_s": round(self.switch_s, 4), "active_s": round(active, 4),
                "busy_pct": round(100.0 * self.busy_s / active, 1) if active > 0 else 0.0,
                "by_model": dict(self.by_model)}


class Device:
    """One accelerator and its owner thread."""

    def __init__(self, name: str, kind: str, *, emulated: bool = False,
                 switch_ms_per_mb: float = DEFAULT_SWITCH_MS_PER_MB, cache_mb: float = CACHE_MB) -> None:
        self.name = name
        self.key = claim_key(name)  # the physical device (one claim, whatever name the config gave it)
        self.kind = kind  # "fake" | "edgetpu"
        self.opened = False  # a model runs on it in this process (its runtime is proven: no probe again)
        self.probe_lock = threading.RLock()  # a probe and the first interpreter opened, one at a time
        self.emulated = emulated
        self.switch_ms_per_mb = switch_ms_per_mb
        self.cache_mb = cache_mb
        self.stats = DeviceStats()
        self.users = 0
        self._queue: Deque[Tuple[DeviceModel, Callable[..., Any], Tuple[Any, ...], Future, float]] = \
            collections.deque()
        # Emulated time (fake devices): an invoke starts when the device is free and the invoke has arrived,
        # never earlier, and occupies it for exactly its latency; the owner thread waits until that end.
        # Waking late (the GIL, a busy machine) then delays the result, not the device's next invoke.
        self.free_at = 0.0
        self._cond = threading.Condition()
        self._closed = False
        self._last: Optional[DeviceModel] = None  # the model that ran last
        self._tail: Optional[DeviceModel] = None  # the model queued last (for estimates)
        self._backlog_ms = 0.0
        self._recent: Deque[Tuple[float, float]] = collections.deque(maxlen=4096)  # (start, end) of invokes
        self._thread = threading.Thread(target=self._own, name="device-%s" % name, daemon=True)
        self._thread.start()

    # -- what a model switch costs ---------------------------------------------------------
    def switches(self, prev: Optional[DeviceModel], new: DeviceModel) -> bool:
        if prev is None or prev.name == new.name:
            return False
        if new.name in prev.cocompiled or prev.name in new.cocompiled:
            return False
        return prev.param_mb + new.param_mb > self.cache_mb

    def switch_ms(self, new: DeviceModel) -> float:
        return new.param_mb * self.switch_ms_per_mb

    def estimate_ms(self, model: DeviceModel) -> float:
        """When an invoke of ``model`` queued now would end, in ms from now (roughly)."""
        extra = self.switch_ms(model) if self.switches(self._tail, model) else 0.0
        return self._backlog_ms + extra + model.est_ms

    # -- running ---------------------------------------------------------------------------
    def submit(self, model: DeviceModel, fn: Callable[..., Any], *args: Any) -> "Future[Any]":
        fut: "Future[Any]" = Future()
        with self._cond:
            if self._closed:
                raise EngineError("device %s is closed" % self.name)
            self._queue.append((model, fn, args, fut, time.monotonic()))
            self._backlog_ms += model.est_ms
            self._tail = model
            self._cond.notify()
        return fut

    def occupy(self, seconds: float, stop: threading.Event) -> None:
        """Emulate an invoke of ``seconds`` (fake devices; on the owner thread): hold the device that long."""
        self.free_at += seconds
        left = self.free_at - time.monotonic()
        if left > 0:
            stop.wait(left)

    def run(self, model: DeviceModel, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the owner thread when the device is free; blocking."""
        return self.submit(model, fn, *args).result()

    def _own(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                model, fn, args, fut, arrived = self._queue.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            t0 = max(self.free_at, arrived) if self.emulated else time.monotonic()
            self.free_at = t0
            switched = self.switches(self._last, model)
            switch_s = 0.0
            if switched and self.emulated:
                switch_s = self.switch_ms(model) / 1000.0  # the parameter reload occupies the device
                self.free_at = t0 + switch_s
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, who decides
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                if not self.emulated:
                    self.free_at = time.monotonic()
                self._last = model
                self._account(model, t0, self.free_at, switched, switch_s)

    def _account(self, model: DeviceModel, t0: float, t1: float, switched: bool, switch_s: float) -> None:
        s = self.stats
        with self._cond:
            self._backlog_ms = max(0.0, self._backlog_ms - model.est_ms)
            s.invokes += 1
            s.by_model[model.name] = s.by_model.get(model.name, 0) + 1
            s.busy_s += t1 - t0
            if switched:
                s.switches += 1
                s.switch_s += switch_s
            if s.t_first is None:
                s.t_first = t0
            s.t_last = t1
            self._recent.append((t0, t1))

    def busy_pct(self, window_s: float = 1.0) -> float:
        """Share of the last ``window_s`` seconds the device was busy, in %."""
        now = time.monotonic()
        lo = now - window_s
        with self._cond:
            spans = list(self._recent)
        busy = sum(min(b, now) - max(a, lo) for a, b in spans if b > lo)
        return round(100.0 * busy / window_s, 1)

    def close(self) -> None:
        """Stop the owner after the queued invokes; does not wait for a hung one. Safe twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# ---------------------------------------------------------------- one device per process

_REGISTRY: Dict[str, Tuple[Device, _Claim]] = {}
_REGISTRY_LOCK = threading.Lock()


def open_device(name: str, kind: str, **options: Any) -> Device:
    """This process's ``Device`` for ``name``, claimed from other processes on first use (a name that means
    a device already open, ``edgetpu:`` and ``edgetpu:usb:0``, shares it). While another process's probe
    holds the claim, waits for it up to ``PROBE_WAIT_S``."""
    key = claim_key(name)
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(key)
        if found is None:
            claim = _Claim(key, wait_s=PROBE_WAIT_S)
            dev = Device(name, kind, **options)
            found = (dev, claim)
            _REGISTRY[key] = found
            log.info("device %s opened (%s)", name, kind)
        found[0].users += 1
        return found[0]


def release_device(dev: Device) -> None:
    """One user less; the last one closes the device and frees the claim. Safe twice per user only."""
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(dev.key)
        if found is None or found[0] is not dev:
            return
        dev.users -= 1
        if dev.users <= 0:
            del _REGISTRY[dev.key]
            dev.close()
            found[1].release()


@contextlib.contextmanager
def probe_claim(name: str) -> Iterator[bool]:
    """Hold the claim of device ``name`` while a delegate probe's child has the device open.

    Yields True: probe now. Yields False: do not, a model already runs on the device in this process (its
    runtime is proven and a second opener would break its USB transfers). Raises ``DeviceBusy`` naming the
    holder, without waiting, when another process holds the claim. A process that holds the claim itself
    (an engine before its first interpreter) probes under it; else the claim is taken for the probe only.
    """
    key = claim_key(name)
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(key)
        claim = None if found is not None else _Claim(key, probe=True)  # DeviceBusy: another process has it
    if found is not None:
        dev = found[0]
        with dev.probe_lock:  # an engine of this process does not open its interpreter meanwhile
            yield not dev.opened
        return
    try:
        yield True
    finally:
        claim.release()


def open_on(dev: Device, probe: Callable[[], None], open_: Callable[[], Any]) -> Any:
    """``open_()`` an interpreter on ``dev``; first ``probe()`` when no model runs on it in this process yet."""
    with dev.probe_lock:
        if not dev.opened:
            probe()
        result = open_()
        dev.opened = True
        return result


def open_devices() -> List[Device]:
    with _REGISTRY_LOCK:
        return [d for d, _ in _REGISTRY.values()]


def open_pool(names: Sequence[str], kind: str, **options: Any) -> "DevicePool":
    """This process's devices ``names``, claimed from other processes; none is kept when one fails."""
    opened: List[Device] = []
    try:
        for name in names:
            dev = open_device(name, kind, **options)
            if dev in opened:  # two names of one device ("" and "usb:0"): it is in the pool once
                release_device(dev)
            else:
                opened.append(dev)
    except BaseException:
        for dev in opened:
            release_device(dev)
        raise
    return DevicePool(opened)


class DevicePool:
    """The devices one engine may run on; each invoke goes where it will finish first."""

    def __init__(self, devices: Sequence[Device]) -> None:
        if not devices:
            raise EngineError("an accelerator engine needs at least one device")
        self.devices = list(devices)

    @property
    def names(self) -> List[str]:
        return [d.name for d in self.devices]

    def pick(self, model: DeviceModel) -> Device:
        if len(self.devices) == 1:
            return self.devices[0]
        return min(self.devices, key=lambda d: d.estimate_ms(model))

    def run(self, model: DeviceModel, fn: Callable[[Device], Any]) -> Any:
        """Run ``fn(device)`` on the owner thread of the chosen device."""
        dev = self.pick(model)
        return dev.run(model, fn, dev)

    def release(self) -> None:
        devices, self.devices = self.devices, []
        for d in devices:
            release_device(d)
