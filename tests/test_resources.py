"""Resources: CPU % and RSS per process; a Pi's temperature, throttling and power from recorded outputs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import inproc_config, run_async

from edgepipe.actors.monitoring.resource_monitor import ResourceMonitor, resource_lines
from edgepipe.actors.monitoring.resources import (PiSensors, ProcessMeter, ResourcesConfig, decode_throttled,
                                                  pmic_power_w, pmic_rails)
from edgepipe.actors.runtime.context import Context
from edgepipe.bus.messages import Metric
from edgepipe.bus.sockets import Bus
from edgepipe.pipeline.metrics.prometheus import render
from edgepipe.pipeline.run_command import human_summary
from edgepipe.pipeline.runner import RunOptions, run

PI5 = Path(__file__).resolve().parent / "data" / "pi5"
VCGENCMD = [sys.executable, str(PI5 / "vcgencmd.py"), str(PI5 / "vcgencmd")]


def recorded(name: str) -> str:
    return (PI5 / "vcgencmd" / name).read_text()


# ------------------------------------------------------------------ parsers on recorded outputs

@pytest.mark.parametrize("name, now, boot", [
    ("get_throttled.txt", [], []),
    ("get_throttled-0x50000.txt", [], ["under-voltage", "throttled"]),
    ("get_throttled-0x50005.txt", ["under-voltage", "throttled"], ["under-voltage", "throttled"]),
])
def test_throttled_flags_are_decoded_into_words(name, now, boot):
    flags = decode_throttled(recorded(name))
    assert flags is not None
    assert flags["now"] == now and flags["since_boot"] == boot


def test_every_throttling_word():
    flags = decode_throttled("throttled=0xf000f")
    words = ["under-voltage", "arm frequency capped", "throttled", "soft temperature limit"]
    assert flags["now"] == words and flags["since_boot"] == words
    assert decode_throttled("error=1 error_msg=\"Command not registered\"") is None


def test_pmic_power_pairs_rails_by_name():
    text = recorded("pmic_read_adc.txt")
    rails = pmic_rails(text)
    assert len(rails) == 12
    assert "EXT5V" not in rails and "BATT" not in rails  # a voltage alone is no power
    assert rails["VDD_CORE"] == pytest.approx(6.22421 * 0.861733)
    # the sum over the rails of the lines as recorded: V x A each
    volts = {line.split()[0][:-2]: float(line.split("=")[1][:-1]) for line in text.splitlines() if "volt(" in line}
    amps = {line.split()[0][:-2]: float(line.split("=")[1][:-1]) for line in text.splitlines() if "current(" in line}
    assert pmic_power_w(text) == pytest.approx(sum(a * volts[r] for r, a in amps.items()))
    assert pmic_power_w(text) == pytest.approx(7.2398, abs=1e-4)
    assert pmic_power_w("") is None and pmic_power_w(text.replace("_V volt", "_X volt")) is None


def test_pi_sensors_read_the_recorded_pi():
    g = PiSensors(str(PI5 / "sysfs"), VCGENCMD + ["--throttled", "0x50005"]).sample()
    assert g["soc_temp_c"] == 39.5
    assert g["throttled_bits"] == 0x50005
    assert g["throttle.now.under_voltage"] == 1.0 and g["throttle.now.freq_capped"] == 0.0
    assert g["throttle.boot.throttled"] == 1.0
    assert g["power_w"] == pytest.approx(7.2398, abs=1e-3)


def test_a_machine_without_sensors_has_none_not_zero(tmp_path):
    sensors = PiSensors(str(tmp_path), [str(tmp_path / "no-vcgencmd")])
    assert sensors.sample() == {}
    assert set(sensors.absent) == {"temperature", "throttling flags", "power meter"}
    assert "no-vcgencmd" in sensors.absent["power meter"]
    assert sensors.sample() == {}  # not asked again
    # a vcgencmd whose firmware lacks pmic_read_adc (a Pi 4): throttling yes, power absent
    only = tmp_path / "vc"
    only.mkdir()
    (only / "get_throttled.txt").write_text(recorded("get_throttled.txt"))
    g = PiSensors(str(tmp_path), [sys.executable, str(PI5 / "vcgencmd.py"), str(only)]).sample()
    assert g["throttled_bits"] == 0 and "power_w" not in g and "soc_temp_c" not in g


def test_process_meter_counts_this_process():
    meter = ProcessMeter()
    before = meter.cpu_s()
    sum(i * i for i in range(300000))  # some CPU work
    g = meter.sample()
    assert meter.cpu_s() > before
    assert g["process.rss_mb"] > 1.0
    assert g["process.cpu_pct"] >= 0.0 and g["process.cpu_pct_avg"] >= 0.0
    assert ProcessMeter(pid=1, proc_root="/nonexistent").sample() == {}


# ------------------------------------------------------------------ the actor and the pipeline

def test_monitor_publishes_gauges_on_the_metrics_bus():
    async def main():
        bus = Bus()
        sub = bus.sub("inproc://test-metrics", hwm=100, bind=True, name="test.metrics", topics=("metric",))
        done = [0]
        mon = ResourceMonitor("resources", bus, ResourcesConfig(), {"metrics_in": "inproc://test-metrics"},
                              Context(metrics_interval=0.05), sensors=PiSensors(str(PI5 / "sysfs"), VCGENCMD))
        mon.frames_done = lambda: done[0]
        mon.engines = {"detector": "cpu", "fer": "fake"}
        try:
            await mon.start()
            while True:  # until a snapshot carries a second sample (FPS per W needs two)
                m = await sub.recv()
                done[0] += 10
                if isinstance(m, Metric) and m.actor == "resources" and "fps_per_w" in m.gauges:
                    return m
        finally:
            await mon.stop()
            sub.close()
            bus.close()

    m = run_async(main())
    assert m.gauges["power_w"] == pytest.approx(7.2398, abs=1e-3)
    assert m.gauges["soc_temp_c"] == 39.5
    assert m.gauges["engine.detector.cpu"] == 1.0 and m.gauges["engine.fer.fake"] == 1.0
    assert "process.rss_mb" in m.gauges
    text = render({"resources": m})
    assert 'edgepipe_power_watts{actor="resources"} 7.' in text
    assert 'edgepipe_soc_temp_celsius{actor="resources"} 39.5' in text
    assert 'edgepipe_throttle_now_under_voltage{actor="resources"} 0.0' in text


def test_pipeline_summary_on_a_recorded_pi():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"},
                        resources={"sysfs_root": str(PI5 / "sysfs"), "vcgencmd": VCGENCMD + ["--throttled", "0x50000"]})
    s = run_async(run(cfg, RunOptions(frames=30)))
    r = s["resources"]
    assert r["soc_temp_c"] == {"last": 39.5, "max": 39.5}
    assert r["throttling"]["now"] == [] and r["throttling"]["since_boot"] == ["under-voltage", "throttled"]
    assert r["power_w"]["mean"] == pytest.approx(7.2398, abs=1e-3)
    assert r["fps_per_w"] == pytest.approx(s["fps"] / r["power_w"]["mean"], rel=1e-3)
    assert r["processes"]["main"]["rss_mb"] > 1.0
    assert s["engines"] == {"detector": "fake", "fer": "fake"}
    text = human_summary(s)
    assert "machine: SoC 39.5 °C (max 39.5)" in text
    assert "since boot: under-voltage, throttled" in text
    assert "FPS/W" in text and "processes: main" in text
    assert "FAKE ENGINE: detector, fer" in text


def test_pipeline_summary_here_has_no_pi_sensors(tmp_path):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"},
                        resources={"sysfs_root": str(tmp_path), "vcgencmd": [str(tmp_path / "none")]})
    s = run_async(run(cfg, RunOptions(frames=10)))
    r = s["resources"]
    assert set(r) == {"processes"}  # no temperature, throttling or power key at all
    assert "machine:" not in human_summary(s)
    assert resource_lines({}) == []
