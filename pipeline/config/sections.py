"""The sections of the config: one msgspec Struct per table, refusing unknown keys; the one place of every default.

An actor's own section is defined beside it (``DetectorConfig`` in ``actors/detector.py``, ...) and
the actor takes it whole; the sections of the pipeline as a whole are here, and ``Config`` puts them
all together. Every key's default is its field's default and its description is its ``msgspec.Meta``
description (``python run.py config --defaults`` prints them as TOML, ``docs/config.md`` lists them);
``config.toml`` holds only the profiles. Ranges and choices are ``msgspec.Meta`` constraints and
``Literal`` types. The ``[engine.KIND]`` tables are the engine kinds' own settings classes (one file per
kind beside ``models/engines/kinds.py``, which registers them) and fault plans are
``models.engines.engine.FaultPlan``: one class each, shared by the config and the engines. Loading,
overlaying and the checks that span several keys are in ``pipeline/config/loading.py``.

Sections are mutable; copy one with ``msgspec.structs.replace`` and list the
endpoints with ``endpoint_names()`` (``dataclasses`` does not apply).
"""
from typing import Annotated, Any, Dict, List, Literal, Tuple, get_args

import msgspec
from msgspec import Meta

from edgepipe.actors.aggregator import AggregatorConfig
from edgepipe.actors.capture import CaptureConfig
from edgepipe.actors.classifier import ClassifierConfig
from edgepipe.actors.detector import DetectorConfig
from edgepipe.actors.encoder import EncoderConfig
from edgepipe.actors.fer import FerConfig
from edgepipe.actors.monitoring.resources import ResourcesConfig
from edgepipe.actors.roles import BY_NAME, ENGINE_ROLES
from edgepipe.actors.runtime.settings import Hwm, Section, TimeoutMs  # noqa: F401  (shared value types)
from edgepipe.actors.sinks.display import DisplayConfig
from edgepipe.actors.sinks.mqtt_payloads import MqttConfig
from edgepipe.models.engines.kinds import EngineKind, engine_kinds, kinds

