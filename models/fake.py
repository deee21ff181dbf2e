"""The fake engine: stands in for the Edge TPU in tests and benchmarks.

No model file. Outputs are deterministic and computed from the input tensor
(see ``fake_scene``): the fake face detector finds the synthetic faces and
answers in the SSD post-process format of Coral's face model; the fake FER
reads the drawn expression; the fake classifier answers from the mean colour.
The latency per invoke is configurable (default: the model's measured Edge
TPU time) and is spent in ``threading.Event.wait``, which does not hold the
GIL, as a real TPU invoke does not. Faults (raise, hang, slow) are injected
on schedule; a hang lasts until ``close()``.

Python 3.9 compatible.
"""
from __future__ import annotations

import threading
from typing import List, Optional, Sequence

import numpy as np

from . import fake_scene
from .engine import Engine, EngineError, EngineFaults, TensorSpec
from .labels import EXPRESSIONS, canonical
from .spec import ModelSpec

MAX_DETECTIONS = 20


class InjectedFault(RuntimeError):
    """Raised by the fake engine when a test asked it to fail."""


class FakeEngine(Engine):
    kind = "fake"

    def __init__(self, model: ModelSpec, latency_ms: Optional[float] = None,
                 faults: Optional[EngineFaults] = None) -> None:
        super().__init__(model)
        self.latency_s = (model.tpu_ms if latency_ms is None else latency_ms) / 1000.0
        self.faults = faults or EngineFaults()
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def load(self) -> None:
        m = self.model
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
        self._closed.set()

    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        if self._closed.is_set():
            raise EngineError("fake engine for %r is closed" % self.model.name)
        f = self.faults
        with self._lock:
            self.invocations += 1
            n = f.next_call()
        if f.hangs(n):
            self._closed.wait()  # a hung accelerator: only close() frees the thread
            raise EngineError("fake engine for %r was closed while hung" % self.model.name)
        delay = self.latency_s
        if f.slow_every and n % f.slow_every == 0:
            delay += f.slow_ms / 1000.0
        if delay > 0:
            self._closed.wait(delay)
        if f.raise_every and n % f.raise_every == 0:
            raise InjectedFault("injected fault on invoke %d of %r" % (n, self.model.name))
        x = np.asarray(inputs[0])
        if x.shape != tuple(self._inputs[0].shape):
            raise EngineError("fake engine for %r: input shape %s, expected %s"
                              % (self.model.name, list(x.shape), list(self._inputs[0].shape)))
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
