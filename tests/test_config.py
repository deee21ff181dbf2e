"""Config: typed sections, errors that name the key path, overlays, overrides checked like the file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import pytest

from edgepipe.bus import diagnose
from edgepipe.models.engines.engine import FaultPlan
from edgepipe.models.engines.kinds import FakeEngineSettings
from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.errors import describe
from edgepipe.pipeline.config.loading import Config, ConfigError, GroupConfig
from edgepipe.pipeline.ops.keys import generate
from edgepipe.pipeline.processes.groups import plan

ROOT = Path(__file__).resolve().parents[1]


def test_repository_config_loads_with_four_profiles():
    cfg = config.load()
    assert set(cfg.profiles) >= {"fd+fer64", "fd+fer112", "fd", "cls"}
    assert cfg.profile().models("fake").detector == "coral-ssd-face"
    assert cfg.profile().models("cpu").detector == "blazeface-full"
    assert cfg.profiles["fd+fer64-fast"].models("cpu").detector == "blazeface-short"


@pytest.mark.parametrize("data, where", [
    ({"fer": {"wokers": 2}}, "fer.wokers: unknown key"),
    ({"fer": {"workers": "two"}}, "fer.workers: expected an integer"),
    ({"fer": {"workers": 0}}, "fer.workers: 0 is below the minimum 1"),
    ({"fer": {"workers": 1000}}, "fer.workers: 1000 is above the maximum 64"),
    ({"fer": {"workers": True}}, "fer.workers: expected an integer, got True"),
    ({"fer": 3}, "fer: expected a table, got 3"),
    ({"pipeline": {"engin": "fake"}},
     "pipeline.engin: unknown key (known: display, drain_timeout_s, engine, name, profile, source)"),
    ({"detector": {"score_threshold": float("nan")}}, "detector.score_threshold: nan is not a number"),
    ({"engine": {"fake": {"latency_ms": {"fer64": -1}}}}, "engine.fake.latency_ms.fer64: -1 is below the minimum 0"),
    ({"engine": {"fake": {"cocompiled": [["fer64", 3]]}}}, "engine.fake.cocompiled[0][1]: expected a string, got 3"),
    ({"engine": {"edgetpu": {"devices": "usb:0"}}}, "engine.edgetpu.devices: expected a list, got 'usb:0'"),
    ({"groups": {"tpu": {"actors": ["fer"], "startup_timeout_s": 0}}},
     "groups.tpu.startup_timeout_s: 0 is below the minimum 1"),
    ({"encoder": {"format": "png"}}, "encoder.format: 'png' is not one of"),
    ({"pipeline": {"engine": "gpu"}}, "pipeline.engine: 'gpu' is not one of"),
    ({"detector": {"freshest": "yes"}}, "detector.freshest: expected true or false"),
    ({"nonsense": {}}, "nonsense: unknown key"),
    ({"endpoints": {"frames": "udp://x"}}, "endpoints.frames"),
    ({"engine": {"fake": {"faults": {"fer-0": {"hang": 1}}}}}, "engine.fake.faults.fer-0.hang: unknown key"),
    ({"engine": {"fake": {"faults": {"detector": {}, "fer-1": {"slow_ms": "x"}}}}},
     "engine.fake.faults.fer-1.slow_ms: expected a number, got 'x'"),
    ({"profiles": {"x": {"detector": "a", "by_engine": {"gpu": {}}}}}, "profiles.x.by_engine.gpu"),
    ({"profiles": {"x": {}}}, "profiles.x: needs a detector or a classifier"),
    ({"pipeline": {"profile": "nope"}, "profiles": {"fd": {"detector": "a"}}}, "unknown profile 'nope'"),
])
def test_bad_keys_and_values_are_named(data, where):
    with pytest.raises(ConfigError) as err:
        config.from_dict(data)
    assert where in str(err.value)


@pytest.mark.parametrize("data, where", [
    ({"fer": {"wokers": 2}}, "fer.wokers: unknown key (known: depth, hwm, invoke_timeout_ms, processes, workers)"),
    ({"fer": {"workers": "two"}}, "fer.workers: expected an integer, got 'two'"),
    ({"fer": {"workers": 2.0}}, "fer.workers: expected an integer, got 2.0"),
    ({"bus": {"metrics_interval_s": float("inf")}}, "bus.metrics_interval_s: inf is above the maximum 3600"),
    ({"engine": {"fake": {"type": "cpu"}}},
     "engine.fake.type: 'cpu' is not 'fake', the type of this table (its name is its type)"),
    ({"engine": {"fake": {"type": 3}}}, "engine.fake.type: 3 is not 'fake', the type of this table (its name is its type)"),
    ({"groups": {"tpu": {"actors": ["fer"], "env": {"A": 1}}}}, "groups.tpu.env.A: expected a string, got 1"),
    ({"mqtt": {"nope": 1}}, "mqtt.nope: unknown key"),
    ([], "config: expected a table, got []"),
])
def test_type_errors_are_worded_by_our_own_walk_of_the_data(data, where):
    """The message comes from ``bus.diagnose``'s walk of the data against the types (the same text as
    ``describe(first_problem(...))``), never from msgspec's message."""
    with pytest.raises(ConfigError) as err:
        config.from_dict(data)
    assert str(err.value) == describe(diagnose.first_problem(data, Config))
    assert str(err.value).startswith(where)