ENGINE_KINDS = engine_kinds()  # the registered engine kinds: fake, cpu, edgetpu, then any others
Engine = Literal[("auto",) + ENGINE_KINDS]  # type: ignore[valid-type]  # auto, fake, cpu, edgetpu
Placement = Literal[("", "auto") + ENGINE_KINDS]  # type: ignore[valid-type]  # "" follows pipeline.engine
ENGINES: Tuple[str, ...] = get_args(Engine)
PLACEMENTS: Tuple[str, ...] = get_args(Placement)


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the key path."""


class PipelineConfig(Section):
    """What runs: the profile, the engine, the source and the live view."""

    profile: Annotated[str, Meta(description=(
        "the models that run: a profile of [profiles.*] (fd+fer64, fd+fer64-fast, fd+fer112, fd, cls, cls-imagenet)"))] = "fd+fer64"
    engine: Annotated[Engine, Meta(description=(
        "the engine of every role unless [placement] says: auto | fake | cpu | edgetpu; auto: the Edge TPU when "
        "one is found, else the CPU when the models are there, else fake"))] = "auto"
    source: Annotated[str, Meta(description=(
        "auto: Picamera2 when a camera is attached, else the first V4L2 node that captures, else the demo clip; "
        "or demo | demo:unpaced | synthetic[:faces=N,fps=F,size=WxH] | dir:PATH | IMAGE | video:PATH | "
        "picamera2[:WxH] | v4l2:N | rtsp://... | http://... (MJPEG)"))] = "auto"
    display: Annotated[str, Meta(description=(
        "the live view: none | window | file:PATH.mp4 | web | web:[HOST:]PORT (web = 127.0.0.1:8080)"))] = "none"
    drain_timeout_s: Annotated[float, Meta(ge=0.1, le=600, description=(
        "after the last frame, how long to wait for the frames in flight (at most 1.5 s after Ctrl-C)"))] = 5.0
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description=(
        "the pipeline's name on this host (letters, digits, . _ -; at most 64): its public endpoints are "
        "ipc://{pipeline}/results and /metrics, {pipeline} = the run directory base/NAME, known before it starts "
        "(`python run.py endpoints --name NAME`); a second pipeline of the same name on the host is refused"))] = \
        "default"


class BusConfig(Section):
    """Limits of the messages between actors, and how often actors report metrics."""

    max_header_kb: Annotated[int, Meta(ge=1, le=1 << 20, description=(
        "the largest msgpack header accepted, in KiB"))] = 1024
    max_image_mb: Annotated[int, Meta(ge=1, le=4096, description="the largest image frame accepted, in MiB")] = 64
    metrics_interval_s: Annotated[float, Meta(ge=0.05, le=3600, description=(
        "how often each actor (and the resource monitor) sends a metrics snapshot"))] = 1.0


class EndpointsConfig(Section):
    """Where the actors meet: inproc:// within one process, ipc:// between processes on one host, tcp:// across
    hosts. ipc://{pipeline}/NAME is in the folder of the pipeline's name (pipeline.name), ipc://{run}/NAME in
    this run's own folder (both mode 0700, removed at exit), under $EDGEPIPE_RUN_DIR, else
    $XDG_RUNTIME_DIR/edgepipe, else /tmp/edgepipe-UID (then NAME/ or PID-XXXX/); `python run.py endpoints` prints
    the public ones, and `python run.py metrics --name NAME` finds them. An inproc:// endpoint used by actors of
    more than one process becomes ipc://{run}/NAME. A tcp:// endpoint reachable from other hosts needs CURVE
    keys (security.keys_dir); loopback tcp:// (e.g. "tcp://127.0.0.1:5590") needs none."""

    frames: Annotated[str, Meta(description="capture -> encoder and display: the raw frames")] = "inproc://frames"
    encoded: Annotated[str, Meta(description=(
        "encoder -> detector or classifier: the frames in the encoder's format"))] = "inproc://encoded"
    detections: Annotated[str, Meta(description=(
        "detector or classifier -> aggregator: each frame's faces or classes"))] = "inproc://detections"
    facejobs: Annotated[str, Meta(description=(
        "detector -> FER workers (PUSH/PULL): one face crop per job"))] = "inproc://facejobs"
    expressions: Annotated[str, Meta(description=(
        "FER workers -> aggregator: each face's expression"))] = "inproc://expressions"
    results: Annotated[str, Meta(description=(
        "public: the finished frames; outside clients subscribe here (`python run.py endpoints` prints it)"))] = \
        "ipc://{pipeline}/results"
    metrics_in: Annotated[str, Meta(description=(
        "every actor -> the metrics hub: metrics snapshots"))] = "inproc://metrics-in"
    metrics: Annotated[str, Meta(description=(
        "public: the metrics hub publishes here; `python run.py metrics` attaches"))] = \
        "ipc://{pipeline}/metrics"
    control: Annotated[str, Meta(description=(
        "process groups report ready and stopped to the main process here"))] = "inproc://control"


def endpoint_names() -> Tuple[str, ...]:
    """The endpoint keys (``frames``, ``encoded``, ... ``control``), in declaration order."""
    return EndpointsConfig.__struct_fields__


def expand_endpoints(cfg: "Config", rundir: Any) -> "Config":
    """A copy of ``cfg`` whose ``ipc://{run}/...`` (or ``{pipeline}``) endpoints are in ``rundir``'s folder
    (``bus.rundir.RunDir``, ``PipelineDir``)."""
    eps = msgspec.structs.replace(cfg.endpoints)
    for name in endpoint_names():
        setattr(eps, name, rundir.expand(getattr(eps, name)))
    return msgspec.structs.replace(cfg, endpoints=eps)
















class AutoEngineConfig(Section):
    """How engine auto places each role: where the per-model table predicts the whole pipeline is fastest."""

    accelerator: Annotated[Literal["edgetpu", "fake"], Meta(description=(
        "what auto may use besides the CPU: edgetpu (when one is found) | fake"))] = "edgetpu"
    faces: Annotated[int, Meta(ge=1, le=64, description="faces per frame that auto plans for")] = 3
    table: Annotated[str, Meta(description=(
        "per-model timings (the JSON of `python run.py bench models`); \"\": this machine's table cached by "
        "`bench models`, else the reference timings"))] = ""


# ``[placement]``: one key per role of the table that runs a model (detector, fer, classifier)
PlacementConfig = msgspec.defstruct(
    "PlacementConfig", [(name, Annotated[Placement, Meta(description="%s's engine" % BY_NAME[name].about)], "")
                        for name in ENGINE_ROLES],
    bases=(Section,), module=__name__)
