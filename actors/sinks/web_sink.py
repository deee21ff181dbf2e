"""``--display web[:[HOST:]PORT]``: the live view, a page a browser opens.

``http://HOST:PORT/`` shows one tile per camera, in name order (its annotated
stream, its label, FPS and latency, its faces with their smoothed expressions,
and whether it is live, stalled or ended), a live panel per actor (FPS,
busy %, p50/p99 latency, queue, drops, restarts), where each role runs and,
when the metrics carry them (gauges named ``resources.*``, or those of a
``resources`` actor), temperature and power. Other paths:

- ``/stream/NAME.mjpg``: camera NAME's bare MJPEG stream, for other players;
  ``/stream.mjpg``: the first camera's (the one camera ``default``'s);
- ``/snapshot/NAME.jpg``: camera NAME's newest annotated frame;
  ``/snapshot.jpg``: the first camera's; an unknown camera is a 404;
- ``/api/status``: the status document as JSON (``cameras``: an entry per
  camera; ``frame``, ``faces`` and ``labels``: the first camera's);
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
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepipe.actors.sinks.sinks import DisplayError, Sink
from edgepipe.actors.sinks.web_page import PAGE
from edgepipe.actors.sinks.web_status import LiveState
from edgepipe.bus.messages import Metric, Result

log = logging.getLogger("edgepipe.web")

BOUNDARY = b"edgepipeframe"
DEFAULT_PORT = 8080  # --display web
STATUS_INTERVAL_S = 0.5  # the fastest the panels refresh
KEEPALIVE_S = 15.0  # an event-stream comment when nothing changed, so proxies keep the connection
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CAMERA_PATH = re.compile(r"^/(stream|snapshot)/([A-Za-z0-9_]{1,32})\.(mjpg|jpg)$")


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


def _handler(sink: "WebSink"):
    state = sink.state

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args) -> None:  # route the server's log through logging
            log.debug("%s " + fmt, self.address_string(), *args)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            m = CAMERA_PATH.match(path)
            camera = m.group(2) if m else ""
            if m and (m.group(1) == "stream") != (m.group(3) == "mjpg"):
                camera = "?"  # /stream/NAME.jpg, /snapshot/NAME.mjpg: no such thing
            if path in ("/stream.mjpg", "/snapshot.jpg", "/frame.jpg"):
                camera = sink.first_camera
            latest = sink.feeds.get(camera) if camera else None
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", PAGE)
            elif camera and latest is None:
                self._send(404, "text/plain", b"no camera %s" % camera.encode())
            elif latest is not None and path.endswith(".mjpg"):
                self._stream(latest)
            elif latest is not None:
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

        def _stream(self, latest: _Latest) -> None:
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
        self.state = LiveState()
        self.feeds: Dict[str, _Latest] = {"default": _Latest()}  # camera -> its newest JPEG
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
            self.server = ThreadingHTTPServer((self.host, self.port), _handler(self))
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

    def set_cameras(self, labels: Dict[str, str]) -> None:
        """The run's cameras (name -> label; "" for the name), one tile each, in name order; before ``open``."""
        self.state.set_cameras(labels)
        self.feeds = {name: _Latest() for name in sorted(labels)}

    @property
    def first_camera(self) -> str:
        """The camera of ``/stream.mjpg`` and ``/snapshot.jpg``: the first by name."""
        return next(iter(self.feeds))

    def on_result(self, r: Result, fps: float) -> None:
        self.state.set_result(r, fps)

    def on_frame(self, camera: str) -> None:
        self.state.frame_came(camera)

    def on_camera_end(self, camera: str) -> None:
        self.state.camera_ended(camera)

    def on_metric(self, m: Metric) -> None:
        self.state.set_metric(m)

    def write(self, image: np.ndarray) -> None:
        self.write_camera(self.first_camera, image)

    def write_camera(self, camera: str, image: np.ndarray) -> None:
        feed = self.feeds.get(camera)
        if feed is None:
            return
        ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), self.quality])
        if ok:
            feed.put(buf.tobytes())

    def close(self) -> None:
        for feed in self.feeds.values():
            feed.close()
        self.state.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None
