"""The sections of ``config.toml``: one msgspec Struct per table, refusing unknown keys.

An actor's own section is defined beside it (``DetectorConfig`` in ``actors/detector.py``, ...) and
the actor takes it whole; the sections of the pipeline as a whole are here, and ``Config`` puts them
all together. Ranges and choices are ``msgspec.Meta`` constraints and ``Literal`` types. The
``[engine.KIND]`` tables are the engine kinds' own settings classes
(``models/engines/kinds.py``) and fault plans are ``models.engines.engine.FaultPlan``:
one class each, shared by the config and the engines. Loading, overlaying and
the checks that span several keys are in ``pipeline/config/loading.py``.

Sections are mutable; copy one with ``msgspec.structs.replace`` and list the
endpoints with ``endpoint_names()`` (``dataclasses`` does not apply).
"""
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, get_args

import msgspec
from msgspec import Meta

from edgepipe.actors.aggregator import AggregatorConfig
from edgepipe.actors.capture import CaptureConfig
from edgepipe.actors.classifier import ClassifierConfig
from edgepipe.actors.detector import DetectorConfig
from edgepipe.actors.encoder import EncoderConfig
from edgepipe.actors.fer import FerConfig
from edgepipe.actors.monitoring.resources import ResourcesConfig
from edgepipe.actors.runtime.settings import Hwm, Section, TimeoutMs  # noqa: F401  (shared value types)
from edgepipe.actors.sinks.display import DisplayConfig
from edgepipe.actors.sinks.mqtt_payloads import MqttConfig
from edgepipe.models.engines.kinds import (ENGINE_KINDS, CpuEngineSettings, EdgeTpuEngineSettings, EngineKind,
                                           FakeEngineSettings)

Engine = Literal[("auto",) + ENGINE_KINDS]  # type: ignore[valid-type]  # auto, fake, cpu, edgetpu
Placement = Literal[("", "auto") + ENGINE_KINDS]  # type: ignore[valid-type]  # "" follows pipeline.engine
ENGINES: Tuple[str, ...] = get_args(Engine)
PLACEMENTS: Tuple[str, ...] = get_args(Placement)


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the key path."""


class PipelineConfig(Section):
    profile: str = "fd+fer64"
    engine: Engine = "auto"  # Edge TPU when found, else the CPU when the models are there, else fake
    source: str = "auto"  # Picamera2 when a camera is attached, else the first V4L2 node that captures, else demo
    display: str = "none"
    drain_timeout_s: Annotated[float, Meta(ge=0.1, le=600)] = 5.0


class BusConfig(Section):
    max_header_kb: Annotated[int, Meta(ge=1, le=1 << 20)] = 1024
    max_image_mb: Annotated[int, Meta(ge=1, le=4096)] = 64
    metrics_interval_s: Annotated[float, Meta(ge=0.05, le=3600)] = 1.0


class EndpointsConfig(Section):
    frames: str = "inproc://frames"
    encoded: str = "inproc://encoded"
    detections: str = "inproc://detections"
    facejobs: str = "inproc://facejobs"
    expressions: str = "inproc://expressions"
    results: str = "ipc://{run}/results"  # public: outside clients subscribe here
    metrics_in: str = "inproc://metrics-in"
    metrics: str = "ipc://{run}/metrics"  # public: `python run.py metrics` attaches here
    control: str = "inproc://control"  # groups report ready / stopped here


def endpoint_names() -> Tuple[str, ...]:
    """The endpoint keys (``frames``, ``encoded``, ... ``control``), in declaration order."""
    return EndpointsConfig.__struct_fields__


def expand_endpoints(cfg: "Config", rundir: Any) -> "Config":
    """A copy of ``cfg`` whose ``ipc://{run}/...`` endpoints are in the run's folder (``bus.rundir.RunDir``)."""
    eps = msgspec.structs.replace(cfg.endpoints)
    for name in endpoint_names():
        setattr(eps, name, rundir.expand(getattr(eps, name)))
    return msgspec.structs.replace(cfg, endpoints=eps)
















