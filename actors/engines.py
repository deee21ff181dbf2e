"""How an actor gets and runs its engine.

``EngineSettings`` comes from the config; ``EngineHost`` owns one engine and
the single thread that loads and invokes it (one interpreter per thread), runs
blocking calls off the event loop with an optional time limit, and restarts
the engine when a call hangs (the watchdog of the detector and FER workers).

Python 3.9 compatible.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

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


def load_engine(settings: EngineSettings, spec: ModelSpec, actor: str) -> Engine:
    """Build and load (blocking; call it in the thread that will invoke the engine)."""
    engine = settings.build(spec, actor)
    engine.load()
    return engine


class EngineHost:
    """One engine, its thread, and a restart for when it hangs."""

    def __init__(self, settings: EngineSettings, spec: ModelSpec, actor: str,
                 wrap: Callable[[Engine], Any] = lambda e: e) -> None:
        self.settings = settings
        self.spec = spec
        self.actor = actor
        self.wrap = wrap  # engine -> the model family object the actor calls
        self.executor: Optional[ThreadPoolExecutor] = None
        self.engine: Optional[Engine] = None
        self.model: Any = None
        self.restarts = 0

    async def load(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.actor)
        loop = asyncio.get_running_loop()
        self.engine = await loop.run_in_executor(self.executor, load_engine, self.settings, self.spec, self.actor)
        self.model = self.wrap(self.engine)

    async def call(self, fn: Callable[..., Any], *args: Any, timeout: Optional[float] = None) -> Any:
        """Run ``fn(*args)`` in the engine's thread; asyncio.TimeoutError after ``timeout`` seconds."""
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    async def restart(self) -> None:
        """Abandon the engine and its (maybe hung) thread; load a fresh one."""
        self.close()
        self.restarts += 1
        await self.load()

    def close(self) -> None:
        """Release the engine (which frees a hung fake invoke) and the thread. Safe twice."""
        engine, executor = self.engine, self.executor
        self.engine = self.executor = None
        if engine is not None:
            engine.close()
        if executor is not None:
            executor.shutdown(wait=False)
