"""MQTT out: results, face events, availability and a metrics summary to a
broker (Home Assistant, Node-RED, ...), on ``aiomqtt``.

The actor subscribes to results and to the public metrics; it turns them into
JSON messages (``mqtt_payloads``) and puts them in a bounded queue. A separate
task connects to the broker and sends what is queued. A broker that is down at
start or drops mid-run is retried with exponential backoff (``runtime.backoff``,
from ``reconnect_min_s`` doubling to ``reconnect_max_s``, waited on the actor's
``clock``; a stop ends the wait at once); meanwhile the queue
keeps the newest ``queue`` messages and drops the oldest (counted as
``queue_dropped``), so inference never waits on the broker. On every
(re)connection the publisher sends ``online`` on the availability topic (its
last will says ``offline``) and the Home Assistant discovery configs (a device
per camera), both retained; it also reads back the discovery configs under its
node and removes edgepipe's that it no longer publishes (a camera gone from the
config, discovery turned off). When the actor stops it sends what is queued (for a short while),
then ``offline``, and disconnects.

The counters (``published``, ``queue_dropped``, ``reconnects``, ``results_lost``
...) are in this actor's metrics, in the run summary and in the MQTT summary.
None of them is named ``dropped``: a message not sent over MQTT is not a lost frame.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections import deque
from importlib.metadata import version
from typing import Any, Callable, Deque, Dict, Optional, Tuple

import anyio

from edgepipe.actors.runtime.backoff import SYSTEM_CLOCK, Backoff, Clock
from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.tasks import first, spawn, task_group
from edgepipe.actors.sinks import mqtt_payloads as mp
from edgepipe.actors.sinks.mqtt_payloads import MqttConfig
from edgepipe.bus.messages import Eos, Metric, Result
from edgepipe.bus.sockets import Bus

log = logging.getLogger("edgepipe.mqtt")

FLUSH_S = 3.0  # at stop: how long to keep sending what is queued


class MqttError(RuntimeError):
    user_facing = True


def _aiomqtt():
    """The aiomqtt module, or MqttError saying how to install it."""
    try:
        import aiomqtt  # optional: the 'mqtt' extra, needed only when MQTT is on
    except ImportError:
        raise MqttError("mqtt: the aiomqtt package is missing; pip install 'edgepipe[mqtt]'") from None
    return aiomqtt


def _version() -> str:
    try:
        return version("edgepipe")
    except Exception:  # not installed (run from a source tree)
        return "dev"


class MqttSink(Actor):
    role = "mqtt"

    hwm = 1024  # results and metrics queued for the sink

    def __init__(self, name: str, bus: Bus, section: MqttConfig, endpoints: Endpoints, context: Context,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(name, bus, endpoints, context)
        mqtt = self.cfg = section
        self.clock = clock  # what the reconnect backoff waits on (tests pass a virtual one)
        self.results_endpoint = endpoints["results"]
        self.metrics_public_endpoint = endpoints["metrics"]
        self.profile = context.profile
        self._discovery: Optional[Dict[str, Dict[str, Any]]] = None
        self.cameras = tuple(context.camera_sources())
        self.labels = dict(context.labels)
        self.topics = mp.Topics(mqtt.name, mqtt.topic_prefix, mqtt.discovery_prefix, self.cameras)
        self.client_id = mqtt.client_id or "edgepipe-%s" % self.topics.node
        self.queue: Deque[Tuple[str, bytes, bool]] = deque()
        self.events: Dict[str, mp.TrackEvents] = {cam: mp.TrackEvents() for cam in self.cameras}  # tracks per camera
        self.seen: Dict[str, int] = {cam: 0 for cam in self.cameras}  # results received per camera
        self._rate: Tuple[float, Dict[str, int]] = (time.monotonic(), dict(self.seen))
        self.camera_fps: Dict[str, float] = {}
        self.latest: Dict[str, Metric] = {}
        self.connected = False
        self.changed: Optional[asyncio.Event] = None  # set (and replaced) on every change of state or counters
        self._wake: Optional[asyncio.Event] = None
        self._closing = False
        self._lost: Optional[BaseException] = None  # why the current connection dropped
        self._last_result: Dict[str, float] = {}
        for k in ("published", "queued", "queue_dropped", "publish_errors", "connects", "reconnects",
                  "connect_failures", "events", "results_lost"):
            self.stats.counters[k] = 0

    # ------------------------------------------------------------ bus side
    async def setup(self) -> None:
        _aiomqtt()  # missing: an error before anything is opened
        self.changed = asyncio.Event()
        self._wake = asyncio.Event()
        self.results = self.channel(self.bus.sub(self.results_endpoint, hwm=self.hwm, name=self.name,
                                                 topics=("result", "eos")))
        self.metrics_sub = self.channel(self.bus.sub(self.metrics_public_endpoint, hwm=1000,
                                                     name=self.name + ".metrics", topics=("metric",)))
        log.info("mqtt: publishing to %s:%d under %s", self.cfg.host, self.cfg.port, self.topics.prefix)

    async def run(self) -> None:
        """The broker connection outlives the two receiving loops: at the end it sends what is queued."""
        t0 = time.monotonic()
        async with task_group() as connection:
            # shielded from a stop (level-triggered): it sends what is queued until _flush ends it
            sender = await spawn(connection, self._connection_loop(), name=self.name + ".sender", shield=True)
            try:
                async with task_group() as loops:  # an error in either loop ends the actor with it
                    loops.start_soon(self._recv_results, name=self.name + ".results")
                    loops.start_soon(self._recv_metrics, name=self.name + ".metrics")
                    while True:
                        await asyncio.sleep(self.cfg.summary_interval_s)
                        self._summary(time.monotonic() - t0)
            finally:
                while not self.metrics_sub.closed:  # the final snapshots of actors stopped before this one
                    m = self.metrics_sub.recv_nowait()
                    if m is None:
                        break
                    if isinstance(m, Metric) and m.actor != self.name:
                        self.latest[m.actor] = m
                self._summary(time.monotonic() - t0)
                with anyio.CancelScope(shield=True):  # at most FLUSH_S
                    await self._flush(sender)

    async def _recv_results(self) -> None:
        while True:
            msg = await self.results.recv()
            lost = self.results.lost.get("result", 0)
            if lost > self.stats.counters["results_lost"]:
                self.stats.counters["results_lost"] = lost
            if isinstance(msg, Eos):  # camera "": every camera's streams ended
                for cam, events in self.events.items():
                    if msg.camera in ("", cam):
                        self._events(cam, events.end(msg.last_frame_id))
            elif isinstance(msg, Result):
                self.on_result(msg)

    async def _recv_metrics(self) -> None:
        while True:
            m = await self.metrics_sub.recv()
            if isinstance(m, Metric) and m.actor != self.name:
                self.latest[m.actor] = m

    def on_result(self, r: Result) -> None:
        self.stats.count("in")
        self.stats.count("out")  # handled (the per-actor FPS); what reached the broker is "published"
        cam, topics = r.camera, self.topics.camera(r.camera)
        self.seen[cam] = self.seen.get(cam, 0) + 1
        hz = self.cfg.results_hz
        now = time.monotonic()
        if hz > 0 and now - self._last_result.get(cam, -1e9) >= 1.0 / hz:  # each camera at most hz
            self._last_result[cam] = now
            self.enqueue(topics.results, mp.dumps(mp.result_payload(r)))
        events = self.events.get(cam)
        if events is None:
            events = self.events[cam] = mp.TrackEvents()
        self._events(cam, events.update(r))
        state = events.state_change(r)
        if state is not None:
            self.enqueue(topics.state, mp.dumps(state), retain=True)

    def _events(self, camera: str, events) -> None:
        topic = self.topics.camera(camera).events
        for e in events:
            self.stats.count("events")
            self.enqueue(topic, mp.dumps(e))

    def _summary(self, uptime_s: float) -> None:
        """The pipeline's summary on PREFIX/metrics (with every camera's status), and each named camera's
        status on PREFIX/CAMERA/metrics."""
        now = time.monotonic()
        t0, before = self._rate
        if now - t0 > 0.05:  # results per second per camera since the last summary
            self.camera_fps = {cam: (n - before.get(cam, 0)) / (now - t0) for cam, n in self.seen.items()}
            self._rate = (now, dict(self.seen))
        cameras = {cam: mp.camera_status(self.latest, self.topics, cam, self.labels.get(cam, ""),
                                         self.camera_fps.get(cam))
                   for cam in sorted(set(self.cameras) | set(self.seen))}
        if not self.topics.flat:
            for cam, status in cameras.items():
                self.enqueue(self.topics.camera(cam).metrics, mp.dumps(status))
        own = self.own_counters()
        self.enqueue(self.topics.metrics, mp.dumps(mp.metrics_summary(self.latest, own, uptime_s, cameras)))

    def own_counters(self) -> Dict[str, Any]:
        c = self.stats.counters
        own: Dict[str, Any] = {k: c[k] for k in ("published", "queue_dropped", "publish_errors", "reconnects",
                                                 "connect_failures", "events", "results_lost")}
        own.update(connected=self.connected, queue=len(self.queue))
        return own

    def enqueue(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue a message; never waits. A full queue drops its oldest message (counted)."""
        if len(self.queue) >= self.cfg.queue:
            self.queue.popleft()
            self.stats.count("queue_dropped")
        self.queue.append((topic, payload, retain))
        self.stats.count("queued")
        self.stats.gauge("queue", len(self.queue))
        if self._wake is not None:
            self._wake.set()
        self._notify()

    def _notify(self) -> None:
        if self.changed is not None:
            ev, self.changed = self.changed, asyncio.Event()
            ev.set()

    async def wait_for(self, predicate: Callable[["MqttSink"], bool]) -> None:
        """Wait until ``predicate(self)`` holds (checked on every change of state or counters)."""
        while not predicate(self):
            assert self.changed is not None
            await self.changed.wait()

    @property
    def discovery(self) -> Dict[str, Dict[str, Any]]:
        """The Home Assistant discovery configs this run publishes (none with ``discovery = false``)."""
        if self._discovery is None:
            self._discovery = (mp.discovery_configs(self.topics, self.profile, _version(), self.labels)
                               if self.cfg.discovery else {})
        return self._discovery

    # ------------------------------------------------------------ broker side
    def _client(self):
        aiomqtt = _aiomqtt()
        c = self.cfg
        tls = None
        if c.tls:
            tls = aiomqtt.TLSParameters(ca_certs=c.ca_file or None,
                                        cert_reqs=ssl.CERT_NONE if c.tls_insecure else ssl.CERT_REQUIRED)
        will = aiomqtt.Will(self.topics.availability, b"offline", qos=c.qos, retain=True)
        return aiomqtt.Client(c.host, c.port, username=c.user or None, password=c.password or None,
                              identifier=self.client_id, will=will, tls_params=tls,
                              tls_insecure=c.tls_insecure if c.tls else None, keepalive=30, timeout=10,
                              logger=logging.getLogger("edgepipe.mqtt.client"))

    async def _connection_loop(self) -> None:
        aiomqtt = _aiomqtt()
        client = self._client()
        backoff = Backoff(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        ever = False
        while not self._closing:
            try:
                async with client:
                    self.connected = True
                    self.stats.count("reconnects" if ever else "connects")
                    if ever:
                        log.warning("mqtt: reconnected to %s:%d", self.cfg.host, self.cfg.port)
                    ever = True
                    backoff.reset()
                    self._notify()
                    await self._session(client)
                    return  # closing: done
            except aiomqtt.MqttError as exc:
                was = self.connected
                self.connected = False
                self._notify()
                if self._closing:
                    return
                delay = backoff.next()
                if was:
                    log.warning("mqtt: lost the broker %s:%d (%s); retrying in %.1f s",
                                self.cfg.host, self.cfg.port, exc, delay)
                else:
                    self.stats.count("connect_failures")
                    log.warning("mqtt: cannot reach the broker %s:%d (%s); retrying in %.1f s",
                                self.cfg.host, self.cfg.port, exc, delay)
            finally:
                self.connected = False
            await first(self.clock.sleep(delay), self._closed())  # a stop does not wait for the backoff

    async def _closed(self) -> None:
        while not self._closing:
            assert self._wake is not None
            self._wake.clear()
            await self._wake.wait()

    async def _session(self, client) -> None:
        """Connected: availability, discovery, then the queue until the actor closes."""
        lost = asyncio.Event()
        async with task_group() as tg:
            tg.start_soon(self._watch, client, lost, name=self.name + ".watch")
            await self._send_queue(client, lost)
            tg.cancel_scope.cancel()

    async def _watch(self, client, lost: asyncio.Event) -> None:
        """Sets ``lost`` when the connection drops (also while nothing is being sent). Meanwhile it reads the
        discovery configs retained under this pipeline's node and removes edgepipe's stale ones."""
        aiomqtt = _aiomqtt()
        self._lost = None
        try:
            await client.subscribe(self.topics.discovery_filter, qos=self.cfg.qos)
            async for m in client.messages:  # only the discovery configs; it ends on a disconnection
                topic, payload = str(m.topic), bytes(m.payload)
                if mp.stale_discovery(topic, payload, self.discovery):
                    log.info("mqtt: removing the stale Home Assistant config %s", topic)
                    await client.publish(topic, b"", qos=self.cfg.qos, retain=True)
        except aiomqtt.MqttError as exc:
            self._lost = exc
        lost.set()

    async def _or_lost(self, aw, lost: asyncio.Event) -> None:
        """Await ``aw``; raise the disconnection's MqttError if the connection drops first."""
        which, value = await first(aw, lost.wait())
        if which == 0:
            return value
        aiomqtt = _aiomqtt()
        raise self._lost or aiomqtt.MqttError("disconnected")

    async def _send_queue(self, client, lost: asyncio.Event) -> None:
        qos = self.cfg.qos
        retained = [(self.topics.availability, b"online")]
        retained += [(topic, mp.dumps(config)) for topic, config in self.discovery.items()]
        retained += [(self.topics.camera(cam).state, mp.dumps(events.state))
                     for cam, events in self.events.items() if events.state is not None]
        for topic, payload in retained:
            await self._or_lost(client.publish(topic, payload, qos=qos, retain=True), lost)
        assert self._wake is not None
        while True:
            while self.queue:
                item = self.queue.popleft()
                try:
                    await self._or_lost(client.publish(item[0], item[1], qos=qos, retain=item[2]), lost)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        self.stats.count("publish_errors")
                    if len(self.queue) < self.cfg.queue:
                        self.queue.appendleft(item)  # first again for the next connection
                    else:
                        self.stats.count("queue_dropped")
                    raise
                self.stats.count("published")
                self.stats.gauge("queue", len(self.queue))
                self._notify()
            if self._closing:
                await self._or_lost(client.publish(self.topics.availability, b"offline", qos=qos, retain=True),
                                    lost)
                return
            self._wake.clear()
            await self._or_lost(self._wake.wait(), lost)

    async def _flush(self, task: "asyncio.Task[None]") -> None:
        """Send what is queued (at most ``FLUSH_S``), then ``offline``, and disconnect."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), FLUSH_S)
        except asyncio.TimeoutError:
            log.warning("mqtt: %d messages still queued at stop; not sent", len(self.queue))
        finally:
            if not task.done():
                task.cancel()  # its task group waits for it
            if self.queue:
                self.stats.count("unsent_at_stop", len(self.queue))
            log.info("mqtt: %d published, %d dropped from the queue, %d reconnects (pid %d)",
                     self.stats.counters["published"], self.stats.counters["queue_dropped"],
                     self.stats.counters["reconnects"], os.getpid())