PlacementConfig.__doc__ = """Where each role runs: "" follows pipeline.engine; auto | fake | cpu | edgetpu. auto puts
    each model where the per-model table (`python run.py bench models`) predicts the whole pipeline is fastest,
    e.g. the face detector on the Edge TPU and FER64 on the CPU."""


def _engine_settings(self: Any, kind: str) -> EngineKind:
    """The settings of engine ``kind`` (``[engine.KIND]``: fake, cpu, edgetpu, ...)."""
    if kind not in ENGINE_KINDS:
        raise ConfigError("engine %r has no settings (engine kinds: %s)" % (kind, ", ".join(ENGINE_KINDS)))
    return getattr(self, kind)  # type: ignore[no-any-return]


_ENGINE_DOC = """The settings of each engine kind (one table per kind, named by its type) and how auto chooses.

    Built from the registry of engine kinds (``models/engines/kinds.py``), so that a new kind's table is
    accepted with no edit here. It reads as::

        class EngineConfig(Section):
            fake: FakeEngineSettings          # [engine.fake]     models/engines/kind_fake.py
            cpu: CpuEngineSettings            # [engine.cpu]      models/engines/kind_cpu.py
            edgetpu: EdgeTpuEngineSettings    # [engine.edgetpu]  models/engines/kind_edgetpu.py
            ...                               # one field per registered kind, named by its type
            auto: AutoEngineConfig            # [engine.auto]

            def settings(self, kind: str) -> EngineKind: ...

    A table's ``type`` key, when given, must be its own name.
    """

EngineConfig = msgspec.defstruct(
    "EngineConfig",
    [(kind, cls, msgspec.field(default_factory=cls)) for kind, cls in kinds().items()]
    + [("auto", AutoEngineConfig, msgspec.field(default_factory=AutoEngineConfig))],
    bases=(Section,), module=__name__, namespace={"settings": _engine_settings, "__doc__": _ENGINE_DOC})


class ModelsConfig(Section):
    """Where model files are found (`python run.py models` lists them and fetches the missing ones)."""

    paths: Annotated[List[str], Meta(description=(
        "folders searched for model files before $EDGEPIPE_MODEL_PATH and the model cache"))] = []


class ProfileModels(Section):
    """The models a profile runs instead on one engine ("" keeps the profile's own)."""

    detector: Annotated[str, Meta(description="the face detector on this engine")] = ""
    fer: Annotated[str, Meta(description="the expression model on this engine")] = ""
    classifier: Annotated[str, Meta(description="the classifier on this engine")] = ""


class ProfileConfig(Section):
    """A named set of models (``pipeline.profile``, ``--profile``): a detector (with or without an expression
    model) or a classifier; the models are names of `python run.py models`."""

    description: Annotated[str, Meta(description="what the profile is for, for the reader")] = ""
    detector: Annotated[str, Meta(description="the face detector (e.g. blazeface-full, coral-ssd-face)")] = ""
    fer: Annotated[str, Meta(description="the expression model run on each face (\"\": none)")] = ""
    classifier: Annotated[str, Meta(description="a whole-frame classifier, instead of a detector")] = ""
    by_engine: Annotated[Dict[str, ProfileModels], Meta(description=(
        "per engine kind (fake, cpu, edgetpu), models that replace the ones above on that engine, e.g. "
        "by_engine.edgetpu = { detector = \"coral-ssd-face\" }"))] = {}
    fallback: Annotated[Dict[str, str], Meta(description=(
        "a model whose file is neither found (models.paths, $EDGEPIPE_MODEL_PATH, the model cache) nor "
        "downloadable runs as this other model instead, e.g. fallback = { retinaface = \"blazeface-full\" }"))] = {}

    def models(self, engine: str) -> ProfileModels:
        o = self.by_engine.get(engine, ProfileModels())
        return ProfileModels(o.detector or self.detector, o.fer or self.fer, o.classifier or self.classifier)


