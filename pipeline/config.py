"""Typed configuration read from ``config.toml``.

Every section is a dataclass; loading rejects unknown keys and bad values
with a ``ConfigError`` that names the key path (``fer.workers: ...``).
Command-line options override the file (``apply_overrides``).

Python 3.9 compatible (``tomli`` where ``tomllib`` is missing).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the Python 3.9 TPU side
    import tomli as tomllib

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.toml")
ENGINES = ("auto", "fake", "cpu", "edgetpu")
PLACEMENTS = ("",) + ENGINES  # "" follows pipeline.engine


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the key path."""


def _choices(*values: str) -> Dict[str, Any]:
    return {"choices": values}


def _range(lo: Optional[float] = None, hi: Optional[float] = None) -> Dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclass
class PipelineConfig:
    profile: str = "fd+fer64"
    engine: str = field(default="fake", metadata=_choices(*ENGINES))
    source: str = "synthetic:faces=3,fps=30,size=640x480"
    display: str = "none"
    drain_timeout_s: float = field(default=5.0, metadata=_range(0.1, 600))


@dataclass
class BusConfig:
    max_header_kb: int = field(default=1024, metadata=_range(1, 1 << 20))
    max_image_mb: int = field(default=64, metadata=_range(1, 4096))
    metrics_interval_s: float = field(default=1.0, metadata=_range(0.05, 3600))


@dataclass
class EndpointsConfig:
    frames: str = "inproc://frames"
    encoded: str = "inproc://encoded"
    detections: str = "inproc://detections"
    facejobs: str = "inproc://facejobs"
    expressions: str = "inproc://expressions"
    results: str = "inproc://results"
    metrics_in: str = "inproc://metrics-in"
    metrics: str = "tcp://127.0.0.1:5590"
    control: str = "inproc://control"  # groups report ready / stopped here


@dataclass
class CaptureConfig:
    hwm: int = field(default=16, metadata=_range(1, 10000))
    loop: bool = True  # image folders and files loop; videos stop at their end
    max_in_flight: int = field(default=4, metadata=_range(1, 1000))  # recorded sources: frames between capture and result


@dataclass
class EncoderConfig:
    format: str = field(default="raw", metadata=_choices("raw", "jpeg"))
    jpeg_quality: int = field(default=85, metadata=_range(1, 100))
    hwm: int = field(default=16, metadata=_range(1, 10000))


@dataclass
class DetectorConfig:
    score_threshold: float = field(default=0.5, metadata=_range(0.0, 1.0))
    max_faces: int = field(default=16, metadata=_range(1, 256))
    hwm: int = field(default=4, metadata=_range(1, 10000))
    freshest: bool = True  # drop stale frames (counted) and work on the newest
    depth: int = field(default=2, metadata=_range(1, 8))  # frames worked on at once (pre/post overlap the invoke)
    invoke_timeout_ms: float = field(default=2000.0, metadata=_range(1, 600000))  # watchdog: reload a stuck engine


@dataclass
class ClassifierConfig:
    top_k: int = field(default=5, metadata=_range(1, 100))
    birds_only: bool = False  # keep ImageNet's bird classes only (profile cls)


@dataclass
class FerConfig:
    workers: int = field(default=2, metadata=_range(1, 64))
    depth: int = field(default=2, metadata=_range(1, 8))  # jobs in flight per worker
    hwm: int = field(default=8, metadata=_range(1, 10000))
    invoke_timeout_ms: float = field(default=2000.0, metadata=_range(1, 600000))


@dataclass
class AggregatorConfig:
    deadline_ms: float = field(default=500.0, metadata=_range(1, 600000))
    ordered: bool = True  # hold results back to leave in frame order
    smoothing: int = field(default=5, metadata=_range(1, 100))  # rolling majority vote over N frames per track


@dataclass
class DisplayConfig:
    hwm: int = field(default=4, metadata=_range(1, 10000))
    frame_buffer: int = field(default=64, metadata=_range(1, 10000))
    fps: float = field(default=30.0, metadata=_range(1, 240))  # frame rate written into a video file


