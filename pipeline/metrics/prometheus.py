"""``python run.py metrics --prometheus [HOST:]PORT``: the pipeline's metrics for Prometheus.

Subscribes to a running pipeline's metrics endpoint and serves the latest
snapshot of every actor at ``/metrics`` through prometheus_client: a collector
of our own (``PipelineCollector``) in a registry of our own (not the process'
global one), exposed in the format the scraper asks for (Prometheus text 0.0.4
by default, OpenMetrics when the ``Accept`` header asks for it), with an index
page at ``/``:

- every family has ``# HELP`` and ``# TYPE``; counters end in ``_total``,
  durations are in seconds (``_seconds``), shares are ratios (0..1);
- every counter an actor of that role keeps (the table of roles, ``actors/roles.py``) is there from its first snapshot
  (0 until it counts), drops and rejects also by ``reason``;
- every series of a per-camera actor (``capture-NAME``, ``encoder-NAME``) has ``camera="NAME"`` beside its
  ``actor`` (``camera="default"`` for the one camera's ``capture`` and ``encoder``), and an actor's counters
  of one camera (``camera.NAME.KEY``: the detector's drops, the aggregator's completed and partial frames,
  several cameras) are the families ``edgepipe_camera_KEY`` with ``camera="NAME"`` (drops by ``reason``:
  ``edgepipe_camera_dropped_by_reason``);
- ``edgepipe_up`` is 1 while some actor reported within ``stale_after``
  seconds, else 0; an actor that sent its final snapshot, or fell silent for
  ``stale_after`` seconds, has its series removed, so a pipeline that is gone
  leaves only ``edgepipe_up 0``.
"""
from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from edgepipe.actors.roles import COMMON, ROLES, role_of
from edgepipe.bus.messages import DEFAULT_CAMERA, Metric

_BAD = re.compile(r"[^a-zA-Z0-9_]")
DEFAULT_STALE_S = 5.0

# every counter an actor of a role keeps, and its drop reasons: the table of roles'
COUNTERS: Dict[str, Tuple[str, ...]] = {r.name: r.counters for r in ROLES}
DROP_REASONS: Dict[str, Tuple[str, ...]] = {r.name: r.drops for r in ROLES if r.drops}
REJECT_REASONS = ("bad_frames", "unknown_kind", "oversized", "malformed", "wrong_version", "wrong_kind",
                  "wrong_camera", "bad_field", "bad_image", "bad_value", "missing_field", "unknown_field")  # bus.codec's

# by family name, as prometheus_client names a family: a counter's without "_total" (its samples have it)
HELP: Dict[str, str] = {
    "edgepipe_up": "1 while the pipeline reports metrics, 0 once every actor has ended or fell silent",
    "edgepipe_in": "Messages (frames, jobs, results) the actor took in",
    "edgepipe_out": "Messages the actor passed on",
    "edgepipe_dropped": "Frames the actor accepted or expected and will not pass on",
    "edgepipe_dropped_by_reason": "Dropped frames by reason",
    "edgepipe_rejected": "Messages refused by the actor's decoder (malformed, hostile or wrong version)",
    "edgepipe_rejected_by_reason": "Refused messages by reason",
    "edgepipe_camera_dropped": "Frames of one camera the actor accepted or expected and will not pass on",
    "edgepipe_camera_dropped_by_reason": "Dropped frames of one camera by reason",
    "edgepipe_camera_completed": "Frames of one camera that left the aggregator with every expression",
    "edgepipe_camera_partial": "Frames of one camera that left the aggregator without every expression",
    "edgepipe_restarts": "Engine restarts by the watchdog",
    "edgepipe_completed": "Frames that left the aggregator with every expression",
    "edgepipe_partial": "Frames that left the aggregator without every expression (deadline or error)",
    "edgepipe_fps": "Frames (or jobs) out per second over the last metrics window",
    "edgepipe_fps_average": "Frames (or jobs) out per second since the actor started",
    "edgepipe_busy_ratio": "Share of the last metrics window in which the actor had work in hand",
    "edgepipe_busy_p50_seconds": "Median time the actor spent on one item",
    "edgepipe_busy_p99_seconds": "99th percentile of the time the actor spent on one item",
    "edgepipe_latency_p50_seconds": "Median latency from capture to this actor's output",
    "edgepipe_latency_p99_seconds": "99th percentile of the latency from capture to this actor's output",
    "edgepipe_uptime_seconds": "Seconds since the actor started",
    "edgepipe_queue_depth": "Frames or jobs waiting in the actor",
    "edgepipe_runs_on": "1 for each device or engine the actor's model runs on",
    "edgepipe_device_busy_ratio": "Share of the last second the accelerator device was running an invoke",
    "edgepipe_device_invokes": "Invokes the accelerator device ran",
    "edgepipe_device_switches": "Model switches on the accelerator device (parameter reloads)",
    "edgepipe_device_busy_seconds": "Seconds the accelerator device spent running invokes",
    "edgepipe_device_active_seconds": "Seconds from the device's first invoke to its last",
    "edgepipe_soc_temp_celsius": "Temperature of the system on chip (a Pi's sensors)",
    "edgepipe_power_watts": "Power the board draws (a Pi's sensors)",
}
_GAUGES = {"fps": "edgepipe_fps", "fps_avg": "edgepipe_fps_average", "uptime_s": "edgepipe_uptime_seconds",
           "pending": "edgepipe_queue_depth", "queue": "edgepipe_queue_depth"}