class GroupConfig(Section):
    """A child process: the actors it runs, the Python that runs it, its environment. The recorder and the
    metrics hub stay in the main process, and so does capture unless the group takes its camera."""

    actors: Annotated[List[str], Meta(description=(
        "the actors it runs: encoder, detector, classifier, fer (the whole FER pool) or single FER workers "
        "fer-0, fer-1, ..., aggregator, display"))] = []
    cameras: Annotated[List[str], Meta(description=(
        "cameras of [cameras.NAME] whose capture and encoder it runs (e.g. on the host the camera is attached "
        "to, with spawn = false); their links to the main process: cameras.NAME.encoded, endpoints.results, "
        "metrics_in, control"))] = []
    python: Annotated[str, Meta(description=(
        "the Python that runs it (e.g. a Python 3.9 venv with PyCoral; a relative path is under the checkout); "
        "\"\": the interpreter running run.py"))] = ""
    env: Annotated[Dict[str, str], Meta(description="environment variables added to the child's")] = {}
    tpu: Annotated[str, Meta(description=(
        "the Edge TPU this group owns (\"usb:0\", \"pci:0\"); \"\": engine.edgetpu.devices"))] = ""
    spawn: Annotated[bool, Meta(description=(
        "false: not started by run.py but by hand (`python run.py group NAME`), maybe on another host"))] = True
    startup_timeout_s: Annotated[float, Meta(ge=1, le=3600, description=(
        "how long the group may take to report ready"))] = 60.0


CAMERA_NAME = r"^[A-Za-z0-9][A-Za-z0-9_]{0,31}$"  # no "-" or ".": actor names are capture-NAME, endpoints X.NAME


class CameraConfig(Section):
    """One camera of the run (``[cameras.NAME]``, ``--camera NAME=SPEC``): its own capture and encoder; the
    models, the devices and the FER pool are shared by every camera."""

    source: Annotated[str, Meta(description=(
        "what it reads, as pipeline.source: auto | demo | demo:unpaced | synthetic[:faces=N,fps=F,size=WxH] | "
        "dir:PATH | IMAGE | video:PATH | picamera2[:WxH] | v4l2:N | rtsp://... | http://..."))] = "auto"
    fps_limit: Annotated[float, Meta(ge=0.0, le=1000.0, description=(
        "at most this many frames per second from this camera (0: no limit)"))] = 0.0
    label: Annotated[str, Meta(max_length=64, description=(
        "a name for people (live view, MQTT), \"\": the camera's key"))] = ""
    frames: Annotated[str, Meta(description=(
        "its capture -> its encoder (and the display): \"\": derived from endpoints.frames (inproc://frames.NAME, "
        "tcp://HOST:PORT+i for the i-th camera)"))] = ""
    encoded: Annotated[str, Meta(description=(
        "its encoder -> the detector or classifier: \"\": derived from endpoints.encoded; a camera run by a group "
        "on another host binds here, e.g. \"tcp://192.168.1.30:5601\" (that host's address)"))] = ""


class SecurityConfig(Section):
    """CURVE encryption of tcp:// endpoints."""

    keys_dir: Annotated[str, Meta(description=(
        "the folder of CURVE keys made by `python run.py keys DIR`, the same on every host; required by a "
        "tcp:// endpoint reachable from other hosts"))] = ""


class Config(Section):
    """The whole config: one field per table."""

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
    profiles: Annotated[Dict[str, ProfileConfig], Meta(description=(
        "the named sets of models (pipeline.profile); those of the project are in config.toml"))] = {}
    groups: Annotated[Dict[str, GroupConfig], Meta(description=(
        "actors moved out of the main process into a child process per group"))] = {}
    cameras: Annotated[Dict[str, CameraConfig], Meta(description=(
        "several cameras in one run, by name (letters, digits, _): [cameras.NAME] source = ...; none: the one "
        "camera `default` reads pipeline.source"))] = {}
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    resources: ResourcesConfig = msgspec.field(default_factory=ResourcesConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)

    def camera_list(self) -> Dict[str, CameraConfig]:
        """The run's cameras by name, in name order: ``[cameras]``, else the one camera ``default`` reading
        pipeline.source."""
        if not self.cameras:
            return {"default": CameraConfig(source=self.pipeline.source)}
        return {name: self.cameras[name] for name in sorted(self.cameras)}

    def profile(self) -> ProfileConfig:
        name = self.pipeline.profile
        if name not in self.profiles:
            raise ConfigError("pipeline.profile: unknown profile %r; known: %s"
                              % (name, ", ".join(sorted(self.profiles)) or "none"))
        return self.profiles[name]