@dataclass
class FaultsConfig:
    raise_every: int = field(default=0, metadata=_range(0))
    hang_after: int = field(default=0, metadata=_range(0))
    hang_count: int = field(default=0, metadata=_range(0))  # 0: every invoke from hang_after on hangs
    slow_every: int = field(default=0, metadata=_range(0))
    slow_ms: float = field(default=0.0, metadata=_range(0))


@dataclass
class FakeEngineConfig:
    devices: int = field(default=1, metadata=_range(1, 16))  # fake Edge TPUs (fake:0 .. fake:N-1)
    latency_ms: Dict[str, float] = field(default_factory=dict)  # model name -> ms (default: the model's TPU time)
    switch_ms_per_mb: float = field(default=3.0, metadata=_range(0, 1000))  # parameter reload on a model switch
    cocompiled: List[List[str]] = field(default_factory=list)  # groups of models compiled together (switch free)
    faults: Dict[str, FaultsConfig] = field(default_factory=dict)  # actor name ("fer-0", "detector") -> faults


@dataclass
class CpuEngineConfig:
    threads: int = field(default=1, metadata=_range(1, 64))


@dataclass
class EdgeTpuEngineConfig:
    devices: List[str] = field(default_factory=lambda: [""])  # "" (the first found), "usb:0", "usb:1", "pci:0"
    fallback: str = field(default="", metadata=_choices("", "cpu"))


@dataclass
class AutoEngineConfig:
    accelerator: str = field(default="edgetpu", metadata=_choices("edgetpu", "fake"))  # what auto may use
    faces: int = field(default=3, metadata=_range(1, 64))  # faces per frame that auto plans for
    table: str = ""  # per-model timings (JSON of `bench models`); default: this machine's cached table


@dataclass
class PlacementConfig:
    """Where each role runs: "" follows pipeline.engine; auto | fake | cpu | edgetpu."""

    detector: str = field(default="", metadata=_choices(*PLACEMENTS))
    fer: str = field(default="", metadata=_choices(*PLACEMENTS))
    classifier: str = field(default="", metadata=_choices(*PLACEMENTS))


@dataclass
class EngineConfig:
    fake: FakeEngineConfig = field(default_factory=FakeEngineConfig)
    cpu: CpuEngineConfig = field(default_factory=CpuEngineConfig)
    edgetpu: EdgeTpuEngineConfig = field(default_factory=EdgeTpuEngineConfig)
    auto: AutoEngineConfig = field(default_factory=AutoEngineConfig)


@dataclass
class ModelsConfig:
    paths: List[str] = field(default_factory=list)


@dataclass
class ProfileModels:
    detector: str = ""
    fer: str = ""
    classifier: str = ""


@dataclass
class ProfileConfig:
    description: str = ""
    detector: str = ""
    fer: str = ""
    classifier: str = ""
    by_engine: Dict[str, ProfileModels] = field(default_factory=dict)

    def models(self, engine: str) -> ProfileModels:
        o = self.by_engine.get(engine, ProfileModels())
        return ProfileModels(o.detector or self.detector, o.fer or self.fer, o.classifier or self.classifier)


@dataclass
class GroupConfig:
    """A child process: the actors it runs, the Python that runs it, its environment."""

    actors: List[str] = field(default_factory=list)
    python: str = ""  # default: the interpreter running run.py
    env: Dict[str, str] = field(default_factory=dict)
    tpu: str = ""  # the Edge TPU device this group owns ("usb:0", "pci:0"); default engine.edgetpu.devices
    spawn: bool = True  # false: started by hand (`python run.py group NAME`), maybe on another host
    startup_timeout_s: float = field(default=60.0, metadata=_range(1, 3600))


@dataclass
class SecurityConfig:
    keys_dir: str = ""  # CURVE keys from `python run.py keys DIR`; required for non-loopback tcp://