_DEVICE = {"busy_pct": ("edgepipe_device_busy_ratio", "gauge", 0.01),
           "invokes": ("edgepipe_device_invokes", "counter", 1.0),
           "switches": ("edgepipe_device_switches", "counter", 1.0),
           "busy_s": ("edgepipe_device_busy_seconds", "counter", 1.0),
           "active_s": ("edgepipe_device_active_seconds", "counter", 1.0)}

_UNITS = (("_c", "_celsius"), ("_w", "_watts"), ("_v", "_volts"), ("_a", "_amperes"), ("_hz", "_hertz"))

Labels = Tuple[Tuple[str, str], ...]
Family = Union[CounterMetricFamily, GaugeMetricFamily]
_Sample = Tuple[str, str, Labels, float]  # family name, "counter" | "gauge", labels, value


def metric_name(key: str) -> str:
    return "edgepipe_" + _BAD.sub("_", key)


def actor_role(actor: str) -> str:
    """The role of an actor name (``fer-3`` -> ``fer``, ``capture-left`` -> ``capture``; a name of no role: itself)."""
    role = role_of(actor)
    return role.name if role is not None else actor


def actor_labels(actor: str) -> Labels:
    """The labels of every series of ``actor``: its name, and its camera for a per-camera actor."""
    role = role_of(actor)
    if role is None or not role.per_camera:
        return (("actor", actor),)
    return (("actor", actor), ("camera", actor[len(role.name) + 1:] or DEFAULT_CAMERA))


def _gauge(key: str, value: float) -> Tuple[str, float]:
    """A gauge key of the metrics -> (Prometheus name, value in base units)."""
    if key in _GAUGES:
        return _GAUGES[key], value
    if key == "busy_pct":
        return "edgepipe_busy_ratio", value / 100.0
    m = re.match(r"(.*)_ms_(p\d+)$", key)
    if m:
        return metric_name("%s_%s_seconds" % (m.group(1), m.group(2))), value / 1000.0
    if key.endswith("_ms"):
        return metric_name(key[:-3] + "_seconds"), value / 1000.0
    if key.endswith("_s"):
        return metric_name(key[:-2] + "_seconds"), value
    if key.endswith("_pct"):
        return metric_name(key[:-4] + "_ratio"), value / 100.0
    for short, unit in _UNITS:
        if key.endswith(short):
            return metric_name(key[:-len(short)] + unit), value
    return metric_name(key), value


def _counter_samples(actor: str, m: Metric) -> Iterator[_Sample]:
    """Every counter an actor of this role keeps (0 until it counts), drops and rejects also by reason."""
    role = actor_role(actor)
    a = actor_labels(actor)
    counters = {k: 0 for k in COUNTERS.get(role, COMMON)}
    counters.update({"dropped." + r: 0 for r in DROP_REASONS.get(role, ())})
    counters.update({"rejected." + r: 0 for r in REJECT_REASONS})
    counters.update(m.counters)
    for k, v in counters.items():
        head, _, reason = k.partition(".")
        if head == "camera" and "." in reason:  # camera.NAME.KEY: one camera's, a family with its label
            camera, _, key = reason.partition(".")
            head, _, reason = key.partition(".")
            c: Labels = (("actor", actor), ("camera", camera))
            if reason and head in ("dropped", "rejected"):
                yield "edgepipe_camera_%s_by_reason" % head, "counter", c + (("reason", reason),), v
            else:
                yield metric_name("camera_" + key), "counter", c, v
        elif reason and head in ("dropped", "rejected"):
            yield "edgepipe_%s_by_reason" % head, "counter", a + (("reason", reason),), v
        else:
            yield metric_name(k), "counter", a, v


def _gauge_samples(actor: str, m: Metric) -> Iterator[_Sample]:
    a = actor_labels(actor)
    for k, v in m.gauges.items():
        if k.startswith("on."):
            yield "edgepipe_runs_on", "gauge", a + (("device", k[3:]),), v
        elif k.startswith("device."):
            device, _, stat = k[len("device."):].rpartition(".")
            name, typ, scale = _DEVICE.get(stat, (metric_name("device_" + stat), "gauge", 1.0))
            yield name, typ, a + (("device", device),), v * scale
        else:
            name, value = _gauge(k, v)
            yield name, "gauge", a, value


