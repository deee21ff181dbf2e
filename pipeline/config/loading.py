"""Loading ``config.toml``: overlay, conversion, the checks that span several keys, command-line overrides.

The sections are in ``pipeline/config/sections.py`` (re-exported here); their fields hold every default.
``from_dict`` converts plain data with ``msgspec.convert`` and then runs the
checks that span several keys (endpoints, profiles, groups, accelerator
claims, CURVE, MQTT). Every error is a ``ConfigError`` that names the key path
(``fer.workers: 1000 is above the maximum 64``).

``load(PATH)`` overlays PATH on the repository's ``config.toml``: tables merge
key by key (so profiles and groups merge by name), any other value, a list
included, replaces. Command-line options (``apply_overrides``) change that
data and go through the same conversion and checks. An error about the files
begins with the file's path; one about a command-line option (``OptionError``)
begins with the option as typed (``--fer-workers 0: fer.workers: ...``).
"""
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import msgspec

from edgepipe import ROOT
from edgepipe.actors.sinks.web_sink import web_address
from edgepipe.bus.sockets import BusError, check_endpoint
from edgepipe.pipeline.config.errors import convert as _convert
from edgepipe.pipeline.config.mqtt_options import check_mqtt, mask_url, parse_mqtt_url
from edgepipe.pipeline.config.sections import (CAMERA_NAME, ENGINES, PLACEMENTS, AggregatorConfig, AutoEngineConfig,
                                               BusConfig, CaptureConfig, ClassifierConfig, Config, ConfigError,
                                               DetectorConfig, DisplayConfig, EncoderConfig, EndpointsConfig, Engine,
                                               EngineConfig, FerConfig, GroupConfig, ModelsConfig, MqttConfig,
                                               PipelineConfig, Placement, PlacementConfig, ProfileConfig, ProfileModels,
                                               ResourcesConfig, Section, SecurityConfig, endpoint_names,
                                               expand_endpoints)
from edgepipe.pipeline.processes.groups import assignment, check_by_hand, check_security, check_tpus

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the Python 3.9 TPU side
    import tomli as tomllib

__all__ = ["ENGINES", "PLACEMENTS", "AggregatorConfig", "AutoEngineConfig", "BusConfig", "CaptureConfig",
           "ClassifierConfig", "Config", "ConfigError", "DetectorConfig", "DisplayConfig", "EncoderConfig",
           "EndpointsConfig", "Engine", "EngineConfig", "FerConfig", "GroupConfig", "ModelsConfig", "MqttConfig",
           "PipelineConfig", "Placement", "PlacementConfig", "ProfileConfig", "ProfileModels", "ResourcesConfig",
           "Section", "SecurityConfig", "endpoint_names", "expand_endpoints", "DEFAULT_CONFIG", "OVERRIDES",
           "OptionError", "from_dict", "to_dict", "overlay", "read_toml", "load", "apply_overrides"]

DEFAULT_CONFIG = os.path.join(ROOT, "config.toml")


class OptionError(ConfigError):
    """A ``ConfigError`` caused by a command-line option: its message begins with the option, not a file."""


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
    except OptionError:
        raise  # it begins with the command-line option that is wrong, not with the file
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from None


def _validate(cfg: Config) -> None:
    """The checks that span several keys."""
    for name in endpoint_names():
        try:
            check_endpoint(getattr(cfg.endpoints, name))
        except BusError as exc:
            raise ConfigError("endpoints.%s: %s" % (name, exc)) from None
    if cfg.pipeline.display == "web" or cfg.pipeline.display.startswith("web:"):
        try:
            web_address(cfg.pipeline.display)
        except ValueError as exc:
            raise ConfigError("pipeline.display: %s" % exc) from None
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
    _check_cameras(cfg)
    check_tpus(cfg, assignment(cfg))
    check_by_hand(cfg, assignment(cfg))
    check_security(cfg)
    check_mqtt(cfg.mqtt)


