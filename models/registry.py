"""Build engines and model families from names."""
from __future__ import annotations

from typing import Sequence

from edgepipe.models.engines.engine import Engine, EngineError
from edgepipe.models.engines.kinds import ENGINE_KINDS, CpuEngineSettings, EdgeTpuEngineSettings, EngineKind
from edgepipe.models.families import (align, blazeface, fer, imagenet,  # noqa: F401  (register their families)
                                      retinaface, ssd)
from edgepipe.models.families.family import (CLASSIFIERS, DETECTORS, EXPRESSIONS, ExpressionModel, FaceDetectorModel,
                                             ImageClassifierModel)
from edgepipe.models.spec import ModelSpec


def make_engine(kind: str, spec: ModelSpec, *, threads: int = 1, device: str = "", fallback: str = "",
                model_paths: Sequence[str] = ()) -> Engine:
    """An unloaded real-inference engine (``cpu`` or ``edgetpu``) for ``spec``: the benchmarks' short form
    of ``engine_kinds`` (a pipeline builds its engines from the config's ``[engine.KIND]`` settings)."""
    settings: EngineKind
    if kind == "cpu":
        settings = CpuEngineSettings(threads=threads)
    elif kind == "edgetpu":
        settings = EdgeTpuEngineSettings(devices=[device], fallback=fallback, threads=threads)  # type: ignore[arg-type]
    else:
        raise EngineError("make_engine builds the real engines (cpu, edgetpu), not %r; engine kinds: %s"
                          % (kind, ", ".join(ENGINE_KINDS)))
    return settings.build(spec, model_paths=model_paths)


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
