"""One place per default: the settings classes hold every default and its description; config.toml holds only the
profiles; ``run.py config`` prints them and docs/config.md is made from them. Engine kinds register themselves:
a new kind is one file, and its ``[engine.KIND]`` table is accepted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import msgspec
import msgspec.inspect as mi

from edgepipe import ROOT
from edgepipe.models import registry
from edgepipe.models.engines import kinds
from edgepipe.models.store import manifest
from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config import show
from edgepipe.pipeline.config.loading import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCS = os.path.join(ROOT, "docs", "config.md")


def test_config_toml_holds_only_the_profiles():
    assert set(config.read_toml(config.DEFAULT_CONFIG)) == {"profiles"}


def test_the_classes_defaults_and_the_profiles_are_what_load_gives():
    profiles = config.read_toml(config.DEFAULT_CONFIG)["profiles"]
    loaded = config.load()
    assert config.from_dict({"profiles": profiles}) == loaded
    assert msgspec.structs.replace(loaded, profiles={}) == Config()
    assert Config().pipeline.profile in loaded.profiles  # the default profile is one of config.toml's


def test_the_default_profile_detects_at_its_models_own_threshold(model_cache):
    """No file sets detector.score_threshold, so the detector of the default profile keeps the threshold tuned
    for its model (the manifest's min_score), not a threshold for all detectors."""
    cfg = config.load()
    assert cfg.detector.score_threshold is None
    spec = manifest.get(cfg.profile().models("cpu").detector)
    assert spec.name == "blazeface-full"
    engine = cfg.engine.settings("cpu").build(spec, model_paths=cfg.models.paths)
    engine.load()
    try:
        detector = registry.face_detector(spec, engine, score_threshold=cfg.detector.score_threshold,
                                          max_faces=cfg.detector.max_faces)
        assert detector.score_threshold == spec.options["min_score"] == 0.6
    finally:
        engine.close()


def test_every_table_and_key_has_a_description():
    missing = []
    for path, cls in show.tables():
        if not (cls.__doc__ or "").strip():
            missing.append("[%s]" % path)
        for name, t, _, doc in show.keys(cls):
            table = isinstance(t, mi.StructType)  # a table: described by its class's docstring
            if not (doc or table or cls.__name__ == "FaultPlan"):  # FaultPlan: described by engine.fake.faults
                missing.append("%s.%s" % (path, name))
    assert not missing, "without a description: %s" % ", ".join(missing)


def test_the_printed_defaults_are_a_config_file_that_gives_the_defaults():
    data = tomllib.loads(show.config_toml())
    assert config.from_dict(data) == Config()
    assert "# faces scoring at least this are kept" in show.config_toml()
    assert "\n# score_threshold = <not set>\n" in show.config_toml()  # no value: the model's own threshold


def test_the_printed_settings_in_effect_read_back_the_same(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('[mqtt]\nhost = "broker"\npassword = "s3cret"\n\n[pipeline]\nengine = "cpu"\n\n[groups.tpu]\nactors = ["detector", "fer"]\n'
                    '[engine.fake.faults.fer-0]\nraise_every = 3\n')
    cfg = config.load(str(mine))
    text = show.config_toml(cfg)
    assert "s3cret" not in text and 'password = "***"' in text
    back = config.from_dict(tomllib.loads(text.replace('"***"', '"s3cret"')))
    assert back == cfg


def test_the_config_command_prints_the_defaults():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "config", "--defaults"], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == show.config_toml()


def test_docs_config_md_is_made_from_the_classes():
    with open(DOCS, encoding="utf-8") as fh:
        assert fh.read() == show.markdown(), "docs/config.md is out of date: python run.py config --markdown > docs/config.md"


def test_the_engine_kinds_are_found_in_their_files():
    assert kinds.engine_kinds() == ("fake", "cpu", "edgetpu")
    for kind, cls in kinds.kinds().items():
        assert cls.__module__ == "edgepipe.models.engines.kind_%s" % kind
    fields = [f.name for f in mi.type_info(config.EngineConfig).fields]
    assert fields == ["fake", "cpu", "edgetpu", "auto"]


NEW_KIND = '''
"""An engine kind from a folder of its own."""
from typing import Annotated, List

from msgspec import Meta

from edgepipe.models.engines.kinds import EngineKind


class NpuEngineSettings(EngineKind, tag="npu"):
    """A made-up accelerator."""

    cores: Annotated[int, Meta(ge=1, le=8, description="NPU cores")] = 1
    devices: Annotated[List[str], Meta(description="the NPUs")] = []
'''

PROBE = '''
import json, sys
from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.show import config_toml
cfg = config.load(sys.argv[1])
s = cfg.engine.settings("npu")
print(json.dumps({"type": type(s).__name__, "kind": s.kind, "cores": s.cores, "devices": s.devices,
                  "engines": list(config.ENGINES), "placement": cfg.placement.fer,
                  "listed": "[engine.npu]" in config_toml(cfg)}))
try:
    config.load(sys.argv[2])
except config.ConfigError as exc:
    print(exc)
'''


def test_an_engine_kind_in_a_file_of_its_own_is_a_table_of_the_config(tmp_path):
    """A kind is one file: put in a folder of $EDGEPIPE_ENGINE_KINDS, its [engine.KIND] table is accepted, its
    settings are the config's, and the engines and placements accept its name."""
    kinds_dir = tmp_path / "kinds"
    kinds_dir.mkdir()
    (kinds_dir / "kind_npu.py").write_text(textwrap.dedent(NEW_KIND))
    (kinds_dir / "helper.py").write_text("raise RuntimeError('not a kind module: never imported')\n")
    good = tmp_path / "good.toml"
    good.write_text('[engine.npu]\ncores = 4\ndevices = ["npu:0"]\n\n[placement]\nfer = "npu"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine.npu]\nthreads = 2\n")
    env = dict(os.environ, EDGEPIPE_ENGINE_KINDS=str(kinds_dir))
    p = subprocess.run([sys.executable, "-c", PROBE, str(good), str(bad)], cwd=str(ROOT), env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got, refused = p.stdout.splitlines()
    assert json.loads(got) == {"type": "NpuEngineSettings", "kind": "npu", "cores": 4, "devices": ["npu:0"],
                               "engines": ["auto", "fake", "cpu", "edgetpu", "npu"], "placement": "npu",
                               "listed": True}
    assert "engine.npu.threads: unknown key (known: cores, devices)" in refused


def test_a_missing_folder_of_engine_kinds_is_named(tmp_path):
    env = dict(os.environ, EDGEPIPE_ENGINE_KINDS=str(tmp_path / "nowhere"))
    p = subprocess.run([sys.executable, "-c", "from edgepipe.pipeline.config import loading"], cwd=str(ROOT),
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "EDGEPIPE_ENGINE_KINDS: %s is not a folder" % (tmp_path / "nowhere") in p.stderr
