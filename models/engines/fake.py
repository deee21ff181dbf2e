"""The fake engine: stands in for the Edge TPU in tests and benchmarks.

No model file. Outputs are deterministic and computed from the input tensor
(see ``fake_scene``): the engine asks the model's family what to answer
(``Family.fake_outputs`` and ``Family.fake``, ``models/families/family.py``):
the SSD face detector family finds the synthetic faces and answers in the SSD
post-process format of Coral's face model; the expression families read the
drawn expression; the classifier families answer from the mean colour.
The latency per invoke is configurable (default: the model's measured Edge
TPU time) and is spent on a fake *device* (``models/devices.py``): the
device's owner thread waits that long in ``threading.Event.wait``, which does
not hold the GIL, as a real TPU invoke does not, and every engine placed on
the same device waits its turn, so N engines on one fake device never run
faster than one Edge TPU. The device also charges a model switch when two
models' parameters do not fit its cache together. The outputs are computed
in the caller's thread (the CPU work of an emulator, not of the TPU). Faults
(raise, hang, slow) are injected on schedule; a hang holds the device until
``close()``. A fake device may also go away and come back (``Vanishing``:
``[engine.fake] vanish_after``, ``back_after_s``), as a USB Coral that resets
or is unplugged: every invoke, and every load of a model on it, then raises
``DeviceGone``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from edgepipe.models.engines import fake_scene
from edgepipe.models.engines.devices import Device, DeviceGone, DeviceModel, DevicePool, open_pool
from edgepipe.models.engines.engine import Engine, EngineError, FaultCounter, FaultPlan
from edgepipe.models.families.discovery import family_of
from edgepipe.models.spec import ModelSpec


class InjectedFault(RuntimeError):
    """Raised by the fake engine when a test asked it to fail."""


class Vanishing:
    """When fake devices go away and come back, like a USB Coral that resets or is unplugged.

    Each device counts its invokes; after ``vanish_after`` of them it is gone (0 = never), and it is back
    ``back_after_s`` seconds later on ``clock`` (0 = never). While it is gone every invoke and every open
    raises ``DeviceGone``; an engine opened before it went stays broken after it is back (a reset device
    enumerates anew: its old handles are dead), so a model must be loaded again. It goes away once.
    Shared by the engines of one run (``FakeEngineSettings.vanishing``); thread-safe.
    """

    def __init__(self, vanish_after: int, back_after_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.vanish_after = vanish_after
        self.back_after_s = back_after_s
        self.clock = clock
        self.invokes: Dict[str, int] = {}
        self.gone_at: Dict[str, float] = {}  # device -> when it went
        self._lock = threading.Lock()

    def _gone(self, device: str) -> bool:
        went = self.gone_at.get(device)
        if went is None:
            return False
        return not self.back_after_s or self.clock() - went < self.back_after_s

    def is_gone(self, device: str) -> bool:
        with self._lock:
            return self._gone(device)

    def opened(self, device: str) -> int:
        """An engine opens ``device``: its handle (DeviceGone while the device is gone)."""
        with self._lock:
            if self._gone(device):
                raise DeviceGone("fake device %s is gone (emulated: unplugged or reset); it cannot be opened"
                                 % device)
            return int(device in self.gone_at)

    def invoke(self, device: str, handle: int) -> None:
        """One invoke on ``device`` by an engine that opened it with ``handle``; DeviceGone if it cannot run."""
        with self._lock:
            if self._gone(device):
                raise DeviceGone("fake device %s is gone (emulated: unplugged or reset after %d invokes)"
                                 % (device, self.vanish_after))
            if handle != int(device in self.gone_at):
                raise DeviceGone("fake device %s was reset: this engine's handle on it is dead; load the model "
                                 "again" % device)
            n = self.invokes[device] = self.invokes.get(device, 0) + 1
            if self.vanish_after and n == self.vanish_after and device not in self.gone_at:
                self.gone_at[device] = self.clock()


class FakeEngine(Engine):
    kind = "fake"

    def __init__(self, model: ModelSpec, latency_ms: Optional[float] = None,
                 faults: Optional[FaultCounter] = None,
                 open_pool: Optional[Callable[[], DevicePool]] = None,
                 device_model: Optional[DeviceModel] = None, vanishing: Optional[Vanishing] = None) -> None:
        super().__init__(model)
        ms = model.tpu_ms if latency_ms is None else max(0.0, latency_ms)
        if latency_ms is None and ms <= 0:
            raise EngineError("fake engine: model %r has no Edge TPU time to emulate (tpu_ms in the manifest, "
                              "or engine.fake.latency_ms); a fake device must never be faster than a real one"
                              % model.name)
        self.latency_s = ms / 1000.0
        self.faults = faults or FaultCounter(FaultPlan())  # the actor's counter outlives this engine
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open_pool = open_pool or (lambda: fake_pool(1))
        self.device_model = device_model or DeviceModel(model.name, model.tpu_param_mb, est_ms=ms)
        self.vanishing = vanishing
        self._handles: Dict[str, int] = {}  # device -> this engine's handle on it (Vanishing)

    def load(self) -> None:
        m = self.model
        if self.pool is None:
            pool = self._open_pool()
            try:
                self._handles = {n: self.vanishing.opened(n) for n in pool.names} if self.vanishing else {}
            except DeviceGone:
                pool.release()
                raise
            self.pool = pool
        self._inputs = [m.input]
        self.family = family_of(m)
        outputs = self.family.fake_outputs(m)
        if outputs is None:
            raise EngineError(
                "the fake engine emulates the families that say what to fake (SSD face detectors such as "
                "Coral's model, expression and image classifiers); model %r (family %s) needs --engine cpu "
                "or edgetpu" % (m.name, m.family))
        self._outputs = list(outputs)

    def close(self) -> None:
        self._closed.set()  # frees a hung invoke first, then lets go of the device
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.release()

    def describe(self) -> Dict[str, object]:
        d = super().describe()
        d["devices"] = self.device_names
        return d

    def _occupy(self, n: int, device: Device) -> None:
        """Runs on the device's owner thread: the invoke's time on the device."""
        if self.vanishing is not None:
            self.vanishing.invoke(device.name, self._handles.get(device.name, 0))
        f = self.faults.plan
        if f.hangs(n):
            self._closed.wait()  # a hung accelerator: only close() frees it
            device.free_at = time.monotonic()
            raise EngineError("fake engine for %r was closed while hung" % self.model.name)
        device.occupy(self.latency_s + f.extra_s(n), self._closed)

    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        if self._closed.is_set():
            raise EngineError("fake engine for %r is closed" % self.model.name)
        pool = self.pool
        if pool is None:
            raise EngineError("fake engine for %r is not loaded" % self.model.name)
        x = np.asarray(inputs[0])
        if x.shape != tuple(self._inputs[0].shape):
            raise EngineError("fake engine for %r: input shape %s, expected %s"
                              % (self.model.name, list(x.shape), list(self._inputs[0].shape)))
        with self._lock:
            self.invocations += 1
        n = self.faults.next_call()
        pool.run(self.device_model, lambda dev: self._occupy(n, dev))
        if self._closed.is_set():
            raise EngineError("fake engine for %r was closed during an invoke" % self.model.name)
        if self.faults.plan.raises(n):
            raise InjectedFault("injected fault on invoke %d of %r" % (n, self.model.name))
        return self.family.fake(self.model, fake_scene.Scene(self._pixels(x[0]), self.model.color))

    def _pixels(self, tensor: np.ndarray) -> np.ndarray:
        real = self._inputs[0].dequantize(tensor) if self._inputs[0].quantized else tensor
        if tensor.dtype == np.uint8 and not self._inputs[0].quantized:
            return tensor
        return self.model.normalization.invert(real)


def fake_pool(n: int = 1, **options: object) -> DevicePool:
    """Fake devices ``fake:0`` .. ``fake:N-1`` of this process (emulated time), claimed from other processes."""
    return open_pool(["fake:%d" % i for i in range(max(1, n))], "fake", emulated=True, **options)
