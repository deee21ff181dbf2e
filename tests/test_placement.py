"""Placement per role: explicit engines, a model with no Edge TPU file, and `auto` from the per-model table."""
from __future__ import annotations

import json
import logging

import pytest
from helpers import inproc_config, run_async

from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.loading import ConfigError, apply_overrides
from edgepipe.pipeline.plan.placement import load_table, place
from edgepipe.pipeline.runner import RunOptions, run


def auto_cfg(**kw):
    cfg = inproc_config(pipeline={"engine": "auto", "source": "synthetic:faces=1,fps=0"}, **kw)
    cfg.engine.auto.accelerator = "fake"
    return cfg


def test_auto_puts_fer64_on_the_cpu_when_the_table_says_it_is_faster_there():
    cfg = auto_cfg()
    table = {"fer64": {"cpu_ms": 0.5}}  # against 6.47 ms on the (fake) Edge TPU
    p = place(cfg, table=table)
    assert (p["detector"].engine, p["detector"].model, p["detector"].devices) == ("fake", "coral-ssd-face",
                                                                                  ["fake:0"])
    assert (p["fer"].engine, p["fer"].model, p["fer"].devices) == ("cpu", "fer64", [])
    assert "auto" in p["fer"].reason and "measured table" in p["fer"].reason


def test_auto_keeps_fer64_on_the_accelerator_when_the_cpu_is_slow():
    cfg = auto_cfg()
    p = place(cfg, table={"fer64": {"cpu_ms": 40.0}})  # a slow CPU: 40 ms per face
    assert p["fer"].engine == "fake"


def test_auto_reads_the_table_bench_models_writes(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"rows": [{"model": "fer64", "cpu": {"1": {"median_ms": 60.0}}, "tpu_ms": None}]}))
    assert load_table(str(path)) == {"fer64": {"cpu_ms": 60.0}}
    cfg = auto_cfg()
    cfg.engine.auto.table = str(path)
    assert place(cfg)["fer"].engine == "fake"
    path.write_text("not json")
    assert load_table(str(path)) == {}  # a broken table is ignored (with a warning), not fatal


def test_auto_without_an_edge_tpu_runs_on_the_cpu_and_says_why():
    cfg = inproc_config(pipeline={"engine": "auto"})
    p = place(cfg, tpu_check=lambda: (False, "no Coral on USB"))
    assert p["detector"].engine == "cpu" and p["detector"].model == "blazeface-full"
    assert p["fer"].engine == "cpu" and "no Coral on USB" in p["fer"].reason


def test_a_model_with_no_edge_tpu_file_runs_on_the_cpu_with_one_warning(caplog):
    cfg = inproc_config(pipeline={"engine": "edgetpu"})
    with caplog.at_level(logging.WARNING, logger="edgepipe.placement"):
        p = place(cfg)
    assert p["detector"].engine == "edgetpu" and p["detector"].devices == ["edgetpu:"]
    assert p["fer"].engine == "cpu" and p["fer"].model == "fer64"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["model fer64 has no Edge TPU file: fer runs fer64 on the CPU"]


def test_place_option_overrides_one_role_and_is_validated():
    cfg = apply_overrides(inproc_config(), place=["fer=cpu"])
    p = place(cfg)
    assert p["detector"].engine == "fake" and p["fer"].engine == "cpu"
    with pytest.raises(ConfigError, match="--place fer=gpu: placement.fer: 'gpu' is not one of"):
        apply_overrides(inproc_config(), place=["fer=gpu"])
    with pytest.raises(ConfigError, match="placement.fer: 'gpu' is not one of"):
        config.from_dict({"placement": {"fer": "gpu"}})


def test_the_summary_says_where_each_role_ran():
    cfg = auto_cfg()
    cfg.engine.auto.table = ""
    s = run_async(run(cfg, RunOptions(frames=10)))
    assert s["frames_completed"] == 10
    assert s["placement"]["detector"]["devices"] == ["fake:0"]
    assert s["placement"]["fer"]["engine"] == "cpu"  # the manifest's default CPU time for FER64: 0.52 ms
    assert set(s["devices"]) == {"fake:0"}
    assert s["devices"]["fake:0"]["invokes"] == 10  # the detector only
    assert s["rss_mb"]["total"] > 0


def test_two_processes_on_one_fake_device_are_refused_at_config_time():
    data = {"pipeline": {"engine": "fake"}, "groups": {"a": {"actors": ["detector"]}, "b": {"actors": ["fer"]}},
            "profiles": {"fd+fer64": {"detector": "coral-ssd-face", "fer": "fer64"}}}
    with pytest.raises(ConfigError, match="both claim fake device 'fake:0'"):
        config.from_dict(data)
    data["placement"] = {"fer": "cpu"}
    config.from_dict(data)  # FER on the CPU: only group a uses the device


def test_looking_for_an_edge_tpu_never_raises_and_says_why_not():
    from edgepipe.pipeline.plan.placement import edgetpu_present

    found, why = edgetpu_present()
    assert found or why  # here: no libedgetpu or no Coral, and the reason in words
    cfg = inproc_config(pipeline={"engine": "auto"})
    p = place(cfg)  # the real check: a machine without a Coral runs every role on the CPU
    if not found:
        assert {pl.engine for pl in p.values()} == {"cpu"} and why in p["fer"].reason


def test_auto_uses_the_cpu_when_the_edge_tpu_delegate_crashes_its_probe(monkeypatch):
    """A Coral is attached and libedgetpu loads, but the runtime dies loading the delegate (a stand-in
    loader that really segfaults the probe child): auto says so and runs every role on the CPU."""
    import ctypes.util
    from pathlib import Path

    from edgepipe.models.engines import delegate_probe, litert
    from edgepipe.pipeline.plan import edgetpu_check, placement

    standins = str(Path(__file__).resolve().parent / "delegate_standins.py")
    monkeypatch.setenv(delegate_probe.ENV_LOADER, standins + ":crash_segv")
    monkeypatch.setenv(litert.ENV_LIBRARY, ctypes.util.find_library("c") or "libc.so.6")
    monkeypatch.setattr(edgetpu_check, "_coral_attached", lambda: True)
    found, why = placement.edgetpu_present()
    assert not found
    assert why.startswith("the Edge TPU delegate does not load") and "SIGSEGV" in why
    cfg = inproc_config(pipeline={"engine": "auto"})
    p = place(cfg)
    assert {r.engine for r in p.values()} == {"cpu"}
    assert "SIGSEGV" in p["detector"].reason
