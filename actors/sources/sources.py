"""Frame sources for the capture actor, chosen by a spec string.

- ``synthetic[:faces=3,fps=30,size=640x480,seed=0,change=60,stall_at=N,stall_ms=MS]``:
  moving drawn faces with known boxes and expressions (the truth travels with
  each frame); ``stall_at`` makes it a camera that stops delivering for
  ``stall_ms`` before frame N (a fault test);
- ``dir:PATH`` or an image file: images, looping;
- ``video:PATH``: a video file through OpenCV;
- ``picamera2[:WxH]``: the Raspberry Pi camera through Picamera2 (``picamera2_source``);
- ``v4l2:N`` / ``camera:N``: a V4L2 camera through OpenCV (a USB webcam; a Pi 5's
  CSI camera is ``picamera2``); ``rtsp://...``, ``http://...`` (MJPEG): a stream.
  Cameras and streams recover: see ``live_sources``;
- ``demo``: a real clip at its own frame rate, looping (``demo:unpaced``: as fast as the pipeline goes);
- ``auto``: resolved before the run by ``pipeline.source_auto``.

``actors.source_factory.make_source`` makes a source from its spec string.

``read()`` is blocking and runs in the capture actor's thread.
"""
from __future__ import annotations

import abc
import logging
import math
import os
import threading
from typing import Any, Dict, List, Optional, Set, Tuple

import cv2
import numpy as np

from edgepipe.bus.box import Box
from edgepipe.bus.messages import TruthFace
from edgepipe.models.engines import fake_scene
from edgepipe.models.families.labels import EXPRESSIONS

log = logging.getLogger("edgepipe.source")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")