@dataclass
class Config:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    fer: FerConfig = field(default_factory=FerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    profiles: Dict[str, ProfileConfig] = field(default_factory=dict)
    groups: Dict[str, GroupConfig] = field(default_factory=dict)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    def profile(self) -> ProfileConfig:
        name = self.pipeline.profile
        if name not in self.profiles:
            raise ConfigError("pipeline.profile: unknown profile %r; known: %s"
                              % (name, ", ".join(sorted(self.profiles)) or "none"))
        return self.profiles[name]


# ---------------------------------------------------------------- loading

_HINTS: Dict[type, Dict[str, Any]] = {}


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _section(tp, value, path)
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError("%s: expected a list, got %r" % (path, value))
        return [_convert(v, args[0], "%s[%d]" % (path, i)) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError("%s: expected a table, got %r" % (path, value))
        return {k: _convert(v, args[1], "%s.%s" % (path, k)) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and type(value) is tp:
        return value
    raise ConfigError("%s: expected %s, got %r" % (path, _type_name(tp), value))


def _section(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError("%s: expected a table, got %r" % (path or "config", data))
    hints = _HINTS.get(cls) or typing.get_type_hints(cls)
    _HINTS[cls] = hints
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = path + "." if path else ""
    for key in data:
        if key not in fields:
            raise ConfigError("%s%s: unknown key (known: %s)" % (prefix, key, ", ".join(sorted(fields))))
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        v = _convert(data[name], hints[name], prefix + name)
        meta = f.metadata
        if "choices" in meta and v not in meta["choices"]:
            raise ConfigError("%s%s: %r is not one of %s" % (prefix, name, v, ", ".join(repr(c) for c in meta["choices"])))
        if meta.get("min") is not None and v < meta["min"]:
            raise ConfigError("%s%s: %r is below the minimum %r" % (prefix, name, v, meta["min"]))
        if meta.get("max") is not None and v > meta["max"]:
            raise ConfigError("%s%s: %r is above the maximum %r" % (prefix, name, v, meta["max"]))
        kwargs[name] = v
    return cls(**kwargs)


def from_dict(data: Dict[str, Any]) -> Config:
    cfg = _section(Config, data, "")
    _validate(cfg)
    return cfg


def load(path: Optional[str] = None) -> Config:
    """Read and check a config file (default: the repository's ``config.toml``)."""
    path = path or DEFAULT_CONFIG
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file %s does not exist" % path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file %s is not valid TOML: %s" % (path, exc)) from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from None


def _validate(cfg: Config) -> None:
    from bus.sockets import BusError, check_endpoint
    for f in dataclasses.fields(cfg.endpoints):
        try:
            check_endpoint(getattr(cfg.endpoints, f.name))
        except BusError as exc:
            raise ConfigError("endpoints.%s: %s" % (f.name, exc)) from None
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
    from .groups import assignment, check_security, check_tpus
    check_tpus(cfg, assignment(cfg))
    check_security(cfg)


def apply_overrides(cfg: Config, **overrides: Any) -> Config:
    """Command-line overrides (None means "not given"), re-validated."""
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "engine" and value not in ENGINES:
            raise ConfigError("--engine: %r is not one of %s" % (value, ", ".join(ENGINES)))
        if key == "place":  # ["fer=cpu", ...]
            for item in value:
                role, _, engine = item.partition("=")
                if role not in ("detector", "fer", "classifier") or engine not in ENGINES:
                    raise ConfigError("--place: %r is not ROLE=ENGINE with ROLE one of detector, fer, classifier "
                                      "and ENGINE one of %s" % (item, ", ".join(ENGINES)))
                setattr(cfg.placement, role, engine)
            continue
        setattr(cfg.pipeline, key, value)
    cfg.profile()
    from .groups import assignment, check_tpus
    check_tpus(cfg, assignment(cfg))
    return cfg


def to_dict(cfg: Config) -> Dict[str, Any]:
    """The config as plain data (for a child process: ``from_dict(to_dict(cfg))`` gives it back)."""
    return dataclasses.asdict(cfg)