POOL = [None, True, -1, 0, 1, 70000, 1.5, math.nan, math.inf, "", "auto", "cpu", "x" * 300, [], ["fer"], [["a", 1]],
        {}, {"a": 1}, {"a": {"b": 1}}]


def test_the_diagnosis_agrees_with_msgspec_on_every_key():
    """Every key of every section (and every section) set to each value of a pool, or left out: the diagnosis
    finds a problem exactly when ``msgspec.convert`` refuses the config."""
    base = config.to_dict(config.load())
    paths = [(section,) for section in base]
    paths += [(section, key) for section, table in base.items() if isinstance(table, dict) for key in table]
    paths += [("engine", kind, key) for kind, table in base["engine"].items() if isinstance(table, dict)
              for key in table]
    checked = 0
    for path in paths:
        for value in POOL + [diagnose]:  # a module object stands for "left out"
            data = json.loads(json.dumps(base))
            table = data
            for key in path[:-1]:
                table = table[key]
            if value is diagnose:
                del table[path[-1]]
            else:
                table[path[-1]] = value
            try:
                msgspec.convert(data, Config)
                refused = False
            except msgspec.ValidationError:
                refused = True
            problem = diagnose.first_problem(data, Config)
            assert (problem is not None) == refused, (path, value, problem)
            checked += 1
    assert checked > 1000


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[fer]\nworkers = [1\n")
    with pytest.raises(ConfigError, match="bad.toml.*not valid TOML"):
        config.load(str(p))
    p.write_text("[fer]\nworker = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: fer.worker: unknown key"):
        config.load(str(p))
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "missing.toml"))


def test_overrides():
    cfg = config.apply_overrides(config.load(), profile="fd", engine="cpu", source="demo")
    assert (cfg.pipeline.profile, cfg.pipeline.engine, cfg.pipeline.source) == ("fd", "cpu", "demo")
    with pytest.raises(ConfigError, match="--engine"):
        config.apply_overrides(config.load(), engine="tpu")
    with pytest.raises(ConfigError, match="unknown profile 'x'"):
        config.apply_overrides(config.load(), profile="x")


def test_every_override_is_set_and_typed():
    cfg = config.apply_overrides(config.load(), display="file:x.mp4", encoder="jpeg", fer_workers=3,
                                 metrics_endpoint="ipc:///tmp/m", place=["fer=cpu", "detector=fake"])
    assert (cfg.pipeline.display, cfg.encoder.format, cfg.fer.workers) == ("file:x.mp4", "jpeg", 3)
    assert cfg.endpoints.metrics == "ipc:///tmp/m"
    assert (cfg.placement.fer, cfg.placement.detector) == ("cpu", "fake")
    assert isinstance(cfg.engine.fake, FakeEngineSettings)
    with pytest.raises(TypeError, match="unknown override 'workers'"):
        config.apply_overrides(cfg, workers=3)


@pytest.mark.parametrize("overrides, message", [
    # what the file refuses, the command line refuses, with the option and the key
    ({"fer_workers": 1000}, "--fer-workers 1000: fer.workers: 1000 is above the maximum 64"),
    ({"fer_workers": 0}, "--fer-workers 0: fer.workers: 0 is below the minimum 1"),
    ({"metrics_endpoint": "udp://x"}, "--metrics-endpoint udp://x: endpoints.metrics: "),
    ({"metrics_endpoint": "tcp://0.0.0.0:5590"},
     "--metrics-endpoint tcp://0.0.0.0:5590: endpoints.metrics = tcp://0.0.0.0:5590: a tcp:// endpoint reachable "
     "from other hosts needs CURVE encryption"),
    ({"encoder": "png"}, "--encoder png: encoder.format: 'png' is not one of 'raw', 'jpeg'"),
    ({"place": ["fer=gpu"]}, "--place fer=gpu: placement.fer: 'gpu' is not one of '', 'auto', 'fake', 'cpu'"),
    ({"place": ["gpu=cpu"]}, "--place gpu=cpu: placement.gpu: unknown key (known: classifier, detector, fer)"),
    ({"place": ["fer"]}, "--place fer: expected ROLE=ENGINE with ROLE one of classifier, detector, fer"),
    ({"profile": "nope"}, "--profile nope: pipeline.profile: unknown profile 'nope'"),
])
def test_command_line_values_are_checked_like_the_file(overrides, message):
    cfg = config.load()
    before = config.to_dict(cfg)
    with pytest.raises(ConfigError) as err:
        config.apply_overrides(cfg, **overrides)
    assert message in str(err.value)
    assert config.to_dict(cfg) == before  # a refused override changes nothing