class AutoEngineConfig(Section):
    accelerator: Literal["edgetpu", "fake"] = "edgetpu"  # what auto may use
    faces: Annotated[int, Meta(ge=1, le=64)] = 3  # faces per frame that auto plans for
    table: str = ""  # per-model timings (JSON of `bench models`); default: this machine's cached table


class PlacementConfig(Section):
    """Where each role runs: "" follows pipeline.engine; auto | fake | cpu | edgetpu."""

    detector: Placement = ""
    fer: Placement = ""
    classifier: Placement = ""


class EngineConfig(Section):
    """``[engine.KIND]``: the settings of each engine kind (``models/engine_kinds.py``, one class per kind;
    the table's name is its ``type``) and how ``auto`` chooses among them."""

    fake: FakeEngineSettings = msgspec.field(default_factory=FakeEngineSettings)
    cpu: CpuEngineSettings = msgspec.field(default_factory=CpuEngineSettings)
    edgetpu: EdgeTpuEngineSettings = msgspec.field(default_factory=EdgeTpuEngineSettings)
    auto: AutoEngineConfig = msgspec.field(default_factory=AutoEngineConfig)

    def settings(self, kind: str) -> EngineKind:
        """The settings of engine ``kind`` (fake, cpu, edgetpu)."""
        if kind not in ENGINE_KINDS:
            raise ConfigError("engine %r has no settings (engine kinds: %s)" % (kind, ", ".join(ENGINE_KINDS)))
        return getattr(self, kind)


class ModelsConfig(Section):
    paths: List[str] = []


class ProfileModels(Section):
    detector: str = ""
    fer: str = ""
    classifier: str = ""


class ProfileConfig(Section):
    description: str = ""
    detector: str = ""
    fer: str = ""
    classifier: str = ""
    by_engine: Dict[str, ProfileModels] = {}

    def models(self, engine: str) -> ProfileModels:
        o = self.by_engine.get(engine, ProfileModels())
        return ProfileModels(o.detector or self.detector, o.fer or self.fer, o.classifier or self.classifier)


class GroupConfig(Section):
    """A child process: the actors it runs, the Python that runs it, its environment."""

    actors: List[str] = []
    python: str = ""  # default: the interpreter running run.py
    env: Dict[str, str] = {}
    tpu: str = ""  # the Edge TPU device this group owns ("usb:0", "pci:0"); default engine.edgetpu.devices
    spawn: bool = True  # false: started by hand (`python run.py group NAME`), maybe on another host
    startup_timeout_s: Annotated[float, Meta(ge=1, le=3600)] = 60.0




class SecurityConfig(Section):
    keys_dir: str = ""  # CURVE keys from `python run.py keys DIR`; required for non-loopback tcp://




class Config(Section):
    pipeline: PipelineConfig = msgspec.field(default_factory=PipelineConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    endpoints: EndpointsConfig = msgspec.field(default_factory=EndpointsConfig)
    capture: CaptureConfig = msgspec.field(default_factory=CaptureConfig)
    encoder: EncoderConfig = msgspec.field(default_factory=EncoderConfig)
    detector: DetectorConfig = msgspec.field(default_factory=DetectorConfig)
    fer: FerConfig = msgspec.field(default_factory=FerConfig)
    classifier: ClassifierConfig = msgspec.field(default_factory=ClassifierConfig)
    aggregator: AggregatorConfig = msgspec.field(default_factory=AggregatorConfig)
    display: DisplayConfig = msgspec.field(default_factory=DisplayConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    placement: PlacementConfig = msgspec.field(default_factory=PlacementConfig)
    models: ModelsConfig = msgspec.field(default_factory=ModelsConfig)
    profiles: Dict[str, ProfileConfig] = {}
    groups: Dict[str, GroupConfig] = {}
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    resources: ResourcesConfig = msgspec.field(default_factory=ResourcesConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)

    def profile(self) -> ProfileConfig:
        name = self.pipeline.profile
        if name not in self.profiles:
            raise ConfigError("pipeline.profile: unknown profile %r; known: %s"
                              % (name, ", ".join(sorted(self.profiles)) or "none"))
        return self.profiles[name]

