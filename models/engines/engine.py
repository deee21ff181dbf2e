"""The engine interface: one engine runs one model.

An engine is loaded once, then ``invoke`` is called from a single worker
thread (one interpreter per thread). ``invoke`` is blocking and is always run
off the event loop by the actor that owns the engine.

Everything here must run on Python 3.9 (the TPU-side interpreter).
"""
from __future__ import annotations

import abc
import threading
from typing import Annotated, Dict, List, Optional, Sequence

import msgspec
import numpy as np
from msgspec import Meta

from edgepipe.models.engines.devices import DevicePool
from edgepipe.models.errors import \
    EngineError  # noqa: F401  (re-exported: it lives apart so that devices.py can raise it)
from edgepipe.models.spec import ModelSpec
from edgepipe.models.tensor import TensorSpec  # re-exported too: it lives apart so that spec.py can use it

Count = Annotated[int, Meta(ge=0, le=1 << 31)]


class FaultPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Faults a test or benchmark asks for (honoured by the fake engine and the encoder): settings only.

    The invokes are counted by a ``FaultCounter`` that the actor owns, so a plan is shared freely and
    an actor that reloads its engine after a hang keeps counting where it was.
    """

    raise_every: Count = 0  # raise on every Nth invoke (0 = never)
    hang_after: Count = 0  # the Nth invoke hangs until close() (0 = never) ...
    hang_count: Count = 0  # ... and so do the next ones, this many in all (0 = all of them)
    slow_every: Count = 0  # every Nth invoke takes slow_ms longer
    slow_ms: Annotated[float, Meta(ge=0, le=600000)] = 0.0

    def raises(self, n: int) -> bool:
        return bool(self.raise_every) and n % self.raise_every == 0

    def hangs(self, n: int) -> bool:
        if not self.hang_after or n < self.hang_after:
            return False
        return self.hang_count == 0 or n < self.hang_after + self.hang_count

    def extra_s(self, n: int) -> float:
        """The time invoke ``n`` takes on top of the usual."""
        return self.slow_ms / 1000.0 if self.slow_every and n % self.slow_every == 0 else 0.0


class FaultCounter:
    """The runtime state of a ``FaultPlan``: the calls so far (thread-safe)."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.calls = 0
        self._lock = threading.Lock()

    def next_call(self) -> int:
        with self._lock:
            self.calls += 1
            return self.calls


class Engine(abc.ABC):
    """Runs one model. Subclasses: fake, cpu (LiteRT), edgetpu."""

    kind = "abstract"

    def __init__(self, model: "ModelSpec") -> None:
        self.model = model
        self.invocations = 0
        self._inputs: List[TensorSpec] = []  # set by load()
        self._outputs: List[TensorSpec] = []
        self.pool: Optional["DevicePool"] = None  # the accelerator devices it runs on (None: the CPU)

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model and set its tensor specs; raise EngineError with a clear message on failure."""

    @property
    def inputs(self) -> List[TensorSpec]:
        """Input tensor specs (available after load)."""
        return self._inputs

    @property
    def outputs(self) -> List[TensorSpec]:
        """Output tensor specs (available after load)."""
        return self._outputs

    @abc.abstractmethod
    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run the model on tensors shaped like ``inputs``; blocking."""

    def invoke_batch(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run the model on a batch (inputs' first dimension N); outputs with first dimension N.

        The default runs N invokes of one (an Edge TPU runs one at a time anyway); the CPU engine
        resizes its input to N and runs one invoke where the model allows it.
        """
        n = int(np.shape(inputs[0])[0])
        outs = [self.invoke([x[i:i + 1] for x in inputs]) for i in range(n)]
        return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))] if outs else []

    def close(self) -> None:
        """Release the model; safe to call twice."""

    @property
    def device_names(self) -> List[str]:
        return self.pool.names if self.pool is not None else []

    def describe(self) -> Dict[str, object]:
        return {"engine": self.kind, "model": getattr(self.model, "name", "?")}

