"""Engine settings: one class per engine kind, chosen by ``type``; fault plans apart from fault counters."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_async

from edgepipe.actors.runtime.engines import EngineHost, EngineSettings
from edgepipe.models.engines.engine import EngineError, FaultPlan
from edgepipe.models.engines.fake import InjectedFault
from edgepipe.models.engines.kinds import (ENGINE_KINDS, CpuEngineSettings, EdgeTpuEngineSettings, FakeEngineSettings,
                                           engine_kind)
from edgepipe.models.store import manifest
from edgepipe.pipeline.build import engine_settings
from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.loading import ConfigError


def test_the_type_key_picks_the_class_of_its_kind():
    assert ENGINE_KINDS == ("fake", "cpu", "edgetpu")
    assert engine_kind({"type": "fake", "devices": 2}) == FakeEngineSettings(devices=2)
    assert engine_kind({"type": "cpu", "threads": 3}) == CpuEngineSettings(threads=3)
    assert engine_kind({"type": "edgetpu", "devices": ["usb:1"]}) == EdgeTpuEngineSettings(devices=["usb:1"])
    settings = EngineSettings.of("cpu", model_paths=["/models"], threads=2)
    assert (settings.kind, settings.engine, settings.model_paths) == ("cpu", CpuEngineSettings(threads=2), ("/models",))


def test_an_unknown_type_or_a_key_of_another_kind_is_refused_by_name():
    with pytest.raises(EngineError, match=r"engine type 'tpu' is unknown \(known: fake, cpu, edgetpu\)"):
        engine_kind({"type": "tpu"})
    with pytest.raises(EngineError, match=r"engine type None is unknown"):
        engine_kind({"threads": 2})
    with pytest.raises(EngineError, match=r"engine type 'fake' has no key 'threads' \(its keys: devices, "):
        EngineSettings.of("fake", threads=2)
    with pytest.raises(EngineError, match=r"engine type 'cpu' has no key 'fallback'"):
        EngineSettings.of("cpu", fallback="cpu")


@pytest.mark.parametrize("over, message", [
    ({"fake": {"threads": 2}}, "engine.fake.threads: unknown key (known: back_after_s, cocompiled, devices, faults, "
                               "latency_ms, switch_ms_per_mb, vanish_after)"),
    ({"cpu": {"devices": ["usb:0"]}}, "engine.cpu.devices: unknown key (known: threads)"),
    ({"fake": {"type": "cpu"}}, "engine.fake.type: 'cpu' is not 'fake', the type of this table"),
    ({"edgetpu": {"type": "tpu"}}, "engine.edgetpu.type: 'tpu' is not 'edgetpu'"),
    ({"tpu": {"devices": ["usb:0"]}}, "engine.tpu: unknown key (known: auto, cpu, edgetpu, fake)"),
    ({"edgetpu": {"fallback": "gpu"}}, "engine.edgetpu.fallback: 'gpu' is not one of '', 'cpu'"),
    ({"fake": {"faults": {"fer-0": {"calls": 3}}}}, "engine.fake.faults.fer-0.calls: unknown key"),
])
def test_the_config_refuses_an_engine_table_of_the_wrong_kind(over, message):
    data = config.overlay(config.to_dict(config.load()), {"engine": over})
    with pytest.raises(ConfigError) as err:
        config.from_dict(data)
    assert str(err.value).startswith(message)


def test_engine_settings_cross_to_a_group_with_their_kind():
    """A group process gets the config as JSON (supervisor.write_config) and builds its engines from it."""
    cfg = config.load()
    cfg.engine.fake.faults = {"fer-0": FaultPlan(raise_every=3)}
    cfg.engine.edgetpu.devices = ["usb:0", "usb:1"]
    cfg.models.paths = ["/opt/models"]
    data = json.loads(json.dumps(config.to_dict(cfg)))
    assert [data["engine"][k]["type"] for k in ENGINE_KINDS] == list(ENGINE_KINDS)
    back = config.from_dict(data)
    assert back == cfg
    fake = engine_settings(back, "fake")
    assert isinstance(fake.engine, FakeEngineSettings) and fake.engine.fault_plan("fer-0") == FaultPlan(raise_every=3)
    owned = engine_settings(back, "edgetpu", group_tpu="usb:1")  # a group that owns one Edge TPU
    assert owned.engine == EdgeTpuEngineSettings(devices=["usb:1"]) and owned.model_paths == ("/opt/models",)
    assert owned.engine.device_names() == ["edgetpu:usb:1"]
    assert engine_settings(back, "fake", group_tpu="usb:1").engine.device_names() == ["fake:0"]  # not an Edge TPU
    assert engine_settings(back, "cpu").engine.device_names() == []
    assert back.engine.edgetpu.devices == ["usb:0", "usb:1"]  # the config is left as it was
    with pytest.raises(ConfigError, match="engine 'auto' has no settings"):
        engine_settings(back, "auto")


def test_a_fault_plan_is_settings_and_the_actor_counts_across_engine_restarts():
    plan = FaultPlan(raise_every=3)
    settings = EngineSettings(engine=FakeEngineSettings(latency_ms={"fer64": 0.0}, faults={"fer-0": plan}))
    spec = manifest.get("fer64")
    x = np.zeros(spec.input.shape, spec.input.dtype)

    async def invoke(host: EngineHost) -> str:
        try:
            await host.call(host.engine.invoke, [x])
        except InjectedFault:
            return "fault"
        return "ok"

    async def main():
        host, other = EngineHost(settings, spec, "fer-0"), EngineHost(settings, spec, "fer-0")
        try:
            await host.load()
            await other.load()
            seen = [await invoke(host), await invoke(host)]
            await host.restart()  # the watchdog's reload: a new engine, the same count
            seen += [await invoke(host) for _ in range(4)]
            assert seen == ["ok", "ok", "fault", "ok", "ok", "fault"]
            assert [await invoke(other) for _ in range(3)] == ["ok", "ok", "fault"]  # its own count
            assert (host.faults.calls, other.faults.calls, host.restarts) == (6, 3, 1)
            assert host.faults.plan is plan and settings.engine.faults["fer-0"] == FaultPlan(raise_every=3)
        finally:
            host.close()
            other.close()

    run_async(main())
    assert EngineHost(settings, spec, "detector").faults is None  # it asked for none
