"""Metrics hub: every actor's PUB connects here; the hub keeps the latest
snapshot per actor and republishes them on the public metrics endpoint that
``run.py metrics`` and other subscribers attach to.

The hub forwards without decoding: it checks a metric's frames and header
(``Codec.relay``: kind, size, ``[version, seq, nil, message]``, version),
reads only its ``actor`` name (``MetricActor``), renumbers it in the public
sequence and sends the message body on as it came. Each consumer (``run.py
metrics``, the Prometheus exporter, the web view, MQTT) decodes it with the
typed decoder, which refuses and counts a hostile one. The latest body per
actor is kept undecoded and decoded only when ``latest`` is read (the run's
summary of a group that died before its final report).

The hub reports on itself there too (actor ``metrics``, every ``interval``
seconds, and a ``final`` snapshot when it stops, after the snapshots that
arrived before the stop): the metrics it relayed (``in``/``out``) and what it
refused, the malformed messages on its inbound socket and the subscriptions on
its public one that name no kind (``rejected.bad_subscription``).
"""
from __future__ import annotations

import asyncio
from typing import Any, Dict

import msgspec

from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.tasks import task_group
from edgepipe.bus.codec import DecodeError, encode_relayed
from edgepipe.bus.messages import Metric, MetricActor
from edgepipe.bus.sockets import Bus

_METRIC = Metric.KIND.encode("ascii")


class MetricsHub(Actor):
    role = "metrics"

    hwm = 1000  # snapshots queued on the way in

    def __init__(self, name: str, bus: Bus, endpoints: Endpoints, context: Context) -> None:
        super().__init__(name, bus, {}, context)  # the hub's own metrics go straight to the public endpoint
        self.endpoints = endpoints
        self.inbound_endpoint = endpoints["metrics_in"]
        self.public_endpoint = endpoints["metrics"]
        self.interval = context.metrics_interval
        self._bodies: Dict[str, Any] = {}  # actor -> its latest metric body, undecoded
        self._decoded: Dict[str, Metric] = {}  # actor -> the last of its bodies that decoded
        self._actor = msgspec.msgpack.Decoder(MetricActor)

    @property
    def latest(self) -> Dict[str, Metric]:
        """The latest snapshot of each actor, decoded now (an actor whose latest body does not decode keeps
        its previous one; the refusal is counted in ``rejected.<reason>``)."""
        for actor, body in list(self._bodies.items()):
            frames = [_METRIC, encode_relayed(_METRIC, body, 0)[1]]
            try:
                self._decoded[actor] = self.inbound.codec.decode(frames)
            except DecodeError as exc:
                self.inbound.reject(exc)
            del self._bodies[actor]
        return dict(self._decoded)

    async def setup(self) -> None:
        self.inbound = self.channel(self.bus.sub(self.inbound_endpoint, hwm=self.hwm, bind=True, name=self.name,
                                                 topics=("metric",)))
        self.public = self.channel(self.bus.pub(self.public_endpoint, hwm=self.hwm, name=self.name + ".public"))

    async def run(self) -> None:
        async with task_group() as tg:
            tg.start_soon(self._report, name=self.name + ".report")
            while True:
                await self._relay(*await self.inbound.recv_relay())

    async def _relay(self, kind: bytes, body: Any) -> None:
        self.stats.count("in")
        if kind != _METRIC:
            self.stats.count("ignored")
            return
        try:
            actor = self._actor.decode(body).actor
        except msgspec.ValidationError as exc:  # the body is valid msgpack (Codec.relay checked)
            self.inbound.reject(DecodeError("bad_field", "metric without an actor name: %s" % exc))
            return
        self._bodies[actor] = body
        await self.public.forward(kind, body, nowait=True)  # a full subscriber loses it, never the hub
        self.stats.count("out")

    async def cleanup(self) -> None:
        """The snapshots that arrived before the stop (the other actors' final ones: the hub stops last), then
        the hub's own final one, so that a client waiting for every actor's ``final`` gets the hub's too."""
        if getattr(self, "public", None) is None or self.public.closed:
            return  # setup failed before the public endpoint was open
        while not self.inbound.closed and await self.inbound.poll(0):
            await self._relay(*await self.inbound.recv_relay())
        await self.public.send(self.snapshot(final=True), nowait=True)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.public.send(self.snapshot(), nowait=True)
