"""Metrics hub: every actor's PUB connects here; the hub keeps the latest
snapshot per actor and republishes them on the public metrics endpoint that
``run.py metrics`` and other subscribers attach to.

The hub reports on itself there too (actor ``metrics``, every ``interval``
seconds): the metrics it relayed (``in``/``out``) and what it refused, the
malformed messages on its inbound socket and the subscriptions on its public
one that name no kind (``rejected.bad_subscription``).

Python 3.9 compatible.
"""
from __future__ import annotations

import asyncio
from typing import Dict

from bus.messages import Metric
from bus.sockets import Bus

from .base import Actor
from .tasks import TaskGroup


class MetricsHub(Actor):
    kind = "metrics"

    def __init__(self, name: str, bus: Bus, *, inbound_endpoint: str, public_endpoint: str, hwm: int = 1000,
                 interval: float = 1.0) -> None:
        super().__init__(name, bus)  # the hub's own metrics go straight to the public endpoint
        self.inbound_endpoint = inbound_endpoint
        self.public_endpoint = public_endpoint
        self.hwm = hwm
        self.interval = interval
        self.latest: Dict[str, Metric] = {}

    async def setup(self) -> None:
        self.inbound = self.channel(self.bus.sub(self.inbound_endpoint, hwm=self.hwm, bind=True, name=self.name,
                                                 topics=("metric",)))
        self.public = self.channel(self.bus.pub(self.public_endpoint, hwm=self.hwm, name=self.name + ".public"))

    async def run(self) -> None:
        async with TaskGroup() as tg:
            tg.start_soon(self._report(), name=self.name + ".report")
            while True:
                m = await self.inbound.recv()
                self.stats.count("in")
                if isinstance(m, Metric):
                    self.latest[m.actor] = m
                    await self.public.send(m, nowait=True)  # a full subscriber loses it, never the hub
                    self.stats.count("out")
                else:
                    self.stats.count("ignored")

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.public.send(self.snapshot(), nowait=True)
