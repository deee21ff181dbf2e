"""Build engines and model families from names.

The families are found, not listed: importing this module imports every module of
``models/families/`` and of the ``EDGEPIPE_PLUGINS`` folders (``families/discovery.py``),
and each family registers itself in its role's table (``families/family.py``).
"""
from __future__ import annotations

from typing import Sequence

from edgepipe.models.engines.engine import Engine, EngineError
from edgepipe.models.engines.kinds import ENGINE_KINDS, CpuEngineSettings, EdgeTpuEngineSettings, EngineKind
from edgepipe.models.families.discovery import discover, family_of
from edgepipe.models.families.family import (CLASSIFIERS, DETECTORS, EXPRESSIONS, ExpressionModel, FaceDetectorModel,
                                             ImageClassifierModel)
from edgepipe.models.spec import ModelSpec

discover()  # once per process: the tables are full for whoever imported this module (e.g. family.input_for)


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
    return family_of(spec, DETECTORS, "a face detector")(spec, engine, **kw)  # type: ignore[call-arg,return-value]


def expression_model(spec: ModelSpec, engine: Engine) -> ExpressionModel:
    return family_of(spec, EXPRESSIONS, "an expression model")(spec, engine)  # type: ignore[call-arg,return-value]


def image_classifier(spec: ModelSpec, engine: Engine, **kw) -> ImageClassifierModel:
    return family_of(spec, CLASSIFIERS, "an image classifier")(spec, engine, **kw)  # type: ignore[call-arg,return-value]
