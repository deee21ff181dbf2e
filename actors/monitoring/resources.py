"""What the machine spends on a run: per process CPU % and RSS; on a Raspberry Pi
the SoC temperature, the throttling flags and the power drawn.

- ``ProcessMeter``: CPU % (from ``/proc/PID/stat``, since the previous sample and
  since the meter started) and RSS (``/proc/PID/status``). ``process_gauges()``
  gives this process's, shared by every actor of the process.
- ``PiSensors``: ``thermal_zone0`` under an injectable sysfs root;
  ``vcgencmd get_throttled`` decoded into words; ``vcgencmd pmic_read_adc``
  summed over the rails (V x A of each rail that has both an ``_A`` and a
  ``_V`` line). The command is injectable. A sensor the machine does not have
  is absent from the gauges, never zero, and is not asked again.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
from typing import Annotated, Dict, List, Optional, Sequence, Tuple

import msgspec
from msgspec import Meta

from edgepipe.actors.runtime.settings import Section


class ResourcesConfig(Section):
    """Where the Raspberry Pi's sensors are read (a sensor the machine lacks is left out)."""

    sysfs_root: Annotated[str, Meta(description=(
        "the SoC temperature is read from SYSFS_ROOT/sys/class/thermal/thermal_zone0/temp"))] = "/"
    vcgencmd: Annotated[List[str], Meta(description=(
        "the command (a program and its first arguments) run with get_throttled (throttling) and "
        "pmic_read_adc (power)"))] = msgspec.field(default_factory=lambda: ["vcgencmd"])


log = logging.getLogger("edgepipe.resources")

# vcgencmd get_throttled: bit -> what it means (bits 0-3 now, 16-19 since boot)
THROTTLE_WORDS: Tuple[Tuple[int, str], ...] = (
    (0, "under-voltage"),
    (1, "arm frequency capped"),
    (2, "throttled"),
    (3, "soft temperature limit"),
)
SINCE_BOOT_SHIFT = 16
GAUGE_KEYS = {0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit"}

_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+|\d+)")
_PMIC = re.compile(r"(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-+0-9.eE]+)[AV]")


# ---------------------------------------------------------------- parsers (recorded outputs in tests/data/pi5)

def decode_throttled(text: str) -> Optional[Dict[str, object]]:
    """``throttled=0x50005`` -> {"bits": 0x50005, "now": [...], "since_boot": [...]}; None when unreadable."""
    m = _THROTTLED.search(text or "")
    if not m:
        return None
    bits = int(m.group(1), 0)
    now = [w for b, w in THROTTLE_WORDS if bits & (1 << b)]
    boot = [w for b, w in THROTTLE_WORDS if bits & (1 << (b + SINCE_BOOT_SHIFT))]
    return {"bits": bits, "hex": "0x%x" % bits, "now": now, "since_boot": boot}


def pmic_rails(text: str) -> Dict[str, float]:
    """Rail -> W for every rail of ``pmic_read_adc`` that has both a current and a voltage line."""
    amps: Dict[str, float] = {}
    volts: Dict[str, float] = {}
    for name, unit, value in _PMIC.findall((text or "").replace("\x00", "\n")):
        try:
            v = float(value)
        except ValueError:
            continue
        (amps if unit == "A" else volts)[name] = v
    return {rail: amps[rail] * volts[rail] for rail in amps if rail in volts}


def pmic_power_w(text: str) -> Optional[float]:
    """Total power over the paired rails, W; None when the output has no paired rail."""
    rails = pmic_rails(text)
    return sum(rails.values()) if rails else None


def read_soc_temp_c(sysfs_root: str = "/") -> Optional[float]:
    """``thermal_zone0/temp`` (millidegrees) in °C; None where there is no such zone."""
    path = os.path.join(sysfs_root, "sys/class/thermal/thermal_zone0/temp")
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip()) / 1000.0
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- per process

