"""The ``fake`` engine kind: emulated Edge TPUs with the timings of real ones (``[engine.fake]``)."""
from __future__ import annotations

import threading
from typing import Annotated, ClassVar, Dict, List, Optional, Sequence, Tuple

from msgspec import Meta

from edgepipe.models.engines.devices import DEFAULT_SWITCH_MS_PER_MB, DeviceModel, DevicePool
from edgepipe.models.engines.engine import Engine, FaultCounter, FaultPlan
from edgepipe.models.engines.fake import FakeEngine, Vanishing, fake_pool
from edgepipe.models.engines.kinds import EngineKind
from edgepipe.models.spec import ModelSpec


class FakeEngineSettings(EngineKind, tag="fake"):
    """Fake Edge TPUs: no model file, deterministic outputs, each device running one invoke at a time after
    the model's measured Edge TPU time, like a real one; for tests and benchmarks."""

    rank: ClassVar[int] = 10

    devices: Annotated[int, Meta(ge=1, le=16, description=(
        "fake Edge TPUs (fake:0 .. fake:N-1); each runs one invoke at a time, like a real one"))] = 1
    latency_ms: Annotated[Dict[str, Annotated[float, Meta(ge=0, le=600000)]], Meta(description=(
        "per-model invoke time in ms, e.g. { \"coral-ssd-face\" = 8.16, \"fer64\" = 6.47 }; a model not listed "
        "takes its Edge TPU time measured by the reference project (the manifest's tpu_ms)"))] = {}
    switch_ms_per_mb: Annotated[float, Meta(ge=0, le=1000, description=(
        "a model switch on a device reloads the new model's parameters (8 MB cache), at this cost per MB"))] = \
        DEFAULT_SWITCH_MS_PER_MB
    cocompiled: Annotated[List[List[str]], Meta(description=(
        "groups of models compiled together, e.g. [[\"coral-ssd-face\", \"fer112\"]]: they switch free"))] = []
    faults: Annotated[Dict[str, FaultPlan], Meta(description=(
        "faults per actor, for tests and benchmarks: actor name (\"detector\", \"fer-0\", \"encoder\") -> a "
        "table of raise_every, hang_after, hang_count, slow_every, slow_ms (each 0 = never)"))] = {}
    vanish_after: Annotated[int, Meta(ge=0, le=1 << 31, description=(
        "each fake device is gone after this many invokes, as a USB Coral that resets or is unplugged: every "
        "invoke and every load on it fails until it is back (0 = never); tests and benchmarks of fail-over"))] = 0
    back_after_s: Annotated[float, Meta(ge=0, le=86400, description=(
        "a fake device that went (vanish_after) is back this many seconds later (0 = never)"))] = 0.0

    def vanishing(self) -> Optional[Vanishing]:
        """When the devices of these settings go and come back: one schedule shared by every engine built from
        this settings object (one run's), None when they never go."""
        if not self.vanish_after:
            return None
        with _VANISHING_LOCK:
            found = _VANISHING.get(id(self))
            if found is None or found[0] is not self:
                found = _VANISHING[id(self)] = (self, Vanishing(self.vanish_after, self.back_after_s))
            return found[1]

    def device_model(self, spec: ModelSpec) -> DeviceModel:
        partners = frozenset(n for group in self.cocompiled if spec.name in group for n in group)
        ms = self.latency_ms.get(spec.name, spec.tpu_ms)
        return DeviceModel(spec.name, spec.tpu_param_mb, partners - {spec.name}, est_ms=ms or 5.0)

    def device_names(self) -> List[str]:
        return ["fake:%d" % i for i in range(self.devices)]

    def open_pool(self) -> DevicePool:
        return fake_pool(self.devices, switch_ms_per_mb=self.switch_ms_per_mb)

    def fault_plan(self, actor: str) -> Optional[FaultPlan]:
        return self.faults.get(actor)

    def build(self, spec: ModelSpec, *, model_paths: Sequence[str] = (),
              faults: Optional[FaultCounter] = None) -> Engine:
        return FakeEngine(spec, latency_ms=self.latency_ms.get(spec.name), faults=faults,
                          open_pool=self.open_pool, device_model=self.device_model(spec), vanishing=self.vanishing())


# settings object (by id, kept alive here so that its id is not reused) -> its devices' schedule
_VANISHING: Dict[int, Tuple[FakeEngineSettings, Vanishing]] = {}
_VANISHING_LOCK = threading.Lock()
