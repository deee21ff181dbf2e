"""A frame source from its spec string (the kinds are listed in ``actors.sources``).

The dispatch lives apart from the sources so that the demo clip and the live
sources, which build on ``actors.sources``, are imported here at the top.
"""
from __future__ import annotations

import os
from typing import Any, Dict

import cv2

from edgepipe.actors.sources.demo import demo_source
from edgepipe.actors.sources.live_sources import LiveOpenCvSource, Reconnecting
from edgepipe.actors.sources.picamera2_source import Picamera2Source
from edgepipe.actors.sources.sources import (IMAGE_EXTS, VIDEO_EXTS, ImageSource, OpenCvSource, Source, SourceError,
                                             SyntheticSource, spec_options, spec_size)


def source_rate(spec: str) -> float:
    """The frame rate a source was recorded at or runs at (a video file's header, a synthetic source's
    fps), or 0.0 when it has none of its own (images, a camera that sets its own pace)."""
    try:
        src = make_source(spec, loop=False)
    except SourceError:
        return 0.0
    if isinstance(src, SyntheticSource):
        return src.fps
    if not isinstance(src, OpenCvSource) or src.live or not isinstance(src.target, str):
        return 0.0
    cap = cv2.VideoCapture(src.target)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if 0.0 < fps <= 1000.0 else 0.0


def make_source(spec: str, loop: bool = True, read_timeout_s: float = 5.0, reconnect_max_s: float = 10.0) -> Source:
    """A source from its spec string; raises SourceError naming the problem.

    Cameras and streams read with ``read_timeout_s`` and reconnect with backoff up to ``reconnect_max_s``.
    """
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticSource(spec, spec_options(spec.partition(":")[2], spec))
    if spec.startswith("dir:"):
        return ImageSource(spec, spec[4:], loop)
    if spec.startswith("image:"):
        return ImageSource(spec, spec[6:], loop)
    if spec.startswith("video:"):
        return OpenCvSource(spec, spec[6:], live=False, loop=False)
    if spec.startswith(("rtsp://", "rtsps://", "http://", "https://", "v4l2:", "camera:", "picamera2")):
        return _live(spec, read_timeout_s, reconnect_max_s)
    if spec in ("demo", "demo:unpaced"):
        return demo_source(loop, paced=spec == "demo")
    low = spec.lower()
    if low.endswith(IMAGE_EXTS) or os.path.isdir(spec):
        return ImageSource(spec, spec, loop)
    if low.endswith(VIDEO_EXTS):
        return OpenCvSource(spec, spec, live=False, loop=False)
    raise SourceError("unknown source %r; use auto, synthetic[:faces=N,fps=F,size=WxH], dir:PATH, an image file, "
                      "video:PATH, picamera2[:WxH], v4l2:N, rtsp://..., http://... (MJPEG), demo or demo:unpaced"
                      % spec)


def _live(spec: str, read_timeout_s: float, reconnect_max_s: float) -> Source:
    """A camera or a stream, wrapped to reconnect when it stalls or drops."""
    if spec.startswith(("v4l2:", "camera:")):
        dev = spec.split(":", 1)[1]
        try:
            index = int(dev.replace("/dev/video", ""))
        except ValueError:
            raise SourceError("source %r: expected a camera number, e.g. v4l2:0" % spec) from None
        return Reconnecting(spec, lambda: LiveOpenCvSource(spec, index, read_timeout_s=read_timeout_s),
                            backoff_max_s=reconnect_max_s)
    if spec == "picamera2" or spec.startswith("picamera2:"):
        size = spec_size(spec.split(":", 1)[1], spec) if ":" in spec else (640, 480)
        return Reconnecting(spec, lambda: Picamera2Source(spec, size, read_timeout_s), backoff_max_s=reconnect_max_s)
    if spec.startswith("picamera2"):
        raise SourceError("source %r: expected picamera2 or picamera2:WIDTHxHEIGHT" % spec)
    return Reconnecting(spec, lambda: LiveOpenCvSource(spec, spec, read_timeout_s=read_timeout_s),
                        backoff_max_s=reconnect_max_s)


def no_frame(summary: Dict[str, Any]) -> str:
    """The line that ends a run whose source gave no frame at all (which source, and why), or "" when it gave
    one, or when the run was interrupted first."""
    if summary.get("frames_captured") or summary.get("interrupted"):
        return ""
    errors = summary.get("actors", {}).get("capture", {}).get("counters", {}).get("source_errors", 0)
    why = ("%d unreadable input(s), logged above" % errors if errors
           else "it ended before its first frame (any error is logged above)")
    return "source %s gave no frame: %s" % (summary.get("source", "?"), why)