def status_mb(pid: int, key: str, proc_root: str = "/proc") -> Optional[float]:
    """A memory line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MB, or None where /proc has none."""
    try:
        with open(os.path.join(proc_root, str(pid), "status"), encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


class ProcessMeter:
    """CPU % and RSS of one process from ``/proc`` (absent elsewhere)."""

    def __init__(self, pid: int = 0, proc_root: str = "/proc") -> None:
        self.pid = pid or os.getpid()
        self.proc_root = proc_root
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.t0 = time.monotonic()
        self.cpu0 = self.cpu_s()
        self.last = (self.t0, self.cpu0)

    def cpu_s(self) -> Optional[float]:
        """User + system CPU seconds of the process so far."""
        try:
            with open(os.path.join(self.proc_root, str(self.pid), "stat"), encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / float(self.tick)  # utime, stime
        except (OSError, ValueError, IndexError):
            return None

    def rss_mb(self) -> Optional[float]:
        return status_mb(self.pid, "VmRSS", self.proc_root)

    def sample(self) -> Dict[str, float]:
        """``process.cpu_pct`` (since the previous sample), ``process.cpu_pct_avg`` (since the
        meter started; 100 = one core busy), ``process.rss_mb``; a reading /proc refuses is absent."""
        out: Dict[str, float] = {}
        now, cpu = time.monotonic(), self.cpu_s()
        if cpu is not None and self.cpu0 is not None:
            t_last, cpu_last = self.last
            if cpu_last is not None and now > t_last:
                out["process.cpu_pct"] = round(100.0 * (cpu - cpu_last) / (now - t_last), 1)
            if now > self.t0:
                out["process.cpu_pct_avg"] = round(100.0 * (cpu - self.cpu0) / (now - self.t0), 1)
            self.last = (now, cpu)
        rss = self.rss_mb()
        if rss is not None:
            out["process.rss_mb"] = round(rss, 1)
        return out


_meter: Optional[ProcessMeter] = None
_meter_lock = threading.Lock()
_cached: Tuple[float, Dict[str, float]] = (0.0, {})


def reset_process_meter() -> None:
    """Start this process's CPU average afresh (a run starts; a benchmark runs many in one process)."""
    global _meter, _cached
    with _meter_lock:
        _meter, _cached = None, (0.0, {})


def process_gauges(min_interval_s: float = 0.5) -> Dict[str, float]:
    """This process's gauges; sampled at most every ``min_interval_s`` (every actor of the process asks)."""
    global _meter, _cached
    with _meter_lock:
        if _meter is None or _meter.pid != os.getpid():
            _meter = ProcessMeter()
            _cached = (0.0, {})
        now = time.monotonic()
        if now - _cached[0] >= min_interval_s or not _cached[1]:
            _cached = (now, _meter.sample())
        return dict(_cached[1])


# ---------------------------------------------------------------- a Raspberry Pi's sensors

class PiSensors:
    """SoC temperature, throttling and power of a Raspberry Pi; absent sensors stay absent.

    ``vcgencmd`` is the command (a list: a program and its first arguments) run as
    ``vcgencmd + ["get_throttled"]``; a missing command, a failing one or output that
    does not parse marks that sensor absent for the rest of the run (logged once).
    """

    def __init__(self, sysfs_root: str = "/", vcgencmd: Sequence[str] = ("vcgencmd",),
                 timeout_s: float = 2.0) -> None:
        self.sysfs_root = sysfs_root
        self.vcgencmd = list(vcgencmd)
        self.timeout_s = timeout_s
        self.absent: Dict[str, str] = {}  # sensor -> why

    def _run(self, sensor: str, args: List[str]) -> Optional[str]:
        if sensor in self.absent:
            return None
        try:
            done = subprocess.run(self.vcgencmd + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return self._gone(sensor, "%s: %s" % (" ".join(self.vcgencmd + args), exc))
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip()
            return self._gone(sensor, "%s exited %d %s" % (" ".join(self.vcgencmd + args), done.returncode, err))
        return done.stdout.decode("utf-8", "replace")

    def _gone(self, sensor: str, why: str) -> None:
        self.absent[sensor] = why
        log.info("no %s on this machine (%s); it is left out of the metrics", sensor, why)
        return None

    def sample(self) -> Dict[str, float]:
        """The gauges the machine has: ``soc_temp_c``, ``throttled_bits`` and
        ``throttle.now.*`` / ``throttle.boot.*`` (1 or 0), ``power_w``."""
        out: Dict[str, float] = {}
        if "temperature" not in self.absent:
            temp = read_soc_temp_c(self.sysfs_root)
            if temp is None:
                self._gone("temperature", "no %s" % os.path.join(self.sysfs_root,
                                                                  "sys/class/thermal/thermal_zone0/temp"))
            else:
                out["soc_temp_c"] = round(temp, 2)
        text = self._run("throttling flags", ["get_throttled"])
        if text is not None:
            flags = decode_throttled(text)
            if flags is None:
                self._gone("throttling flags", "unexpected output %r" % text[:80])
            else:
                bits = int(flags["bits"])  # type: ignore[call-overload]
                out["throttled_bits"] = float(bits)
                for bit, key in GAUGE_KEYS.items():
                    out["throttle.now." + key] = 1.0 if bits & (1 << bit) else 0.0
                    out["throttle.boot." + key] = 1.0 if bits & (1 << (bit + SINCE_BOOT_SHIFT)) else 0.0
        text = self._run("power meter", ["pmic_read_adc"])
        if text is not None:
            watts = pmic_power_w(text)
            if watts is None:
                self._gone("power meter", "no paired _A/_V rails in its output")
            else:
                out["power_w"] = round(watts, 3)
        return out


def throttle_words(gauges: Dict[str, float], when: str) -> List[str]:
    """The words of the flags set in ``gauges`` (``when``: "now" or "boot")."""
    return [word for bit, word in THROTTLE_WORDS if gauges.get("throttle.%s.%s" % (when, GAUGE_KEYS[bit]))]
