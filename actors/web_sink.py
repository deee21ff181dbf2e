"""``--display web:[HOST:]PORT``: the annotated frames as an MJPEG stream.

A browser on another machine opens ``http://PI:PORT/`` and sees the live,
annotated video; ``/stream.mjpg`` is the bare stream for other players. The
server runs in its own threads (``http.server``); each client gets the newest
frame when it is ready for one, so a slow client skips frames and never slows
the display (or anything upstream).

Python 3.9 compatible.
"""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Tuple

import cv2
import numpy as np

log = logging.getLogger("edgepipe.web")

PAGE = b"""<!doctype html><html><head><title>edgepipe</title>
<style>body{margin:0;background:#111;color:#ddd;font-family:sans-serif}img{max-width:100vw;max-height:100vh}</style>
</head><body><img src="/stream.mjpg" alt="edgepipe live view"></body></html>"""
BOUNDARY = b"edgepipeframe"


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


def _handler(latest: _Latest):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args) -> None:  # route the server's log through logging
            log.debug("%s " + fmt, self.address_string(), *args)

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", PAGE)
            elif self.path.startswith("/stream.mjpg"):
                self._stream()
            elif self.path.startswith("/frame.jpg"):
                seq, jpeg = latest.next(0)
                if jpeg is None:
                    self._send(503, "text/plain", b"no frame yet")
                else:
                    self._send(200, "image/jpeg", jpeg)
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
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

    return Handler


class WebSink:
    """A display sink serving the annotated frames over HTTP as MJPEG."""

    def __init__(self, host: str, port: int, quality: int = 80) -> None:
        self.host = host
        self.port = port
        self.quality = quality
        self.latest = _Latest()
        self.server: Optional[ThreadingHTTPServer] = None
        self.thread: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        assert self.server is not None
        return self.server.server_address[:2]

    def open(self) -> None:
        from .display import DisplayError
        try:
            self.server = ThreadingHTTPServer((self.host, self.port), _handler(self.latest))
        except OSError as exc:
            raise DisplayError("display web: cannot listen on %s:%d (%s)" % (self.host, self.port, exc)) from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="web-display", daemon=True)
        self.thread.start()
        log.warning("live view at http://%s:%d/", self.host if self.host not in ("", "0.0.0.0") else "<this host>",
                    self.address[1])

    def write(self, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), self.quality])
        if ok:
            self.latest.put(buf.tobytes())

    def close(self) -> None:
        self.latest.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None
