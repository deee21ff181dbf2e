"""An actor's metrics: a ``Metric`` snapshot on the metrics endpoint every interval and a final one.

``MetricsReporter`` holds the PUB channel (connected to the metrics hub) and
the tick loop. The snapshot is the actor's ``Stats`` plus its gauges (an
actor that runs an engine adds its devices'), this process's CPU % and RSS,
and what its channels refused.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Dict, Optional

from edgepipe.actors.monitoring.resources import process_gauges
from edgepipe.actors.runtime.stats import Stats
from edgepipe.bus.messages import Metric
from edgepipe.bus.sockets import Bus, Channel


class MetricsReporter:
    def __init__(self, stats: Stats, gauges: Callable[[], Dict[str, float]],
                 rejected: Callable[[], Dict[str, int]], interval: float = 1.0) -> None:
        self.stats = stats
        self.gauges = gauges
        self.rejected = rejected
        self.interval = interval
        self.pub: Optional[Channel] = None

    def open(self, bus: Bus, endpoint: str, name: str) -> None:
        self.pub = bus.pub(endpoint, hwm=100, bind=False, name=name + ".metrics")

    def snapshot(self, final: bool = False) -> Metric:
        for k, v in self.gauges().items():
            self.stats.gauge(k, v)
        for k, v in process_gauges().items():  # this process's CPU % and RSS
            self.stats.gauge(k, v)
        return self.stats.snapshot(self.rejected(), final=final)

    async def publish(self, final: bool = False) -> None:
        if self.pub is not None and not self.pub.closed:
            await self.pub.send(self.snapshot(final), nowait=True)

    async def tick(self) -> None:
        """Publish a snapshot every interval, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.publish()

    def close(self) -> None:
        if self.pub is not None:
            self.pub.close()