class _Families:
    """The families of one scrape: family name -> type, and -> {labels: value}."""

    def __init__(self) -> None:
        self.types: Dict[str, str] = {}
        self.samples: Dict[str, Dict[Labels, float]] = {}

    def add(self, name: str, typ: str, labels: Labels, value: float) -> None:
        if typ == "counter" and name.endswith("_total"):
            name = name[:-len("_total")]  # what prometheus_client does to a counter's name
        while self._taken(name, typ):  # a key that maps onto a family of the other type: keep both
            name = name + "_" + typ
        self.types[name] = typ
        self.samples.setdefault(name, {})[labels] = float(value)

    def _taken(self, name: str, typ: str) -> bool:
        """Whether ``name`` or its sample names belong to a family of the other type."""
        if self.types.get(name, typ) != typ:
            return True
        if typ == "counter":  # its samples are name_total
            return self.types.get(name + "_total") == "gauge"
        return name.endswith("_total") and self.types.get(name[:-len("_total")]) == "counter"

    def build(self) -> List[Family]:
        out: List[Family] = []
        for name in sorted(self.samples):
            counter = self.types[name] == "counter"
            sample = name + "_total" if counter else name
            help_text = HELP.get(name, "edgepipe metric %s" % sample)
            fam: Family = (CounterMetricFamily if counter else GaugeMetricFamily)(name, help_text)
            for labels, value in sorted(self.samples[name].items()):  # each with its own labels, as sent
                fam.add_sample(sample, dict(labels), value)
            out.append(fam)
        return out


def families(latest: Dict[str, Metric]) -> List[Family]:
    """The metric families of the latest snapshot per actor; ``edgepipe_up`` is 1 if there is any.

    Counters go in first, so a gauge that maps onto a counter's name is the one renamed."""
    fam = _Families()
    fam.add("edgepipe_up", "gauge", (), 1.0 if latest else 0.0)
    actors = sorted(latest)
    for actor in actors:
        for sample in _counter_samples(actor, latest[actor]):
            fam.add(*sample)
    for actor in actors:
        for sample in _gauge_samples(actor, latest[actor]):
            fam.add(*sample)
    return fam.build()


class PipelineCollector(Collector):
    """A prometheus_client collector over the snapshots ``snapshots()`` returns (actor -> latest Metric)."""

    def __init__(self, snapshots: Callable[[], Dict[str, Metric]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Family]:
        yield from families(self.snapshots())


def registry_of(snapshots: Callable[[], Dict[str, Metric]]) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) with only the pipeline's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(snapshots))
    return registry


def render(latest: Dict[str, Metric]) -> str:
    """Prometheus text exposition (0.0.4) of the latest snapshot per actor: what a plain scrape gets."""
    return generate_latest(registry_of(lambda: latest)).decode()


INDEX = """<!doctype html><html><head><meta charset="utf-8"><title>edgepipe exporter</title></head>
<body><h1>edgepipe metrics exporter</h1><p>Metrics of the pipeline at <code>%s</code>:
<a href="/metrics">/metrics</a> (Prometheus text format). <code>edgepipe_up</code> is %d.</p></body></html>
"""


class Exporter:
    """An HTTP server (its own threads) over the snapshots that the caller feeds with ``update``.

    ``/metrics`` is prometheus_client's exposition of ``registry``, in the format the request's ``Accept``
    header picks (``choose_encoder``, as prometheus_client's own handlers do)."""

    def __init__(self, host: str, port: int, stale_after: float = DEFAULT_STALE_S, source: str = "") -> None:
        self.latest: Dict[str, Metric] = {}
        self.heard: Dict[str, float] = {}  # actor -> time.monotonic() of its last snapshot
        self.stale_after = stale_after
        self.source = source
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified on every snapshot taken in
        self.updates = 0  # snapshots taken in so far
        self.registry = registry_of(self.fresh)
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                    self._send(ctype, encoder(exporter.registry))
                elif path in ("/", "/index.html"):
                    up = int(bool(exporter.fresh()))
                    self._send("text/html; charset=utf-8",
                               (INDEX % (_escape_html(exporter.source or "?"), up)).encode())
                else:
                    self.send_error(404)

            def _send(self, ctype: str, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="prometheus", daemon=True)

    @property
    def address(self) -> Tuple[str, int]:
        return self.server.server_address[:2]

    def update(self, m: Metric) -> None:
        with self.lock:
            if m.final:  # the actor ended: its series go
                self.latest.pop(m.actor, None)
                self.heard.pop(m.actor, None)
            else:
                self.latest[m.actor] = m
                self.heard[m.actor] = time.monotonic()
            self.updates += 1
            self.changed.notify_all()

    def wait_update(self, seen: int, timeout: Optional[float] = None) -> int:
        """Block until more than ``seen`` snapshots were taken in (or ``timeout``); the count now."""
        with self.changed:
            self.changed.wait_for(lambda: self.updates > seen, timeout)
            return self.updates

    def fresh(self) -> Dict[str, Metric]:
        """The snapshots of the actors heard from within ``stale_after`` seconds (the others are forgotten)."""
        now = time.monotonic()
        with self.lock:
            for actor in [a for a, t in self.heard.items() if now - t > self.stale_after]:
                self.latest.pop(actor, None)
                self.heard.pop(actor, None)
            return dict(self.latest)

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _escape_html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
