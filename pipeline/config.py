"""Typed configuration read from ``config.toml``.

Every section is a msgspec Struct that refuses unknown keys; ranges and
choices are ``msgspec.Meta`` constraints and ``Literal`` types. ``from_dict``
converts plain data with ``msgspec.convert`` and then runs the checks that
span several keys (endpoints, profiles, groups, accelerator claims, CURVE).
Every error is a ``ConfigError`` that names the key path
(``fer.workers: 1000 is above the maximum 64``).

``load(PATH)`` overlays PATH on the repository's ``config.toml``: tables merge
key by key (so profiles and groups merge by name), any other value, a list
included, replaces. Command-line options (``apply_overrides``) change that
data and go through the same conversion and checks.

Sections are mutable; copy one with ``msgspec.structs.replace`` and list the
endpoints with ``endpoint_names()`` (``dataclasses`` does not apply).

Python 3.9 compatible (``tomli`` where ``tomllib`` is missing; annotations use
``typing`` forms only).
"""
import math
import os
import re
import sys
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, get_args, get_origin

import msgspec
from msgspec import Meta

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the Python 3.9 TPU side
    import tomli as tomllib

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.toml")

Engine = Literal["auto", "fake", "cpu", "edgetpu"]
Placement = Literal["", "auto", "fake", "cpu", "edgetpu"]  # "" follows pipeline.engine
ENGINES: Tuple[str, ...] = get_args(Engine)
PLACEMENTS: Tuple[str, ...] = get_args(Placement)

Hwm = Annotated[int, Meta(ge=1, le=10000)]  # a socket's high-water mark (messages)
Count = Annotated[int, Meta(ge=0, le=1 << 31)]
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


class AggregatorConfig(Section):
    deadline_ms: TimeoutMs = 500.0
    ordered: bool = True  # hold results back to leave in frame order
    smoothing: Annotated[int, Meta(ge=1, le=100)] = 5  # rolling majority vote over N frames per track


class DisplayConfig(Section):
    hwm: Hwm = 4
    frame_buffer: Annotated[int, Meta(ge=1, le=10000)] = 64
    fps: Annotated[float, Meta(ge=1, le=240)] = 30.0  # frame rate written into a video file


class FaultsConfig(Section):
    raise_every: Count = 0
    hang_after: Count = 0
    hang_count: Count = 0  # 0: every invoke from hang_after on hangs
    slow_every: Count = 0
    slow_ms: Annotated[float, Meta(ge=0, le=600000)] = 0.0


class FakeEngineConfig(Section):
    devices: Annotated[int, Meta(ge=1, le=16)] = 1  # fake Edge TPUs (fake:0 .. fake:N-1)
    # model name -> ms (default: the model's TPU time)
    latency_ms: Dict[str, Annotated[float, Meta(ge=0, le=600000)]] = {}
    switch_ms_per_mb: Annotated[float, Meta(ge=0, le=1000)] = 3.0  # parameter reload on a model switch
    cocompiled: List[List[str]] = []  # groups of models compiled together (switch free)
    faults: Dict[str, FaultsConfig] = {}  # actor name ("fer-0", "detector") -> faults


class CpuEngineConfig(Section):
    threads: Annotated[int, Meta(ge=1, le=64)] = 1


class EdgeTpuEngineConfig(Section):
    devices: List[str] = msgspec.field(default_factory=lambda: [""])  # "" (the first found), "usb:0", "pci:0"
    fallback: Literal["", "cpu"] = ""


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
    fake: FakeEngineConfig = msgspec.field(default_factory=FakeEngineConfig)
    cpu: CpuEngineConfig = msgspec.field(default_factory=CpuEngineConfig)
    edgetpu: EdgeTpuEngineConfig = msgspec.field(default_factory=EdgeTpuEngineConfig)
    auto: AutoEngineConfig = msgspec.field(default_factory=AutoEngineConfig)


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


# ---------------------------------------------------------------- errors that name the key

_MISSING = object()
_AT = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _join(path: str, key: str) -> str:
    return "%s.%s" % (path, key) if path else key


