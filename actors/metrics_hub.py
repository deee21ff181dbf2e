"""Metrics hub: every actor's PUB connects here; the hub keeps the latest
snapshot per actor and republishes them on the public metrics endpoint that
``run.py metrics`` and other subscribers attach to.

Python 3.9 compatible.
"""
from __future__ import annotations

from typing import Dict

from bus.messages import Metric
from bus.sockets import Bus

from .base import Actor


class MetricsHub(Actor):
    kind = "metrics"

    def __init__(self, name: str, bus: Bus, *, inbound_endpoint: str, public_endpoint: str, hwm: int = 1000) -> None:
        super().__init__(name, bus)  # the hub does not report on itself
        self.inbound_endpoint = inbound_endpoint
        self.public_endpoint = public_endpoint
        self.hwm = hwm
        self.latest: Dict[str, Metric] = {}

    async def setup(self) -> None:
        self.inbound = self.channel(self.bus.sub(self.inbound_endpoint, hwm=self.hwm, bind=True, name=self.name,
                                                 topics=("metric",)))
        self.public = self.channel(self.bus.pub(self.public_endpoint, hwm=self.hwm, name=self.name + ".public"))

    async def run(self) -> None:
        while True:
            m = await self.inbound.recv()
            if isinstance(m, Metric):
                self.latest[m.actor] = m
                await self.public.send(m)
