"""The settings of each engine kind, chosen by a ``type`` key (as Frigate's detector plugins are).

One msgspec Struct per kind (``fake``, ``cpu``, ``edgetpu``) in a tagged union
(``tag_field="type"``). Each class holds the keys of its ``[engine.KIND]``
table of the config (with their ranges), builds its engine and opens its
device pool, so adding an engine kind is adding one class here (and its table
in ``config.toml``). ``engine_kind(data)`` reads plain data by its ``type``; an
unknown type or a key of another kind is an ``EngineError`` naming it.

Settings are plans: the faults a fake engine injects are ``FaultPlan`` s and the
invokes are counted by the ``FaultCounter`` of the actor that owns the engine.
"""
from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import msgspec
from msgspec import Meta

from edgepipe.models.engines.devices import DEFAULT_SWITCH_MS_PER_MB, DeviceModel, DevicePool
from edgepipe.models.engines.engine import Engine, EngineError, FaultCounter, FaultPlan
from edgepipe.models.engines.fake import FakeEngine, fake_pool
from edgepipe.models.engines.litert import edgetpu_pool, make_litert_engine
from edgepipe.models.spec import ModelSpec

Threads = Annotated[int, Meta(ge=1, le=64)]


class EngineKind(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """The settings of one engine kind; a subclass per kind, tagged with the kind's name."""

    @property
    def kind(self) -> str:
        return str(self.__struct_config__.tag)

    def device_model(self, spec: ModelSpec) -> DeviceModel:
        """How ``spec`` occupies a device (its parameters, its expected time)."""
        return DeviceModel(spec.name, spec.tpu_param_mb, est_ms=spec.tpu_ms or 5.0)

    def device_names(self) -> List[str]:
        """The devices an engine of this kind runs on (none: the CPU)."""
        return []

    def open_pool(self) -> Optional[DevicePool]:
        """The devices this kind runs on, claimed for this process (None: the CPU)."""
        return None

    def for_group(self, tpu: str) -> "EngineKind":
        """These settings in a process group that owns accelerator ``tpu`` ("" = none named)."""
        return self

    def fault_plan(self, actor: str) -> Optional[FaultPlan]:
        """The faults ``actor`` asked for (only the fake engine injects any)."""
        return None

    def build(self, spec: ModelSpec, *, model_paths: Sequence[str] = (),
              faults: Optional[FaultCounter] = None) -> Engine:
        """An unloaded engine of this kind for ``spec``."""
        raise NotImplementedError


class FakeEngineSettings(EngineKind, tag="fake"):
    devices: Annotated[int, Meta(ge=1, le=16)] = 1  # fake Edge TPUs (fake:0 .. fake:N-1)
    # model name -> ms (default: the model's TPU time)
    latency_ms: Dict[str, Annotated[float, Meta(ge=0, le=600000)]] = {}
    switch_ms_per_mb: Annotated[float, Meta(ge=0, le=1000)] = DEFAULT_SWITCH_MS_PER_MB  # reload on a model switch
    cocompiled: List[List[str]] = []  # groups of models compiled together (switch free)
    faults: Dict[str, FaultPlan] = {}  # actor name ("fer-0", "detector", "encoder") -> faults

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
                          open_pool=self.open_pool, device_model=self.device_model(spec))


class CpuEngineSettings(EngineKind, tag="cpu"):
    threads: Threads = 1  # LiteRT interpreter threads

    def build(self, spec: ModelSpec, *, model_paths: Sequence[str] = (),
              faults: Optional[FaultCounter] = None) -> Engine:
        return make_litert_engine("cpu", spec, threads=self.threads, model_paths=model_paths)


class EdgeTpuEngineSettings(EngineKind, tag="edgetpu"):
    devices: List[str] = msgspec.field(default_factory=lambda: [""])  # "" (the first found), "usb:0", "pci:0"
    fallback: Literal["", "cpu"] = ""  # "cpu": the CPU model when no Edge TPU is found
    threads: Threads = 1  # CPU threads of a model run on the CPU instead (fallback, or no Edge TPU file)

    def device_names(self) -> List[str]:
        return ["edgetpu:%s" % d for d in (self.devices or [""])]

    def open_pool(self) -> DevicePool:
        return edgetpu_pool(self.devices)

    def for_group(self, tpu: str) -> "EngineKind":
        return msgspec.structs.replace(self, devices=[tpu]) if tpu else self

    def build(self, spec: ModelSpec, *, model_paths: Sequence[str] = (),
              faults: Optional[FaultCounter] = None) -> Engine:
        return make_litert_engine("edgetpu", spec, threads=self.threads, device=(self.devices or [""])[0],
                                  fallback=self.fallback, model_paths=model_paths, open_pool=self.open_pool)


AnyEngineKind = Union[FakeEngineSettings, CpuEngineSettings, EdgeTpuEngineSettings]
KINDS: Dict[str, Any] = {cls.__struct_config__.tag: cls for cls in AnyEngineKind.__args__}  # type: ignore[attr-defined]
ENGINE_KINDS: Tuple[str, ...] = tuple(KINDS)


def engine_kind(data: Dict[str, Any]) -> EngineKind:
    """Plain data with a ``type`` key -> the settings of that kind; EngineError naming a bad type or key."""
    kind = data.get("type")
    cls = KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise EngineError("engine type %r is unknown (known: %s)" % (kind, ", ".join(ENGINE_KINDS)))
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        field = str(exc).partition("unknown field `")[2].rstrip("`")
        if field:
            raise EngineError("engine type %r has no key %r (its keys: %s)"
                              % (kind, field, ", ".join(cls.__struct_fields__))) from None
        raise EngineError("engine type %r: %s" % (kind, exc)) from None
