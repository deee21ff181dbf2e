"""Build engines and model families from names.

Python 3.9 compatible.
"""
from __future__ import annotations

from typing import Callable, Optional

from . import align, blazeface, fer, imagenet, retinaface, ssd  # noqa: F401  (register their families)
from .devices import DeviceModel, DevicePool
from .engine import Engine, EngineError, EngineFaults
from .family import CLASSIFIERS, DETECTORS, EXPRESSIONS, ExpressionModel, FaceDetectorModel, ImageClassifierModel
from .spec import ModelSpec

ENGINE_KINDS = ("fake", "cpu", "edgetpu")


def make_engine(kind: str, spec: ModelSpec, *, latency_ms: Optional[float] = None,
                faults: Optional[EngineFaults] = None, threads: int = 1, device: str = "",
                fallback: str = "", model_paths=(), open_pool: Optional[Callable[[], DevicePool]] = None,
                device_model: Optional[DeviceModel] = None) -> Engine:
    """An unloaded engine of ``kind`` for ``spec``; ``open_pool`` gives the devices it runs on."""
    if kind == "fake":
        from .fake import FakeEngine
        return FakeEngine(spec, latency_ms=latency_ms, faults=faults, open_pool=open_pool,
                          device_model=device_model)
    if kind in ("cpu", "edgetpu"):
        try:
            from .litert import make_litert_engine
        except ImportError as exc:  # the real-inference engines are not built yet
            raise EngineError("engine %r is not available: %s" % (kind, exc)) from None
        return make_litert_engine(kind, spec, threads=threads, device=device, fallback=fallback,
                                  model_paths=model_paths, open_pool=open_pool)
    raise EngineError("unknown engine %r; choose one of %s" % (kind, ", ".join(ENGINE_KINDS)))


def face_detector(spec: ModelSpec, engine: Engine, **kw) -> FaceDetectorModel:
    return _pick(DETECTORS, spec, "face detector")(spec, engine, **kw)


def expression_model(spec: ModelSpec, engine: Engine) -> ExpressionModel:
    return _pick(EXPRESSIONS, spec, "expression model")(spec, engine)


def image_classifier(spec: ModelSpec, engine: Engine, **kw) -> ImageClassifierModel:
    return _pick(CLASSIFIERS, spec, "image classifier")(spec, engine, **kw)


def _pick(table, spec: ModelSpec, what: str):
    try:
        return table[spec.family]
    except KeyError:
        raise EngineError("model %r (family %r) is not a %s; known: %s"
                          % (spec.name, spec.family, what, ", ".join(sorted(table)))) from None
