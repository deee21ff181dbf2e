"""The resources actor (main process): the machine's sensors as gauges, and what the summary says of them.

Every ``interval`` seconds it reads ``PiSensors`` in its own thread and
publishes ``soc_temp_c``, ``throttle.*``, ``power_w`` and ``fps_per_w`` (frames
finished per second, from ``frames_done``, over the power) with its metrics.
Sensors this machine lacks are absent. ``summary()`` gives the run's figures:
temperature (last, max), throttling (words now and since boot), power (mean,
max), FPS per W, and the CPU % and RSS of every process (from the final
metrics of the actors, one entry per pid).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from edgepipe.actors.monitoring.resources import PiSensors, ResourcesConfig, decode_throttled, throttle_words
from edgepipe.actors.runtime.base import Actor, in_thread
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.bus.messages import Metric
from edgepipe.bus.sockets import Bus


class ResourceMonitor(Actor):
    role = "resources"

    def __init__(self, name: str, bus: Bus, section: ResourcesConfig, endpoints: Endpoints, context: Context,
                 sensors: Optional[PiSensors] = None) -> None:
        super().__init__(name, bus, endpoints, context)
        self.sensors = sensors or PiSensors(section.sysfs_root, section.vcgencmd)
        self.interval = context.metrics_interval
        self.frames_done: Optional[Callable[[], int]] = None  # frames completed so far (for FPS per watt)
        self.engines: Dict[str, str] = {}  # role -> engine, published as engine.ROLE.ENGINE = 1
        self.executor: Optional[ThreadPoolExecutor] = None
        self.samples: List[Dict[str, float]] = []
        self.sampled: Optional[asyncio.Event] = None  # set after each sample (tests wait on it)
        self._last_frames: Optional[tuple] = None

    async def setup(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.sampled = asyncio.Event()
        await self.sample_once()  # before ready: a run shorter than the first sample still has one

    async def sample_once(self) -> Dict[str, float]:
        loop = asyncio.get_running_loop()
        gauges = await in_thread(self.executor, self.sensors.sample)
        if self.frames_done is not None:
            now, done = loop.time(), self.frames_done()
            if self._last_frames is not None and now > self._last_frames[0]:
                fps = (done - self._last_frames[1]) / (now - self._last_frames[0])
                gauges["pipeline_fps"] = round(fps, 3)
                if gauges.get("power_w"):
                    gauges["fps_per_w"] = round(fps / gauges["power_w"], 3)
            self._last_frames = (now, done)
        for k, v in gauges.items():
            self.stats.gauge(k, v)
        for role, engine in self.engines.items():
            self.stats.gauge("engine.%s.%s" % (role, engine), 1.0)
        self.samples.append(gauges)
        assert self.sampled is not None
        self.sampled.set()
        return gauges

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the sampling period, not a synchronisation
            await self.sample_once()

    async def cleanup(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)

    def summary(self, fps: float, snaps: Dict[str, Metric], names: Dict[int, str]) -> Dict[str, Any]:
        """The run's resources; a key is absent where the machine has no such sensor."""
        out: Dict[str, Any] = {"processes": process_summary(snaps, names)}
        temps = [s["soc_temp_c"] for s in self.samples if "soc_temp_c" in s]
        if temps:
            out["soc_temp_c"] = {"last": temps[-1], "max": max(temps)}
        flags = [s for s in self.samples if "throttled_bits" in s]
        if flags:
            last = flags[-1]
            ever = 0
            for s in flags:
                ever |= int(s["throttled_bits"])
            decoded = decode_throttled("throttled=0x%x" % ever)
            assert decoded is not None
            out["throttling"] = {"hex": "0x%x" % int(last["throttled_bits"]), "now": throttle_words(last, "now"),
                                 "during_run": decoded["now"], "since_boot": throttle_words(last, "boot")}
        watts = [s["power_w"] for s in self.samples if "power_w" in s]
        if watts:
            mean = sum(watts) / len(watts)
            out["power_w"] = {"mean": round(mean, 3), "max": max(watts)}
            if mean > 0:
                out["fps_per_w"] = round(fps / mean, 3)
        return out


def process_summary(snaps: Dict[str, Metric], names: Dict[int, str]) -> Dict[str, Dict[str, float]]:
    """Process name -> CPU % (average over the run; 100 = one core) and RSS MB, from the actors' final metrics."""
    out: Dict[str, Dict[str, float]] = {}
    for m in snaps.values():
        g = m.gauges
        if "process.rss_mb" not in g and "process.cpu_pct_avg" not in g:
            continue
        name = names.get(m.pid, "pid %d" % m.pid)
        entry = out.setdefault(name, {"pid": m.pid})
        for key, field in (("process.cpu_pct_avg", "cpu_pct"), ("process.rss_mb", "rss_mb")):
            if key in g:
                entry[field] = max(entry.get(field, 0.0), g[key])
    return out


def resource_lines(r: Dict[str, Any]) -> List[str]:
    """The summary's lines for ``summary()``'s dict (none for a sensor the machine lacks)."""
    lines = []
    procs = r.get("processes", {})
    if procs:
        lines.append("processes: " + "; ".join(
            "%s %s CPU, %s RSS" % (name, "%.0f%%" % p["cpu_pct"] if "cpu_pct" in p else "?",
                                   "%.0f MB" % p["rss_mb"] if "rss_mb" in p else "?")
            for name, p in procs.items()))
    pi = []
    if "soc_temp_c" in r:
        pi.append("SoC %.1f °C (max %.1f)" % (r["soc_temp_c"]["last"], r["soc_temp_c"]["max"]))
    if "throttling" in r:
        t = r["throttling"]
        pi.append("throttling now: %s; during the run: %s; since boot: %s"
                  % (", ".join(t["now"]) or "none", ", ".join(t["during_run"]) or "none",
                     ", ".join(t["since_boot"]) or "none"))
    if "power_w" in r:
        pi.append("power %.2f W (max %.2f)%s" % (r["power_w"]["mean"], r["power_w"]["max"],
                                                 ", %.2f FPS/W" % r["fps_per_w"] if "fps_per_w" in r else ""))
    if pi:
        lines.append("machine: " + "; ".join(pi))
    return lines
