"""How an actor gets its engine: settings from the config, loading in the actor's thread.

Python 3.9 compatible.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from models.engine import Engine, EngineFaults
from models.registry import make_engine
from models.spec import ModelSpec


@dataclass
class EngineSettings:
    """Everything needed to build an engine; one per pipeline, shared by actors."""

    kind: str = "fake"
    latency_ms: Dict[str, float] = field(default_factory=dict)  # fake engine, per model name
    faults: Dict[str, EngineFaults] = field(default_factory=dict)  # fake engine, per actor name
    threads: int = 1
    device: str = ""
    fallback: str = ""
    model_paths: List[str] = field(default_factory=list)

    def build(self, spec: ModelSpec, actor: str) -> Engine:
        return make_engine(self.kind, spec, latency_ms=self.latency_ms.get(spec.name),
                           faults=self.faults.get(actor), threads=self.threads, device=self.device,
                           fallback=self.fallback, model_paths=self.model_paths)


def load_engine(settings: EngineSettings, spec: ModelSpec, actor: str,
                executor: Optional[ThreadPoolExecutor] = None) -> Engine:
    """Build and load (blocking; call it in the thread that will invoke the engine)."""
    engine = settings.build(spec, actor)
    engine.load()
    return engine