Read = Optional[Tuple[np.ndarray, Optional[List[TruthFace]]]]


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message says how to fix it."""

    user_facing = True


class SourceUnusable(SourceError):
    """A source that no reopening can mend (a format it cannot convert, a library too old): not reconnected."""


class Source(abc.ABC):
    fps: float = 0.0  # pacing target; 0 = as fast as the source delivers
    live: bool = False  # a camera: frames keep coming whether or not we keep up
    cheap: bool = False  # a read hands over a kept frame (no decode, no device): capture calls it inline

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.errors = 0  # unreadable inputs that were skipped (each file once, however often a loop meets it)

    def open(self) -> None:
        """Open the device or file; raise SourceError with a clear message."""

    @abc.abstractmethod
    def read(self) -> Read:
        """The next (BGR image, truth or None), or None at the end of the stream."""

    def close(self) -> None:
        """Release the device; safe to call twice."""


def spec_options(text: str, spec: str) -> Dict[str, str]:
    out = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise SourceError("source %r: option %r should be key=value" % (spec, part))
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def spec_size(value: str, spec: str) -> Tuple[int, int]:
    try:
        w, h = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise SourceError("source %r: size %r should be WIDTHxHEIGHT, e.g. 640x480" % (spec, value)) from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise SourceError("source %r: size %dx%d is out of range" % (spec, w, h))
    return w, h


def _number(spec: str, options: Dict[str, str], key: str, default: str, kind: Any) -> Any:
    """Option ``key`` of a source spec as an int or a finite float; SourceError naming the option."""
    text = options.get(key, default)
    try:
        value = kind(text)
    except ValueError:
        raise SourceError("source %r: option %s=%s is not %s" % (
            spec, key, text, "a whole number" if kind is int else "a number")) from None
    if not math.isfinite(value):
        raise SourceError("source %r: option %s=%s is not a finite number" % (spec, key, text))
    return value


class SyntheticSource(Source):
    """K faces, each bouncing inside its own grid cell, with a known expression."""

    def __init__(self, spec: str, options: Dict[str, str]) -> None:
        super().__init__(spec)
        known = {"faces", "fps", "size", "seed", "change", "stall_at", "stall_ms"}
        bad = sorted(set(options) - known)
        if bad:
            raise SourceError("source %r: unknown option(s) %s (known: %s)" % (spec, ", ".join(bad), ", ".join(sorted(known))))
        self.faces = _number(spec, options, "faces", "1", int)
        self.fps = _number(spec, options, "fps", "30", float)
        self.seed = _number(spec, options, "seed", "0", int)
        self.change = _number(spec, options, "change", "60", int)
        self.stall_at = _number(spec, options, "stall_at", "-1", int)
        self.stall_s = _number(spec, options, "stall_ms", "0", float) / 1000.0
        self.live = self.fps > 0  # paced like a camera; unpaced: every frame is processed
        if not 0 <= self.faces <= 64 or self.fps < 0 or self.change < 1:
            raise SourceError("source %r: faces must be 0..64, fps >= 0, change >= 1" % spec)
        self.width, self.height = spec_size(options.get("size", "640x480"), spec)
        self.n = 0
        cols = max(1, int(math.ceil(math.sqrt(max(1, self.faces) * self.width / self.height))))
        rows = max(1, int(math.ceil(max(1, self.faces) / cols)))
        self.cell = (self.width // cols, self.height // rows)
        self.grid = [(i % cols, i // cols) for i in range(self.faces)]
        side = int(min(self.cell[0] / 1.6, self.cell[1] / 1.9))
        if self.faces and side < 24:
            raise SourceError("source %r: %d faces do not fit in %dx%d" % (spec, self.faces, self.width, self.height))
        self.face_w, self.face_h = side, int(side * 1.2)
        rng = np.random.RandomState(self.seed)
        self.phase = rng.uniform(0, 2 * math.pi, size=(max(1, self.faces), 2))
        self.speed = rng.uniform(0.02, 0.06, size=(max(1, self.faces), 2))
        yy, xx = np.mgrid[0:self.height, 0:self.width]
        self.background = ((xx * 60 // self.width + yy * 60 // self.height + 60)[:, :, None]
                           * np.ones(3, np.int32)).astype(np.uint8)
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    def read(self) -> Read:
        n = self.n
        if n == self.stall_at and self.stall_s > 0:
            self._closed.wait(self.stall_s)  # a camera that stops delivering for a while (close() ends it)
        self.n += 1
        img = self.background.copy()
        truth = []
        for i, (cx, cy) in enumerate(self.grid):
            # a 3-pixel gap to the cell's border keeps neighbouring faces apart
            free_x = self.cell[0] - self.face_w - 6
            free_y = self.cell[1] - self.face_h - 6
            ox = 3 + int(free_x * (0.5 + 0.5 * math.sin(self.phase[i, 0] + n * self.speed[i, 0])))
            oy = 3 + int(free_y * (0.5 + 0.5 * math.sin(self.phase[i, 1] + n * self.speed[i, 1])))
            x1 = cx * self.cell[0] + ox
            y1 = cy * self.cell[1] + oy
            box = (x1, y1, x1 + self.face_w, y1 + self.face_h)
            expression = (i + self.seed + n // self.change) % len(EXPRESSIONS)
            fake_scene.draw_face(img, box, expression)
            truth.append(TruthFace(Box(*[float(v) for v in box], score=1.0), EXPRESSIONS[expression]))
        cv2.putText(img, "synthetic %d" % n, (8, self.height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (230, 230, 230), 1, cv2.LINE_AA)
        return img, truth


class ImageSource(Source):
    """Still images from a folder or one file, looping.

    Each file is decoded once and kept (read-only, shared by the frames made of
    it) while the decoded images fit ``cache_mb``; beyond that the rest are
    decoded on every read.
    """

    def __init__(self, spec: str, path: str, loop: bool = True, cache_mb: float = 256.0) -> None:
        super().__init__(spec)
        self.loop = loop
        self.cache: Dict[str, np.ndarray] = {}
        self.cache_left = int(cache_mb * (1 << 20))
        if os.path.isdir(path):
            self.files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTS))
        elif os.path.isfile(path):
            self.files = [path]
        else:
            raise SourceError("source %r: %s does not exist" % (spec, path))
        if not self.files:
            raise SourceError("source %r: no images (%s) in %s" % (spec, ", ".join(IMAGE_EXTS), path))
        self.i = 0
        self.bad: Set[str] = set()  # files that could not be decoded: logged and counted once (distinct files)

    def open(self) -> None:
        """Decode files until one decodes (it is kept), so that a source with no readable image fails here, in
        one error; the bad files before a good one are logged when ``read`` meets them."""
        for path in self.files:
            if self._decode(path) is not None:
                return
        raise _undecodable(self.spec, self.files)

    def _decode(self, path: str) -> Optional[np.ndarray]:
        img = self.cache.get(path)
        if img is None:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is not None and img.nbytes <= self.cache_left:
                img.flags.writeable = False  # shared by every frame made of this file
                self.cache[path] = img
                self.cache_left -= img.nbytes
        return img

    def _skip(self, path: str) -> None:
        """An undecodable file: logged and counted (``errors``, the run's source_errors) the first time only."""
        if path in self.bad:
            return
        self.bad.add(path)
        self.errors += 1
        log.error("source %s: cannot decode image %s (corrupt or not an image); skipped%s", self.spec, path,
                  " on every pass (logged and counted in source_errors once)" if self.loop else "")

    @property
    def cheap(self) -> bool:
        """Every file is decoded and kept: a read only hands one over."""
        return len(self.cache) == len(self.files)

    def read(self) -> Read:
        tried = 0
        while tried < len(self.files):
            if self.i >= len(self.files):
                if not self.loop:
                    return None
                self.i = 0
            path = self.files[self.i]
            self.i += 1
            tried += 1
            img = self._decode(path)
            if img is not None:
                return img, None
            self._skip(path)
        raise _undecodable(self.spec, self.files)


def _undecodable(spec: str, paths: List[str], n: int = 3) -> SourceError:
    """The error of an image source none of whose files decodes (the first ``n`` named)."""
    if len(paths) == 1:
        return SourceError("source %r: image %s cannot be decoded (corrupt or not an image)" % (spec, paths[0]))
    names = ", ".join(os.path.basename(p) for p in paths[:n]) + (
        ", and %d more" % (len(paths) - n) if len(paths) > n else "")
    return SourceError("source %r: none of the %d images in %s can be decoded (%s): corrupt or not images"
                       % (spec, len(paths), os.path.dirname(paths[0]), names))


class OpenCvSource(Source):
    """A video file, a V4L2 camera or an RTSP stream, read with OpenCV."""

    def __init__(self, spec: str, target, live: bool, loop: bool = False,
                 size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(spec)
        self.target = target
        self.live = live
        self.loop = loop
        self.size = size
        self.cap = None
        self.read_frames = 0  # of a file: frames read, to tell a truncated file from one that ended
        self.expected_frames = 0  # what the file's header announces (0: unknown)

    def open(self) -> None:
        if isinstance(self.target, str) and not self.live and not os.path.isfile(self.target):
            raise SourceError("source %r: video file %s does not exist" % (self.spec, self.target))
        api = cv2.CAP_V4L2 if isinstance(self.target, int) else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.target, api)
        if not cap.isOpened():
            cap.release()
            if isinstance(self.target, int):
                raise SourceError("source %r: cannot open camera /dev/video%d (is it connected, and is your user in "
                                  "the 'video' group?)" % (self.spec, self.target))
            raise SourceError("source %r: OpenCV cannot open %s" % (self.spec, self.target))
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if not self.live:
            self.expected_frames = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.cap = cap

    def read(self) -> Read:
        assert self.cap is not None
        ok, img = self.cap.read()
        if not ok and self.loop and not self.live and self.read_frames:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self.cap.read()
        if not ok:
            if self.live:
                raise SourceError("source %r: the camera stopped delivering frames" % self.spec)
            if not self.read_frames:
                self.errors += 1
                raise SourceError("source %r: OpenCV opens %s but decodes no frame of it (a corrupt file, or a codec "
                                  "this OpenCV lacks)" % (self.spec, self.target))
            self._check_end()
            return None
        self.read_frames += 1
        return img, None

    def _check_end(self) -> None:
        """A file that ends well before the frame count its header announces is truncated or corrupt: warn."""
        n, expected = self.read_frames, self.expected_frames
        # the header's count is an estimate for some files (variable frame rate): a few frames of slack
        if expected and n < expected - max(5, expected // 50):
            self.errors += 1
            log.warning("source %s: the video ended at frame %d of the %d its header announces "
                        "(a truncated or corrupt file?)", self.spec, n, expected)
        self.expected_frames = 0  # warn once

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def is_live(spec: str) -> bool:
    """Whether a source spec names a live source (frames come whether or not we keep up)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        try:
            return float(spec_options(spec.partition(":")[2], spec).get("fps", "30")) > 0
        except ValueError:
            return True  # a bad fps is reported when the source is made
    return spec == "demo" or spec.startswith(("rtsp://", "rtsps://", "http://", "https://", "v4l2:", "camera:",
                                              "picamera2"))