def _unwrap(tp: Any) -> Tuple[Any, List[Meta]]:
    """``Annotated[T, Meta(...)]`` -> (T, [Meta(...)])."""
    if get_origin(tp) is Annotated:
        args = get_args(tp)
        return args[0], [m for m in args[1:] if isinstance(m, Meta)]
    return tp, []


def _field_types(cls: Any) -> Dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(cls)}


def _explain(value: Any, tp: Any, path: str, exc: msgspec.ValidationError) -> str:
    """msgspec's ``Expected `int` <= 64 - at `$.fer.workers``` as ``fer.workers: 1000 is above the maximum 64``."""
    text = str(exc)
    msg, sep, where = text.rpartition(" - at `")
    if not sep:
        msg, where = text, "$`"
    for name, index in _AT.findall(where[1:-1]):
        tp = _unwrap(tp)[0]
        if name:
            tp = _field_types(tp)[name]
            value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
            path = _join(path, name)
        elif index == "..." and isinstance(value, dict):  # a dict value; msgspec does not say which key
            item_tp = get_args(tp)[1]
            for key, item in value.items():
                try:
                    msgspec.convert(item, item_tp)
                except msgspec.ValidationError as sub:
                    return _explain(item, item_tp, _join(path, str(key)), sub)
            break
        elif index.isdigit() and isinstance(value, list) and int(index) < len(value):
            tp = get_args(tp)[0]
            value = value[int(index)]
            path = "%s[%s]" % (path, index)
        else:
            break
    return _describe(path, value, tp, msg)


def _describe(path: str, value: Any, tp: Any, msg: str) -> str:
    base, metas = _unwrap(tp)
    unknown = re.match(r"Object contains unknown field `(.*)`$", msg)
    if unknown:
        known = ", ".join(sorted(base.__struct_fields__)) if isinstance(base, type) else "none"
        return "%s: unknown key (known: %s)" % (_join(path, unknown.group(1)), known)
    where = path or "config"
    if msg.startswith("Expected `object`"):
        return "%s: expected a table, got %r" % (where, value)
    if msg.startswith("Expected `array`"):
        return "%s: expected a list, got %r" % (where, value)
    if get_origin(base) is Literal:
        return "%s: %r is not one of %s" % (where, value, ", ".join(repr(c) for c in get_args(base)))
    if ", got `" in msg:
        return "%s: expected %s, got %r" % (where, _TYPE_NAMES.get(base, getattr(base, "__name__", str(base))), value)
    if isinstance(value, float) and math.isnan(value):
        return "%s: nan is not a number" % where
    for m in metas:
        if m.ge is not None and value < m.ge:
            return "%s: %r is below the minimum %r" % (where, value, m.ge)
        if m.le is not None and value > m.le:
            return "%s: %r is above the maximum %r" % (where, value, m.le)
    return "%s: %s" % (where, msg)


def _convert(data: Any, tp: Any) -> Any:
    try:
        return msgspec.convert(data, tp)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(data, tp, "", exc)) from None


# ---------------------------------------------------------------- loading

def from_dict(data: Dict[str, Any]) -> Config:
    """Plain data (a TOML or JSON document) -> a checked ``Config``."""
    cfg = _convert(data, Config)
    _validate(cfg)
    return cfg


def to_dict(cfg: Config) -> Dict[str, Any]:
    """The config as plain data (for a child process: ``from_dict(to_dict(cfg))`` gives it back)."""
    return msgspec.to_builtins(cfg)


