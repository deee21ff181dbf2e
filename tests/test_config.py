"""Config: typed sections, and errors that name the key path."""
from __future__ import annotations

import pytest

from pipeline import config
from pipeline.config import ConfigError


def test_repository_config_loads_with_four_profiles():
    cfg = config.load()
    assert set(cfg.profiles) >= {"fd+fer64", "fd+fer112", "fd", "cls"}
    assert cfg.profile().models("fake").detector == "coral-ssd-face"
    assert cfg.profile().models("cpu").detector == "blazeface-short"


@pytest.mark.parametrize("data, where", [
    ({"fer": {"wokers": 2}}, "fer.wokers: unknown key"),
    ({"fer": {"workers": "two"}}, "fer.workers: expected an integer"),
    ({"fer": {"workers": 0}}, "fer.workers: 0 is below the minimum"),
    ({"encoder": {"format": "png"}}, "encoder.format: 'png' is not one of"),
    ({"pipeline": {"engine": "gpu"}}, "pipeline.engine: 'gpu' is not one of"),
    ({"detector": {"freshest": "yes"}}, "detector.freshest: expected true or false"),
    ({"nonsense": {}}, "nonsense: unknown key"),
    ({"endpoints": {"frames": "udp://x"}}, "endpoints.frames"),
    ({"engine": {"fake": {"faults": {"fer-0": {"hang": 1}}}}}, "engine.fake.faults.fer-0.hang: unknown key"),
    ({"profiles": {"x": {"detector": "a", "by_engine": {"gpu": {}}}}}, "profiles.x.by_engine.gpu"),
    ({"profiles": {"x": {}}}, "profiles.x: needs a detector or a classifier"),
    ({"pipeline": {"profile": "nope"}, "profiles": {"fd": {"detector": "a"}}}, "unknown profile 'nope'"),
])
def test_bad_keys_and_values_are_named(data, where):
    with pytest.raises(ConfigError) as err:
        config.from_dict(data)
    assert where in str(err.value)


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
