"""The sections of ``config.toml``: one msgspec Struct per table, refusing unknown keys.

Ranges and choices are ``msgspec.Meta`` constraints and ``Literal`` types. The
``[engine.KIND]`` tables are the engine kinds' own settings classes
(``models/engine_kinds.py``) and fault plans are ``models.engine.FaultPlan``:
one class each, shared by the config and the engines. Loading, overlaying and
the checks that span several keys are in ``pipeline/config.py``.

Sections are mutable; copy one with ``msgspec.structs.replace`` and list the
endpoints with ``endpoint_names()`` (``dataclasses`` does not apply).
"""
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, get_args

import msgspec
from msgspec import Meta

from edgepipe.models.engines.kinds import (ENGINE_KINDS, CpuEngineSettings, EdgeTpuEngineSettings, EngineKind,
                                           FakeEngineSettings)

Engine = Literal[("auto",) + ENGINE_KINDS]  # type: ignore[valid-type]  # auto, fake, cpu, edgetpu
Placement = Literal[("", "auto") + ENGINE_KINDS]  # type: ignore[valid-type]  # "" follows pipeline.engine
ENGINES: Tuple[str, ...] = get_args(Engine)
PLACEMENTS: Tuple[str, ...] = get_args(Placement)

Hwm = Annotated[int, Meta(ge=1, le=10000)]  # a socket's high-water mark (messages)
TimeoutMs = Annotated[float, Meta(ge=1, le=600000)]


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the key path."""


class Section(msgspec.Struct, forbid_unknown_fields=True):
    """A table of the config: unknown keys are refused."""


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


class CaptureConfig(Section):
    hwm: Hwm = 16
    loop: bool = True  # image folders and files loop; videos stop at their end
    max_in_flight: Annotated[int, Meta(ge=1, le=1000)] = 4  # recorded sources: frames between capture and result
    read_timeout_s: Annotated[float, Meta(ge=0.05, le=600)] = 5.0  # a camera or stream silent this long reconnects
    reconnect_max_s: Annotated[float, Meta(ge=0.05, le=3600)] = 10.0  # longest wait between reconnect attempts


class EncoderConfig(Section):
    format: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: Annotated[int, Meta(ge=1, le=100)] = 85
    hwm: Hwm = 16


class DetectorConfig(Section):
    # None: each model's own threshold (manifest ``min_score``, set from ``run.py bench detectors``)
    score_threshold: Optional[Annotated[float, Meta(ge=0.0, le=1.0)]] = None
    max_faces: Annotated[int, Meta(ge=1, le=256)] = 16
    hwm: Hwm = 4
    freshest: bool = True  # drop stale frames (counted) and work on the newest
    depth: Annotated[int, Meta(ge=1, le=8)] = 2  # frames worked on at once (pre/post overlap the invoke)
    invoke_timeout_ms: TimeoutMs = 2000.0  # watchdog: reload a stuck engine


class ClassifierConfig(Section):
    top_k: Annotated[int, Meta(ge=1, le=100)] = 5
    birds_only: bool = False  # keep ImageNet's bird classes only (profile cls)


class FerConfig(Section):
    workers: Annotated[int, Meta(ge=1, le=64)] = 2
    depth: Annotated[int, Meta(ge=1, le=8)] = 2  # jobs in flight per worker
    hwm: Hwm = 8
    invoke_timeout_ms: TimeoutMs = 2000.0
    # each worker in a child process of its own (group fer-K), so that CPU workers use separate cores
    processes: bool = False


class AggregatorConfig(Section):
    deadline_ms: TimeoutMs = 500.0
    ordered: bool = True  # hold results back to leave in frame order
    smoothing: Annotated[int, Meta(ge=1, le=100)] = 5  # rolling majority vote over N frames per track


class DisplayConfig(Section):
    hwm: Hwm = 4
    frame_buffer: Annotated[int, Meta(ge=1, le=10000)] = 64
    fps: Annotated[float, Meta(ge=1, le=240)] = 30.0  # frame rate written into a video file


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


class ResourcesConfig(Section):
    """Where the Raspberry Pi's sensors are read (a sensor the machine lacks is left out)."""

    sysfs_root: str = "/"  # thermal_zone0 is read under SYSFS_ROOT/sys/class/thermal
    vcgencmd: List[str] = msgspec.field(default_factory=lambda: ["vcgencmd"])  # get_throttled, pmic_read_adc


class SecurityConfig(Section):
    keys_dir: str = ""  # CURVE keys from `python run.py keys DIR`; required for non-loopback tcp://


class MqttConfig(Section):
    """MQTT out (``--mqtt mqtt://[USER:PASS@]HOST[:PORT]``): results, face events, metrics, HA discovery."""

    host: str = ""  # "" = MQTT off
    port: Annotated[int, Meta(ge=1, le=65535)] = 1883
    user: str = ""
    password: str = ""
    tls: bool = False  # mqtts://
    ca_file: str = ""  # CA bundle for the broker's certificate ("" = the system's)
    tls_insecure: bool = False  # do not check the broker's certificate or host name
    client_id: str = ""  # default edgepipe-NAME
    name: str = ""  # this camera/pipeline; default the host name
    topic_prefix: str = ""  # default edgepipe/NAME
    qos: Annotated[int, Meta(ge=0, le=2)] = 1
    results_hz: Annotated[float, Meta(ge=0, le=1000)] = 2.0  # per-frame results at most this often; 0 = none
    summary_interval_s: Annotated[float, Meta(ge=0.1, le=86400)] = 10.0
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    queue: Annotated[int, Meta(ge=1, le=1000000)] = 1000  # messages held while the broker is away (oldest dropped)
    reconnect_min_s: Annotated[float, Meta(ge=0.01, le=3600)] = 0.5
    reconnect_max_s: Annotated[float, Meta(ge=0.01, le=3600)] = 30.0


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