def test_a_cross_key_error_lists_the_options_that_led_to_it():
    cfg = config.load()
    cfg.pipeline.engine = "fake"  # group a's detector on the fake device
    cfg.groups = {"a": GroupConfig(actors=["detector"]), "b": GroupConfig(actors=["fer"])}
    cfg.placement.fer = "cpu"  # as the file would have it: only group a uses the fake device
    config.from_dict(config.to_dict(cfg))
    with pytest.raises(ConfigError, match=r"both claim fake device .*\(command-line options: --place fer=fake\)"):
        config.apply_overrides(cfg, place=["fer=fake"])


def test_a_public_metrics_endpoint_with_curve_keys_is_accepted(tmp_path):
    generate(str(tmp_path / "keys"))
    cfg = config.from_dict(config.overlay(config.to_dict(config.load()),
                                          {"security": {"keys_dir": str(tmp_path / "keys")}}))
    config.apply_overrides(cfg, metrics_endpoint="tcp://0.0.0.0:5590")
    assert cfg.endpoints.metrics == "tcp://0.0.0.0:5590"


def test_a_config_file_overlays_config_toml(tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text('[capture]\nmax_in_flight = 8\n\n'
                    '[engine.edgetpu]\ndevices = ["usb:0", "usb:1"]\n\n'
                    '[profiles.fd]\ndescription = "my faces"\n\n'
                    '[profiles.mine]\ndetector = "retinaface"\n')
    cfg = config.load(str(user))
    base = config.load()
    assert cfg.capture.max_in_flight == 8 and cfg.capture.hwm == base.capture.hwm  # tables merge key by key
    assert cfg.engine.edgetpu.devices == ["usb:0", "usb:1"]  # a list replaces
    assert cfg.engine.edgetpu.fallback == base.engine.edgetpu.fallback
    assert set(cfg.profiles) == set(base.profiles) | {"mine"}  # profiles merge by name
    assert cfg.profiles["fd"].description == "my faces"
    assert cfg.profiles["fd"].by_engine == base.profiles["fd"].by_engine
    assert cfg.pipeline == base.pipeline
    with pytest.raises(ConfigError, match="mine.toml: profiles.fd: needs a detector or a classifier"):
        config.load(str(user), base=None)  # read alone, its profile fd has no model


def test_overlay_replaces_values_and_merges_tables():
    base = {"a": {"x": 1, "l": [1, 2]}, "b": 2, "p": {"one": {"k": 1, "j": 2}}}
    over = {"a": {"l": [3]}, "b": {"now": "a table"}, "p": {"one": {"k": 5}, "two": {"k": 0}}}
    assert config.overlay(base, over) == {"a": {"x": 1, "l": [3]}, "b": {"now": "a table"},
                                          "p": {"one": {"k": 5, "j": 2}, "two": {"k": 0}}}
    assert base["a"] == {"x": 1, "l": [1, 2]} and base["p"]["one"] == {"k": 1, "j": 2}  # untouched


def test_dual_python_example_is_an_overlay():
    cfg = config.load(str(ROOT / "examples" / "dual-python.toml"))
    assert cfg.groups["tpu"].actors == ["detector", "fer"]
    assert cfg.groups["tpu"].python == ".venv-tpu/bin/python"
    assert set(cfg.profiles) == set(config.load().profiles)


def test_to_dict_round_trips_through_json():
    cfg = config.load()
    cfg.groups = {"tpu": GroupConfig(actors=["detector", "fer"], python="/usr/bin/python3.9", env={"A": "1"},
                                     tpu="usb:0", startup_timeout_s=5)}
    cfg.engine.fake.faults = {"fer-0": FaultPlan(raise_every=3, slow_ms=2.5)}
    cfg.engine.fake.latency_ms = {"fer64": 6.47}
    cfg.engine.fake.cocompiled = [["coral-ssd-face", "fer112"]]
    cfg.placement.fer = "cpu"
    back = config.from_dict(json.loads(json.dumps(config.to_dict(cfg))))
    assert back == cfg
    assert isinstance(back.groups["tpu"], GroupConfig) and back.groups["tpu"].startup_timeout_s == 5.0


def test_endpoint_names_and_plan_copies():
    cfg = config.load()
    assert list(config.endpoint_names()) == list(config.to_dict(cfg)["endpoints"])
    cfg.groups = {"tpu": GroupConfig(actors=["detector", "fer"])}
    out = plan(cfg, "/tmp/run")
    assert out.endpoints.encoded == "ipc:///tmp/run/encoded"
    assert cfg.endpoints.encoded == "inproc://encoded"  # the original keeps its endpoints
    assert out.groups is cfg.groups and out.pipeline is cfg.pipeline
