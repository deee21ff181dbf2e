"""``--display web[:[HOST:]PORT]``: the live view, a page a browser opens.

``http://HOST:PORT/`` shows the annotated stream, a live panel per actor
(FPS, busy %, p50/p99 latency, queue, drops, restarts), the faces on screen
with their smoothed expressions, where each role runs and, when the metrics
carry them (gauges named ``resources.*``, or those of a ``resources`` actor),
temperature and power. Other paths:

- ``/stream.mjpg``: the bare MJPEG stream, for other players;
- ``/snapshot.jpg``: the newest annotated frame;
- ``/api/status``: the status document as JSON;
- ``/events``: the same document as server-sent events, at most every
  ``STATUS_INTERVAL_S`` seconds (the page's panels live on these).

The server binds loopback unless told otherwise (``web:0.0.0.0:8080``, with
a warning: anyone who can reach the port sees the camera). It runs in its own
threads (``http.server``); each client gets the newest frame when it is ready
for one, so a slow client skips frames and never slows the display (or
anything upstream).
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepipe.actors.sinks.sinks import DisplayError, Sink
from edgepipe.actors.sinks.web_page import PAGE
from edgepipe.bus.messages import Metric, Result

log = logging.getLogger("edgepipe.web")

BOUNDARY = b"edgepipeframe"
DEFAULT_PORT = 8080  # --display web
STATUS_INTERVAL_S = 0.5  # the fastest the panels refresh
KEEPALIVE_S = 15.0  # an event-stream comment when nothing changed, so proxies keep the connection
STALE_S = 5.0  # an actor silent this long is shown as stale
LOOPBACK = ("127.0.0.1", "localhost", "::1")
RESOURCES_ACTOR = "resources"  # an actor whose gauges are temperatures, power and the like
STATS_GAUGES = frozenset(("fps", "fps_avg", "busy_pct", "busy_ms_p50", "busy_ms_p99", "latency_ms_p50",
                          "latency_ms_p99", "uptime_s"))  # what every actor's Stats reports
def _num(v: Any, digits: int = 3) -> Optional[float]:
    """A JSON-safe number: None for NaN and infinities."""
    if v is None:
        return None
    v = float(v)
    return round(v, digits) if math.isfinite(v) else None


def actor_key(order: Sequence[str], name: str) -> Tuple[int, str, int]:
    """The roles' ``order`` (from the source to the sinks: the table of roles'), then workers by number
    (fer-2 before fer-10)."""
    m = re.match(r"(.*)-(\d+)$", name)
    base, n = (m.group(1), int(m.group(2))) if m else (name, -1)
    return (order.index(base) if base in order else len(order), base, n)


class _Latest:
    """The newest JPEG and a condition that wakes the clients."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jpeg: Optional[bytes] = None
        self.seq = 0
        self.closed = False

    def put(self, jpeg: bytes) -> None:
        with self.cond:
            self.jpeg = jpeg
            self.seq += 1
            self.cond.notify_all()

    def next(self, after: int) -> Tuple[int, Optional[bytes]]:
        with self.cond:
            self.cond.wait_for(lambda: self.seq > after or self.closed)
            return self.seq, (None if self.closed else self.jpeg)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class LiveState:
    """What the page shows, kept up to date from the event loop and read by the server's threads."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0
        self.closed = False
        self.metrics: Dict[str, Metric] = {}
        self.heard: Dict[str, float] = {}  # actor -> time.monotonic() of its last snapshot here
        self.result: Optional[Result] = None
        self.fps = 0.0
        self.roles: Dict[str, str] = {}  # role -> where it runs
        self.order: Tuple[str, ...] = ()  # the roles from the source to the sinks

    def _changed(self) -> None:
        self.version += 1
        self.cond.notify_all()

    def set_result(self, r: Result, fps: float) -> None:
        with self.cond:
            self.result, self.fps = r, fps
            self._changed()

    def set_metric(self, m: Metric) -> None:
        with self.cond:
            if m.final:
                self.metrics.pop(m.actor, None)
                self.heard.pop(m.actor, None)
            else:
                self.metrics[m.actor] = m
                self.heard[m.actor] = time.monotonic()
            self._changed()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_change(self, seen: int, timeout: float) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.version != seen or self.closed, timeout)
            return self.version

    def status(self) -> Dict[str, Any]:
        """The status document (``/api/status``)."""
        with self.cond:
            metrics, heard, r, fps = dict(self.metrics), dict(self.heard), self.result, self.fps
            roles, order = dict(self.roles), self.order
        now = time.monotonic()
        actors: List[Dict[str, Any]] = []
        devices: Dict[str, Optional[float]] = {}
        resources: Dict[str, Optional[float]] = {}
        for name in sorted(metrics, key=lambda a: actor_key(order, a)):
            m = metrics[name]
            c, g = m.counters, m.gauges
            if name == RESOURCES_ACTOR:  # the machine's sensors (on a Pi): not a stage of the pipeline
                resources.update((k, _num(v, 2)) for k, v in g.items()
                                 if k not in STATS_GAUGES and not k.startswith(("engine.", "on.")))
                continue
            lat = g.get("latency_ms_p50", 0.0) > 0
            actors.append({
                "name": name, "pid": m.pid,
                "fps": _num(g.get("fps", 0.0), 2), "busy_pct": _num(g.get("busy_pct", 0.0), 1),
                "p50_ms": _num(g.get("latency_ms_p50" if lat else "busy_ms_p50", 0.0)),
                "p99_ms": _num(g.get("latency_ms_p99" if lat else "busy_ms_p99", 0.0)),
                "latency_measured": lat,
                "queue": _num(g.get("pending", g.get("queue", 0.0)), 0),
                "in": c.get("in", 0), "out": c.get("out", 0), "dropped": c.get("dropped", 0),
                "rejected": c.get("rejected", 0), "restarts": c.get("restarts", 0),
                "runs_on": sorted(k[3:] for k in g if k.startswith("on.")),
                "stale": now - heard.get(name, now) > STALE_S,
            })
            for k, v in g.items():
                if k.startswith("device.") and k.endswith(".busy_pct"):
                    devices[k[len("device."):-len(".busy_pct")]] = _num(v, 1)
                elif k.startswith("resources."):
                    resources[k[len("resources."):]] = _num(v, 2)
        doc: Dict[str, Any] = {"actors": actors, "roles": roles, "devices": devices, "resources": resources,
                               "faces": [], "labels": [], "frame": None}
        if r is not None:
            doc["frame"] = {"frame_id": r.frame_id, "width": r.width, "height": r.height, "partial": r.partial,
                            "latency_ms": _num((r.t_result - r.t_capture) * 1000.0, 1), "fps": _num(fps, 2)}
            doc["faces"] = [{"track": f.track, "expression": f.expression, "smoothed": f.smoothed,
                             "confidence": _num(f.confidence), "score": _num(f.box.score),
                             "box": [_num(v, 1) for v in f.box.as_list()]} for f in r.faces]
            doc["labels"] = [[label, _num(p)] for label, p in (r.labels or [])]
        return doc


def _handler(latest: _Latest, state: LiveState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args) -> None:  # route the server's log through logging
            log.debug("%s " + fmt, self.address_string(), *args)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", PAGE)
            elif path == "/stream.mjpg":
                self._stream()
            elif path in ("/snapshot.jpg", "/frame.jpg"):
                with latest.cond:
                    jpeg = latest.jpeg
                if jpeg is None:
                    self._send(503, "text/plain", b"no frame yet")
                else:
                    self._send(200, "image/jpeg", jpeg)
            elif path == "/api/status":
                self._send(200, "application/json", json.dumps(state.status()).encode())
            elif path == "/events":
                self._events()
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=%s" % BOUNDARY.decode())
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            seq = 0
            try:
                while True:
                    seq, jpeg = latest.next(seq)
                    if jpeg is None:
                        return
                    self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                log.debug("web client %s left", self.address_string())

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            seen = -1
            try:
                while not state.closed:
                    version = state.wait_change(seen, KEEPALIVE_S)
                    if state.closed:
                        return
                    if version == seen:
                        self.wfile.write(b": keepalive\n\n")
                    else:
                        seen = version
                        self.wfile.write(b"data: " + json.dumps(state.status()).encode() + b"\n\n")
                    self.wfile.flush()
                    with state.cond:  # at most one update per STATUS_INTERVAL_S; close ends the wait
                        state.cond.wait_for(lambda: state.closed, STATUS_INTERVAL_S)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("web client %s left the event stream", self.address_string())

    return Handler


def web_address(spec: str) -> Tuple[str, int]:
    """The (host, port) a ``web[:[HOST:]PORT]`` display spec names; ValueError saying what is wrong."""
    if spec == "web":
        return "127.0.0.1", DEFAULT_PORT
    host, _, port = spec[len("web:"):].rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError("expected web, web:PORT or web:HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError("port %d is not in 0-65535 (web:0 takes any free port)" % number)
    return host or "127.0.0.1", number


class WebSink(Sink):
    """A display sink serving the live view over HTTP; ``LiveView`` feeds it results and metrics."""

    def __init__(self, host: str, port: int, quality: int = 80) -> None:
        self.host = host
        self.port = port
        self.quality = quality
        self.latest = _Latest()
        self.state = LiveState()
        self.server: Optional[ThreadingHTTPServer] = None
        self.thread: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        assert self.server is not None
        return self.server.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        if host in ("", "0.0.0.0", "::"):
            host = "<this host>"
        return "http://%s:%d/" % ("[%s]" % host if ":" in host else host, port)

    def open(self) -> None:
        try:
            self.server = ThreadingHTTPServer((self.host, self.port), _handler(self.latest, self.state))
        except (OSError, OverflowError) as exc:  # OverflowError: a port above 65535 (web_address refuses it first)
            raise DisplayError("display web: cannot listen on %s:%d (%s); pick another port, e.g. "
                               "--display web:%s:0 for any free one" % (self.host, self.port, exc, self.host)) from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="web-display", daemon=True)
        self.thread.start()
        if self.host not in LOOPBACK:
            log.warning("display web: serving on %s, not loopback: anyone who can reach port %d sees the camera",
                        self.host or "every interface", self.address[1])
        log.info("live view at %s", self.url)

    def set_roles(self, roles: Dict[str, str], order: Sequence[str] = ()) -> None:
        """Where each role runs, and the roles' order on the page (from the source to the sinks)."""
        with self.state.cond:
            self.state.roles = dict(roles)
            self.state.order = tuple(order)

    def on_result(self, r: Result, fps: float) -> None:
        self.state.set_result(r, fps)

    def on_metric(self, m: Metric) -> None:
        self.state.set_metric(m)

    def write(self, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), self.quality])
        if ok:
            self.latest.put(buf.tobytes())

    def close(self) -> None:
        self.latest.close()
        self.state.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None
