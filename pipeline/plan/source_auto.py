"""``--source auto``: the camera that is there, else the demo clip.

In order: a CSI camera that Picamera2 lists (``picamera2``), else a USB webcam
that Picamera2 lists, read through V4L2 (``v4l2:N``: Picamera2 gives a webcam
only as MJPEG or YUYV; its ``/dev/videoN`` is found from the libcamera id,
``machine.uvc_nodes``), else the first V4L2 node that delivers a frame, else
``demo``. ``global_camera_info()`` sorts USB webcams last; their ``Id`` holds
``/usb``. Nodes of the Pi's codecs, ISP and CSI receiver are skipped by name (on
a Pi 5 a CSI camera is reached through Picamera2, not a ``/dev/video`` node),
and so are nodes whose VIDIOC_QUERYCAP says they do not capture video (a
webcam's metadata node). Each probe is injectable for tests and never raises.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2

from edgepipe.actors.sources.picamera2_source import picamera2_class
from edgepipe.actors.sources.sources import SourceError
from edgepipe.pipeline.ops.machine import (CSI_NODES, V4L2_CAP_VIDEO_CAPTURE, V4L2_CAP_VIDEO_CAPTURE_MPLANE,
                                           is_usb_camera, querycap, uvc_nodes)

log = logging.getLogger("edgepipe.source")

Cameras = Tuple[List[Dict[str, Any]], str]


def picamera2_cameras() -> Cameras:
    """(what ``Picamera2.global_camera_info()`` lists, why it lists nothing): ([], "") without Picamera2,
    ([], the line naming the fix) when Picamera2 is there but cannot be imported or cannot list."""
    try:
        Picamera2 = picamera2_class()
    except SourceError as exc:  # installed but broken (a numpy 2 in the venv): said, and auto goes on
        return [], str(exc)
    if Picamera2 is None:
        return [], ""
    try:
        return [dict(c) for c in Picamera2.global_camera_info()], ""
    except Exception as exc:  # a broken libcamera set-up: no camera
        return [], "Picamera2 cannot list the cameras: %s" % exc


def v4l2_nodes(dev_root: str = "/dev", sysfs_root: str = "/",
               caps_of: Callable[[Path], Optional[int]] = querycap) -> List[Tuple[int, str]]:
    """(index, driver name) of the ``videoN`` nodes that may be cameras, in number order."""
    out = []
    for path in glob.glob(os.path.join(dev_root, "video*")):
        m = re.match(r"video(\d+)$", os.path.basename(path))
        if not m:
            continue
        n = int(m.group(1))
        try:
            with open(os.path.join(sysfs_root, "sys/class/video4linux/video%d/name" % n), encoding="utf-8") as fh:
                name = fh.read().strip()
        except OSError:
            name = ""
        if any(bad in name.lower() for bad in CSI_NODES):
            continue
        caps = caps_of(Path(path))  # None: it does not answer (permissions); opening it will tell
        if caps is not None and not caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE):
            continue
        out.append((n, name))
    return sorted(out)


def v4l2_captures(index: int, timeout_s: float = 3.0) -> bool:
    """Whether ``/dev/videoN`` opens and delivers a frame within ``timeout_s``."""
    result: List[bool] = []

    def probe() -> None:
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        try:
            result.append(bool(cap.isOpened() and cap.read()[0]))
        finally:
            cap.release()

    t = threading.Thread(target=probe, name="probe-video%d" % index, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(result and result[0])


def resolve_source(spec: str, cameras: Callable[[], Cameras] = picamera2_cameras,
                   nodes: Optional[Callable[[], List[Tuple[int, str]]]] = None,
                   captures: Callable[[int], bool] = v4l2_captures,
                   webcam_nodes: Callable[[str], List[int]] = uvc_nodes) -> Tuple[str, str]:
    """(the source to use, why) for ``auto``; any other spec is returned as it is."""
    if spec != "auto":
        return spec, ""
    found, problem = cameras()
    if problem:
        log.warning("%s", problem)
    for cam in found:
        if not is_usb_camera(cam):
            return "picamera2", "Picamera2 camera %s" % cam.get("Model", "?")
    tried: List[int] = []
    for cam in found:  # webcams that Picamera2 lists: through V4L2, which gives BGR
        for index in webcam_nodes(str(cam.get("Id", ""))):
            tried.append(index)
            if captures(index):
                return "v4l2:%d" % index, "USB webcam %s at /dev/video%d, through V4L2" % (cam.get("Model", "?"), index)
    for index, name in (nodes or v4l2_nodes)():
        if index in tried:
            continue
        if captures(index):
            return "v4l2:%d" % index, "V4L2 camera /dev/video%d%s" % (index, " (%s)" % name if name else "")
        tried.append(index)
    paths = ", ".join("/dev/video%d" % i for i in tried)
    return "demo", "no camera: %s and %s" % (
        problem or ("Picamera2 lists no CSI camera" if found else "Picamera2 lists none"),
        "no V4L2 node delivers a frame (%s)" % paths if tried else "there is no V4L2 camera node")
