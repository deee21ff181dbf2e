"""Per-actor counters and timings, turned into ``Metric`` messages."""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Deque, Dict, Optional

from edgepipe.bus.messages import Metric


def percentile(values, q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    data = sorted(values)
    if not data:
        return 0.0
    k = max(0, min(len(data) - 1, int(round(q / 100.0 * (len(data) - 1)))))
    return float(data[k])


class Stats:
    """Counters (frames in/out, drops by reason, rejects, errors), busy time and latency."""

    def __init__(self, actor: str, window: int = 2048) -> None:
        self.actor = actor
        self.counters: Dict[str, int] = {"in": 0, "out": 0}
        self.busy_ms: Deque[float] = deque(maxlen=window)
        self.latency_ms: Deque[float] = deque(maxlen=window)
        self.gauges: Dict[str, float] = {}
        self.t_start = time.monotonic()
        self._rate_t = self.t_start
        self._rate_out = 0
        self.fps = 0.0
        self.busy_total_ms = 0.0  # time with at least one item in work, for the busy share of the last window
        self._busy_until = self.t_start  # work before the first window does not count in it
        self._rate_busy = 0.0
        self.busy_pct = 0.0

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def drop(self, reason: str, n: int = 1) -> None:
        """A frame this actor accepted or expected and will not pass on."""
        if n > 0:
            self.count("dropped", n)
            self.count("dropped." + reason, n)

    def busy(self, ms: float) -> None:
        """Time spent on one item, reported when it ends; overlapping items count their overlap once."""
        self.busy_ms.append(ms)
        now = time.monotonic()
        self.busy_total_ms += max(0.0, now - max(now - ms / 1000.0, self._busy_until)) * 1000.0
        self._busy_until = max(self._busy_until, now)

    def latency(self, ms: float) -> None:
        self.latency_ms.append(ms)

    def gauge(self, name: str, value: float) -> None:
        self.gauges[name] = float(value)

    @property
    def dropped(self) -> int:
        return self.counters.get("dropped", 0)

    def snapshot(self, rejected: Optional[Dict[str, int]] = None, final: bool = False) -> Metric:
        now = time.monotonic()
        out = self.counters.get("out", 0)
        dt = now - self._rate_t
        if dt >= 0.2 or final:
            self.fps = (out - self._rate_out) / dt if dt > 0 else 0.0
            self.busy_pct = (self.busy_total_ms - self._rate_busy) / (10.0 * dt) if dt > 0 else 0.0
            self._rate_t, self._rate_out, self._rate_busy = now, out, self.busy_total_ms
            self._busy_until = max(self._busy_until, now)  # an item in work now counts from here on: <= 100 %
        counters = dict(self.counters)
        for reason, n in (rejected or {}).items():
            counters["rejected." + reason] = n
        if rejected:
            counters["rejected"] = sum(rejected.values())
        elapsed = now - self.t_start
        gauges = dict(self.gauges)
        gauges.update({
            "fps": self.fps,
            "fps_avg": out / elapsed if elapsed > 0 else 0.0,
            "busy_pct": self.busy_pct,  # share of the last window with at least one item in work
            "busy_ms_p50": percentile(self.busy_ms, 50),
            "busy_ms_p99": percentile(self.busy_ms, 99),
            "latency_ms_p50": percentile(self.latency_ms, 50),
            "latency_ms_p99": percentile(self.latency_ms, 99),
            "uptime_s": elapsed,
        })
        return Metric(actor=self.actor, pid=os.getpid(), t=now, counters=counters, gauges=gauges, final=final)
