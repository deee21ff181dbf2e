"""The ``cpu`` engine kind: LiteRT with XNNPACK on the CPU (``[engine.cpu]``)."""
from __future__ import annotations

from typing import ClassVar, Optional, Sequence

from edgepipe.models.engines.engine import Engine, FaultCounter
from edgepipe.models.engines.kinds import EngineKind, Threads
from edgepipe.models.engines.litert import make_litert_engine
from edgepipe.models.spec import ModelSpec


class CpuEngineSettings(EngineKind, tag="cpu"):
    """LiteRT (ai-edge-litert, else tflite-runtime) with XNNPACK, running the CPU model files."""

    rank: ClassVar[int] = 20

    threads: Threads = 1

    def build(self, spec: ModelSpec, *, model_paths: Sequence[str] = (),
              faults: Optional[FaultCounter] = None) -> Engine:
        return make_litert_engine("cpu", spec, threads=self.threads, model_paths=model_paths)
