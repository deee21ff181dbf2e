"""Whole-image classifiers: MobileNetV2 ImageNet-1k (int8, logits) and Coral's iNat birds.

Pre-processing: the central square of the frame, resized to the model input, in
the model's colour order (MobileNetV2 int8 here: RGB, value = pixel - 128).
Output: logits (softmax applied) or probabilities, per the option ``output``.
Labels come from the manifest's ``labels_file`` (one label per line, or Coral's
"index  label" lines), looked up next to the model file first, then like a
model file (search folders, cache, sources), and checked against its sha256.

``birds_only`` keeps the bird classes: for ImageNet-1k the index ranges in
the option ``bird_ranges`` (7..24, 80..100, 127..146, checked against the
labels file), for a bird model every class but "background". Probabilities
stay those of the full softmax (not renormalised), so a frame without a bird
gives low ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple

import cv2
import msgspec
import numpy as np

from edgepipe.models.engines.engine import Engine, EngineError
from edgepipe.models.families.family import ImageClassifierModel, pixels_to_tensor, to_model_pixels
from edgepipe.models.families.fer import softmax, to_probabilities
from edgepipe.models.spec import ModelSpec
from edgepipe.models.store import fetch
from edgepipe.models.tensor import TensorSpec


def read_labels(path: Path) -> List[str]:
    """Labels from a text file: one per line, or "index label" lines (Coral's format)."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    indexed = {}
    for ln in lines:
        head, _, rest = ln.partition(" ")
        if not head.isdigit() or not rest.strip():
            indexed = {}
            break
        indexed[int(head)] = rest.strip()
    if indexed and len(indexed) == len(lines):
        n = max(indexed) + 1
        return [indexed.get(i, str(i)) for i in range(n)]
    return lines


def load_labels(spec: ModelSpec, engine: Engine) -> List[str]:
    if spec.labels:
        return list(spec.labels)
    model_path = getattr(engine, "model_path", None)
    near = Path(model_path).parent if model_path else None
    path = fetch.resolve_labels(spec, model_paths=getattr(engine, "model_paths", ()), near=near)
    return read_labels(path)


def center_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return image[y:y + side, x:x + side]


class ImageNetOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    output: Literal["logits", "probabilities"] = "probabilities"  # logits go through a softmax
    num_classes: int = 0  # the output's size where the labels are in a file (the fake engine's output)
    bird_ranges: Tuple[Tuple[int, int], ...] = ()  # birds_only: these class index ranges (inclusive)


class ImageNetClassifier(ImageClassifierModel):
    family = "imagenet"
    Options = ImageNetOptions

    def __init__(self, spec: ModelSpec, engine: Engine, top_k: int = 5, birds_only: bool = False,
                 labels: Optional[Sequence[str]] = None) -> None:
        super().__init__(spec, engine, top_k=top_k)
        self.birds_only = birds_only
        self._labels = list(labels) if labels else None
        self._keep: Optional[np.ndarray] = None

    @property
    def labels(self) -> List[str]:
        if self._labels is None:
            self._labels = load_labels(self.spec, self.engine)
        return self._labels

    def bird_indices(self) -> np.ndarray:
        labels = self.labels
        ranges = self.options.bird_ranges
        if ranges:
            idx = [i for lo, hi in ranges for i in range(lo, hi + 1)]
        else:
            idx = [i for i, name in enumerate(labels) if name.strip().lower() != "background"]
        return np.asarray([i for i in idx if i < len(labels)], dtype=np.int64)

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        h, w, _ = self.spec.input_shape
        square = center_square(image_bgr)
        interp = cv2.INTER_AREA if square.shape[0] > h else cv2.INTER_LINEAR
        return to_model_pixels(cv2.resize(square, (w, h), interpolation=interp), self.spec)

    def probabilities(self, image_bgr: np.ndarray) -> np.ndarray:
        out = self.engine.invoke([pixels_to_tensor(self.prepare(image_bgr), self.engine, self.spec)])[0]
        real = self.engine.outputs[0].dequantize(np.asarray(out)).reshape(-1)
        if self.options.output == "logits":
            return softmax(real)
        return to_probabilities(real)

    def classify(self, image_bgr: np.ndarray) -> List[Tuple[str, float]]:
        probs = self.probabilities(image_bgr)
        labels = self.labels
        if len(labels) != probs.shape[0]:
            raise EngineError("model %r: %d outputs but %d labels (wrong labels file?)"
                              % (self.spec.name, probs.shape[0], len(labels)))
        if self.birds_only:
            if self._keep is None:
                self._keep = self.bird_indices()
            candidates = self._keep
        else:
            candidates = np.arange(probs.shape[0])
        best = candidates[np.argsort(-probs[candidates], kind="stable")[:self.top_k]]
        return [(labels[int(i)], float(probs[int(i)])) for i in best]

    @classmethod
    def fake_outputs(cls, spec: ModelSpec) -> Optional[List[TensorSpec]]:
        """One logit per class: the labels' count, or ``num_classes`` where the labels are in a file."""
        n = len(spec.labels or []) or cls.options_of(spec).num_classes
        if n == 0:
            raise EngineError("fake engine: model %r has no labels" % spec.name)
        return [TensorSpec("scores", (1, n), "float32")]
