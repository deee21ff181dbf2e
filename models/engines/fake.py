"""The fake engine: stands in for the Edge TPU in tests and benchmarks.

No model file. Outputs are deterministic and computed from the input tensor
(see ``fake_scene``): the fake face detector finds the synthetic faces and
answers in the SSD post-process format of Coral's face model; the fake FER
reads the drawn expression; the fake classifier answers from the mean colour.
The latency per invoke is configurable (default: the model's measured Edge
TPU time) and is spent on a fake *device* (``models/devices.py``): the
device's owner thread waits that long in ``threading.Event.wait``, which does
not hold the GIL, as a real TPU invoke does not, and every engine placed on
the same device waits its turn, so N engines on one fake device never run
faster than one Edge TPU. The device also charges a model switch when two
models' parameters do not fit its cache together. The outputs are computed
in the caller's thread (the CPU work of an emulator, not of the TPU). Faults
(raise, hang, slow) are injected on schedule; a hang holds the device until
``close()``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from edgepipe.models.engines import fake_scene
from edgepipe.models.engines.devices import Device, DeviceModel, DevicePool, open_pool
from edgepipe.models.engines.engine import Engine, EngineError, FaultCounter, FaultPlan, TensorSpec
from edgepipe.models.families.labels import EXPRESSIONS, canonical
from edgepipe.models.spec import ModelSpec

MAX_DETECTIONS = 20


class InjectedFault(RuntimeError):
    """Raised by the fake engine when a test asked it to fail."""


class FakeEngine(Engine):
    kind = "fake"

    def __init__(self, model: ModelSpec, latency_ms: Optional[float] = None,
                 faults: Optional[FaultCounter] = None,
                 open_pool: Optional[Callable[[], DevicePool]] = None,
                 device_model: Optional[DeviceModel] = None) -> None:
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

    def load(self) -> None:
        m = self.model
        if self.pool is None:
            self.pool = self._open_pool()
        self._inputs = [m.input]
        if m.family == "ssd_postprocess":
            self._outputs = [
                TensorSpec("boxes", (1, MAX_DETECTIONS, 4), "float32"),
                TensorSpec("classes", (1, MAX_DETECTIONS), "float32"),
                TensorSpec("scores", (1, MAX_DETECTIONS), "float32"),
                TensorSpec("count", (1,), "float32"),
            ]
        elif m.task in ("fer", "classification"):
            n = len(m.labels or []) or int(m.extra.get("num_classes", 0))
            if n == 0:
                raise EngineError("fake engine: model %r has no labels" % m.name)
            self._outputs = [TensorSpec("scores", (1, n), "float32")]
        else:
            raise EngineError(
                "the fake engine emulates SSD face detectors (Coral's model), expression and "
                "image classifiers; model %r (family %s) needs --engine cpu or edgetpu"
                % (m.name, m.family))

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
        if self.model.family == "ssd_postprocess":
            return self._detect(x[0])
        if self.model.task == "fer":
            return [self._expression(x[0])]
        return [self._classify(x[0])]

    def _pixels(self, tensor: np.ndarray) -> np.ndarray:
        real = self._inputs[0].dequantize(tensor) if self._inputs[0].quantized else tensor
        if tensor.dtype == np.uint8 and not self._inputs[0].quantized:
            return tensor
        return self.model.normalization.invert(real)

    def _detect(self, rgb: np.ndarray) -> List[np.ndarray]:
        boxes = fake_scene.find_faces(np.asarray(rgb, dtype=np.uint8))[:MAX_DETECTIONS]
        out_boxes = np.zeros((1, MAX_DETECTIONS, 4), np.float32)
        scores = np.zeros((1, MAX_DETECTIONS), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            out_boxes[0, i] = (y1, x1, y2, x2)
            scores[0, i] = 0.95
        classes = np.zeros((1, MAX_DETECTIONS), np.float32)
        return [out_boxes, classes, scores, np.array([len(boxes)], np.float32)]

    def _expression(self, tensor: np.ndarray) -> np.ndarray:
        index = fake_scene.read_expression(self._pixels(tensor))
        want = EXPRESSIONS[index]
        labels = [canonical(x) for x in (self.model.labels or [])]
        probs = np.full((1, len(labels)), 0.1 / max(1, len(labels) - 1), np.float32)
        if want in labels:
            probs[0, labels.index(want)] = 0.9
        return probs

    def _classify(self, tensor: np.ndarray) -> np.ndarray:
        n = self._outputs[0].shape[1]
        pixels = self._pixels(tensor)
        logits = np.zeros((1, n), np.float32)
        logits[0, int(np.mean(pixels)) % n] = 8.0
        return logits


def fake_pool(n: int = 1, **options: object) -> DevicePool:
    """Fake devices ``fake:0`` .. ``fake:N-1`` of this process (emulated time), claimed from other processes."""
    return open_pool(["fake:%d" % i for i in range(max(1, n))], "fake", emulated=True, **options)
