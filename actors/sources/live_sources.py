"""Cameras and streams that recover: every read has a timeout, a lost source reconnects.

- ``LiveOpenCvSource``: a V4L2 camera or a network stream (RTSP, HTTP MJPEG)
  read by OpenCV in a grabber thread of its own, which keeps the newest frame
  (a camera's freshest frame wins). ``read()`` waits at most
  ``read_timeout_s`` for a new frame, then raises ``SourceStalled``; a read
  that fails (unplugged, stream closed) raises ``SourceLost``. The timeout is
  measured on the source's ``clock`` (OpenCV's own open and read timeouts, set
  to the same value, run on the real time).
- ``Reconnecting``: wraps any live source. When a read stalls or fails it
  closes the source, opens a new one with exponential backoff (from
  ``backoff_s`` to ``backoff_max_s``, ``runtime.backoff``, waited on its
  ``clock``) until a frame comes again, and counts
  it in ``reconnects``. It logs once per change of state (lost, back), not
  per attempt. ``close()`` ends a backoff at once.

The first ``open()`` is not retried: a camera that is missing at start is an
error whose message says how to fix it. Nor is a ``SourceUnusable`` error (a
camera format that cannot be converted): reopening would not mend it.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Tuple, Union

import cv2
import numpy as np

from edgepipe.actors.runtime.backoff import SYSTEM_CLOCK, Backoff, Clock
from edgepipe.actors.sources.sources import Read, Source, SourceError, SourceUnusable

log = logging.getLogger("edgepipe.source")


class SourceStalled(SourceError):
    """No frame came within the read timeout."""


class SourceLost(SourceError):
    """The device or the stream stopped delivering (unplugged, closed)."""


class _Grabber(threading.Thread):
    """Reads one opened ``cv2.VideoCapture`` until it fails or is stopped; keeps the newest frame.

    The capture is released by this thread when its last read returns.
    """

    def __init__(self, cap, name: str, clock: Clock) -> None:
        super().__init__(name=name, daemon=True)
        self.cap = cap
        self.clock = clock
        self.cond = threading.Condition()
        self.frame: Optional[np.ndarray] = None
        self.seq = 0
        self.ended = False
        self.stopping = False
        self.exited = threading.Event()

    def run(self) -> None:
        try:
            while True:
                ok, img = self.cap.read()
                with self.cond:
                    if not ok or self.stopping:
                        break
                    self.frame, self.seq = img, self.seq + 1
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()
            self.cap.release()
            self.exited.set()

    def next_frame(self, after: int, timeout: float) -> Tuple[int, Optional[np.ndarray]]:
        """(seq, frame) of a frame newer than ``after``; (seq, None) when the grabber ended or timed out."""
        clock = self.clock
        deadline = clock.monotonic() + timeout
        with self.cond:
            while self.seq <= after and not self.ended:
                left = deadline - clock.monotonic()
                if left <= 0:
                    break
                clock.wait(self.cond, left)
            if self.seq > after:
                return self.seq, self.frame
            return self.seq, None

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


class LiveOpenCvSource(Source):
    """A V4L2 camera (``target`` an int) or a stream URL, with a read timeout."""

    live = True

    def __init__(self, spec: str, target: Union[int, str], size: Optional[Tuple[int, int]] = None,
                 read_timeout_s: float = 5.0, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(spec)
        self.target = target
        self.size = size
        self.read_timeout_s = read_timeout_s
        self.clock = clock  # what the read timeout is measured on
        self.grabber: Optional[_Grabber] = None
        self.seen = 0

    def open(self) -> None:
        ms = int(self.read_timeout_s * 1000)
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if not cap.isOpened():
            cap.release()
            if isinstance(self.target, int):
                raise SourceError(
                    "source %r: cannot open camera /dev/video%d. List the cameras with 'v4l2-ctl --list-devices' "
                    "and check that your user is in the 'video' group; a Raspberry Pi camera on the CSI "
                    "connector is not a V4L2 capture node: use --source picamera2 (or --source auto)"
                    % (self.spec, self.target))
            raise SourceError("source %r: cannot open the stream %s (is the URL right and the server up?)"
                              % (self.spec, self.target))
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        self.grabber = _Grabber(cap, "grab-%s" % self.spec, self.clock)
        self.seen = 0
        self.grabber.start()

    def read(self) -> Read:
        g = self.grabber
        if g is None:
            raise SourceLost("source %r is closed" % self.spec)
        seq, img = g.next_frame(self.seen, self.read_timeout_s)
        if img is None:
            if g.ended:
                raise SourceLost("source %r stopped delivering frames" % self.spec)
            raise SourceStalled("source %r: no frame within %.1f s" % (self.spec, self.read_timeout_s))
        self.seen = seq
        return img, None

    def close(self) -> None:
        g, self.grabber = self.grabber, None
        if g is not None:
            g.stop()  # the grabber releases the capture when its read in progress returns


class Reconnecting(Source):
    """A live source that reopens itself, with backoff, when a read stalls or fails."""

    live = True

    def __init__(self, spec: str, make: Callable[[], Source], backoff_s: float = 0.5,
                 backoff_max_s: float = 10.0, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(spec)
        self.make = make
        self.backoff = Backoff(min(backoff_s, backoff_max_s), backoff_max_s)
        self.clock = clock  # what the backoff waits on
        self.inner: Optional[Source] = None
        self.reconnects = 0  # times the source came back
        self.attempts = 0  # opens tried while it was down
        self.down_since: Optional[float] = None
        self._cond = threading.Condition()  # guards inner and _closing; close() notifies it
        self._closing = False

    @property
    def up(self) -> bool:
        return self.down_since is None

    def open(self) -> None:
        src = self.make()
        src.open()  # not retried: a camera missing at start is an error that names the fix
        self.inner = src

    def _drop(self) -> None:
        with self._cond:
            src, self.inner = self.inner, None
        if src is not None:
            src.close()

    def _went_down(self, why: str) -> None:
        if self.down_since is None:
            self.down_since = self.clock.monotonic()
            log.warning("source %s lost: %s; reconnecting with backoff up to %.0f s", self.spec, why,
                        self.backoff.max_s)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` on the clock; close() ends the wait at once."""
        deadline = self.clock.monotonic() + seconds
        with self._cond:
            while not self._closing:
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    return
                self.clock.wait(self._cond, left)

    def read(self) -> Read:
        while not self._closing:
            src = self.inner
            if src is None:
                src = self.make()
                self.attempts += 1
                try:
                    src.open()
                except SourceError as exc:
                    src.close()
                    log.debug("source %s: reconnect attempt %d failed: %s", self.spec, self.attempts, exc)
                    self._pause(self.backoff.next())
                    continue
                with self._cond:
                    if self._closing:
                        src.close()
                        break
                    self.inner = src
            try:
                item = src.read()
            except SourceUnusable:
                raise  # no reopening mends it (a format that cannot be converted): the run ends with its line
            except SourceError as exc:
                item, why = None, str(exc)
            else:
                why = "the stream ended"
            if item is not None:
                if self.down_since is not None:
                    self.reconnects += 1
                    log.warning("source %s back after %.1f s (%d attempts); reconnects so far: %d", self.spec,
                                self.clock.monotonic() - self.down_since, self.attempts, self.reconnects)
                    self.down_since = None
                    self.attempts = 0
                    self.backoff.reset()
                return item
            self._went_down(why)
            self._drop()
        return None  # closed: the run is ending

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._drop()