def overlay(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """``over`` on ``base``: tables merge key by key, any other value (a list too) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file %s does not exist" % path) from None
    except IsADirectoryError:
        raise ConfigError("config file %s is a directory" % path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file %s is not valid TOML: %s" % (path, exc)) from None


def load(path: Optional[str] = None, base: Optional[str] = DEFAULT_CONFIG, **overrides: Any) -> Config:
    """Read and check ``path`` overlaid on ``base`` (the repository's ``config.toml``).

    Without ``path``, ``base`` alone; with ``base=None``, ``path`` alone. ``overrides`` (those of
    ``apply_overrides``) are applied before the checks that span several keys, so that the file and
    the command line are checked as one (a file's groups with ``--engine cpu`` claim no device).
    """
    path = path or base or DEFAULT_CONFIG
    data = read_toml(path)
    if base and os.path.realpath(path) != os.path.realpath(base):
        data = overlay(read_toml(base), data)
    try:
        if any(v is not None for v in overrides.values()):
            return apply_overrides(_convert(data, Config), **overrides)  # apply_overrides checks it all
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from None


def _validate(cfg: Config) -> None:
    """The checks that span several keys."""
    from bus.sockets import BusError, check_endpoint
    for name in endpoint_names():
        try:
            check_endpoint(getattr(cfg.endpoints, name))
        except BusError as exc:
            raise ConfigError("endpoints.%s: %s" % (name, exc)) from None
    for name, prof in cfg.profiles.items():
        for eng in prof.by_engine:
            if eng not in ENGINES:
                raise ConfigError("profiles.%s.by_engine.%s: unknown engine (known: %s)" % (name, eng, ", ".join(ENGINES)))
        if not (prof.detector or prof.classifier):
            raise ConfigError("profiles.%s: needs a detector or a classifier" % name)
        if prof.detector and prof.classifier:
            raise ConfigError("profiles.%s: a profile has a detector or a classifier, not both" % name)
    if cfg.profiles:
        cfg.profile()
    from .groups import assignment, check_by_hand, check_security, check_tpus
    check_tpus(cfg, assignment(cfg))
    check_by_hand(cfg, assignment(cfg))
    check_security(cfg)
    from .mqtt_options import check_mqtt
    check_mqtt(cfg.mqtt)


# ---------------------------------------------------------------- command-line overrides

# apply_overrides keyword -> (command-line option, section, key)
OVERRIDES: Dict[str, Tuple[str, str, str]] = {
    "profile": ("--profile", "pipeline", "profile"),
    "engine": ("--engine", "pipeline", "engine"),
    "source": ("--source", "pipeline", "source"),
    "display": ("--display", "pipeline", "display"),
    "encoder": ("--encoder", "encoder", "format"),
    "fer_workers": ("--fer-workers", "fer", "workers"),
    "metrics_endpoint": ("--metrics-endpoint", "endpoints", "metrics"),
}
ROLES = tuple(PlacementConfig.__struct_fields__)


def apply_overrides(cfg: Config, **overrides: Any) -> Config:
    """Command-line overrides (None means "not given"), checked exactly as the file is.

    The keywords are those of ``OVERRIDES`` and ``place`` (a list of ``ROLE=ENGINE``). The overridden
    data goes through ``from_dict``; on success ``cfg`` takes the result and is returned, on a
    ``ConfigError`` (which names the option and the key) it is left as it was.
    """
    data = to_dict(cfg)
    given: List[Tuple[str, str]] = []  # (the option as typed, the key path it sets)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "place":
            for item in value:
                role, sep, engine = item.partition("=")
                if not sep or not role:
                    raise ConfigError("--place %s: expected ROLE=ENGINE with ROLE one of %s"
                                      % (item, ", ".join(ROLES)))
                data["placement"][role] = engine
                given.append(("--place %s" % item, "placement." + role))
            continue
        if key == "mqtt":
            from .mqtt_options import mask_url, parse_mqtt_url
            data["mqtt"].update(_option("--mqtt", parse_mqtt_url, value))
            given.append(("--mqtt %s" % mask_url(value), "mqtt"))
            continue
        if key not in OVERRIDES:
            raise TypeError("apply_overrides: unknown override %r (known: place, mqtt, %s)" % (key, ", ".join(OVERRIDES)))
        option, section, name = OVERRIDES[key]
        data[section][name] = value
        given.append(("%s %s" % (option, value), "%s.%s" % (section, name)))
    if not given:
        return cfg
    try:
        new = from_dict(data)
    except ConfigError as exc:
        raise ConfigError(_blame(str(exc), given)) from None
    for name in Config.__struct_fields__:
        setattr(cfg, name, getattr(new, name))
    return cfg


def _option(option: str, parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (option, exc)) from None


def _blame(msg: str, given: List[Tuple[str, str]]) -> str:
    """Put the option that set the faulty key in front of the message, or list the options."""
    for option, key in given:
        if re.match(re.escape(key) + r"[ :.\[]", msg):
            return "%s: %s" % (option, msg)
    return "%s (command-line options: %s)" % (msg, ", ".join(option for option, _ in given))