def _check_cameras(cfg: Config) -> None:
    for name, cam in cfg.cameras.items():
        if not re.match(CAMERA_NAME, name):
            raise ConfigError("cameras.%s: a camera's name is 1 to 32 letters, digits or _ (no - or .)" % name)
        if not cam.source:
            raise ConfigError("cameras.%s.source: empty; name what the camera reads" % name)
    if len(cfg.camera_list()) > 1 and cfg.pipeline.display.startswith("file:"):
        raise ConfigError("pipeline.display: a video file records one camera; with %d cameras use web (a tile "
                          "per camera), window (a window per camera) or none" % len(cfg.camera_list()))


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
    "name": ("--name", "pipeline", "name"),
}
PLACED = tuple(PlacementConfig.__struct_fields__)  # the roles --place may name (the table's that run a model)


def apply_overrides(cfg: Config, **overrides: Any) -> Config:
    """Command-line overrides (None means "not given"), checked exactly as the file is.

    The keywords are those of ``OVERRIDES``, ``place`` (a list of ``ROLE=ENGINE``) and ``camera`` (a list
    of ``NAME=SPEC``: one camera each, replacing the file's camera of that name). The overridden
    data goes through ``from_dict``; on success ``cfg`` takes the result and is returned, on a
    ``ConfigError`` (which names the option and the key) it is left as it was.
    """
    data = to_dict(cfg)
    if overrides.get("camera") and overrides.get("source") is not None:
        raise OptionError("--source %s: with --camera, each camera names its source (--camera NAME=SPEC)"
                          % overrides["source"])
    given: List[Tuple[str, str]] = []  # (the option as typed, the key path it sets)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "place":
            for item in value:
                role, sep, engine = item.partition("=")
                if not sep or not role:
                    raise OptionError("--place %s: expected ROLE=ENGINE with ROLE one of %s"
                                      % (item, ", ".join(PLACED)))
                data["placement"][role] = engine
                given.append(("--place %s" % item, "placement." + role))
            continue
        if key == "camera":
            for item in value:
                name, sep, spec = item.partition("=")
                if not sep or not name or not spec:
                    raise OptionError("--camera %s: expected NAME=SPEC, e.g. --camera left=v4l2:0" % item)
                if not re.match(CAMERA_NAME, name):
                    raise OptionError("--camera %s: a camera's name is 1 to 32 letters, digits or _ (no - or .)"
                                      % item)
                data["cameras"][name] = {"source": spec}
                given.append(("--camera %s" % item, "cameras." + name))
            continue
        if key == "mqtt":
            data["mqtt"].update(_option("--mqtt", parse_mqtt_url, value))
            given.append(("--mqtt %s" % mask_url(value), "mqtt"))
            continue
        if key not in OVERRIDES:
            raise TypeError("apply_overrides: unknown override %r (known: place, camera, mqtt, %s)" % (key, ", ".join(OVERRIDES)))
        option, section, name = OVERRIDES[key]
        data[section][name] = value
        given.append(("%s %s" % (option, value), "%s.%s" % (section, name)))
    if not given:
        return cfg
    try:
        new = from_dict(data)
    except ConfigError as exc:
        option = _culprit(str(exc), given)
        if option:
            raise OptionError("%s: %s" % (option, exc)) from None
        raise ConfigError(_blame(str(exc), given)) from None
    for name in Config.__struct_fields__:
        setattr(cfg, name, getattr(new, name))
    return cfg


def _option(option: str, parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except ConfigError as exc:
        raise OptionError("%s: %s" % (option, exc)) from None


def _culprit(msg: str, given: List[Tuple[str, str]]) -> str:
    """The option (as typed) that set the key the message is about, or ""."""
    for option, key in given:
        if re.match(re.escape(key) + r"[ :.\[]", msg):
            return option
    return ""


def _blame(msg: str, given: List[Tuple[str, str]]) -> str:
    """Put the option that set the faulty key in front of the message, or list the options."""
    option = _culprit(msg, given)
    if option:
        return "%s: %s" % (option, msg)
    return "%s (command-line options: %s)" % (msg, ", ".join(option for option, _ in given))
