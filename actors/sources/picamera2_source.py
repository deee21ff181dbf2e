"""The Raspberry Pi camera through Picamera2 (``--source picamera2[:WxH]``).

Picamera2 is asked for RGB888 (BGR in memory, as OpenCV wants), but libcamera
may adjust a configuration without failing: a USB webcam that Picamera2 lists
(its ``Id`` holds ``/usb``) gives only MJPEG or YUYV. So after ``configure()``
the source reads the format it really got (``camera_configuration()["main"]``)
and turns every frame into BGR from what ``capture_array`` returns for that
format (``picamera2/request.py``: RGB888/BGR888 ``(h, w, 3)``, XRGB8888/XBGR8888
``(h, w, 4)``, YUYV and its kin ``(h, stride // 2, 2)``, YUV420 ``(h * 3 // 2,
stride)``, MJPEG decoded by PIL, which is RGB). A format it cannot convert,
or an array of another shape, stops the run with one line naming the format
and ``--source v4l2:N`` (``--source auto`` already sends a webcam to V4L2).

Two broken set-ups are named with their fix: a numpy 2 in the venv, under
which ``import picamera2`` fails (simplejpeg and Debian's python3-picamera2 are
built against numpy 1), and a Picamera2 older than 0.3.17, whose ``wait()``
takes no timeout.
"""
from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from importlib import metadata
from typing import Any, Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from edgepipe.actors.sources.sources import Read, Source, SourceError, SourceUnusable

log = logging.getLogger("edgepipe.source")

NUMPY_FIX = "python -m pip install -c constraints/pi-bookworm.txt 'numpy<2'"
UPGRADE_FIX = "sudo apt update && sudo apt install --only-upgrade python3-picamera2"
MIN_VERSION = (0, 3, 17)  # the first Picamera2 whose wait(job, timeout=...) takes a timeout (its CHANGELOG)
INSTALL_FIX = ("on Raspberry Pi OS run 'sudo apt install python3-picamera2' and create the venv with "
               "--system-site-packages (for a USB webcam use v4l2:N)")


def numpy_mismatch(text: str) -> bool:
    """Whether the import error ``text`` is a numpy 2 meeting modules built against numpy 1."""
    return "size changed" in text or "compiled using NumPy 1" in text or "numpy.core.multiarray" in text


def import_problem(text: str) -> str:
    """The one line that says why ``import picamera2`` failed with the error ``text``, and its fix."""
    if numpy_mismatch(text):
        return ("Picamera2 cannot be imported: the numpy in this venv is not the numpy 1 that Debian's "
                "python3-picamera2 and simplejpeg are built against (%s); run: %s" % (text.strip(), NUMPY_FIX))
    return "Picamera2 cannot be imported (%s); %s" % (text.strip(), INSTALL_FIX)


def _import_picamera2() -> Any:
    # optional: only on a Raspberry Pi (python3-picamera2 from apt), so imported when a camera is looked for
    from picamera2 import Picamera2  # type: ignore[import-not-found]
    return Picamera2


def picamera2_class(load: Callable[[], Any] = _import_picamera2) -> Any:
    """Picamera2's camera class, or None where it is not installed (not a Raspberry Pi).

    Installed but not importable (a numpy 2 in the venv raises ValueError: numpy.dtype size changed; a
    missing libcamera binding raises ImportError): SourceError with the line that names the fix.
    """
    try:
        return load()
    except ImportError as exc:
        if getattr(exc, "name", None) == "picamera2":  # the package itself is not there
            return None
        raise SourceError(import_problem("%s: %s" % (type(exc).__name__, exc))) from None
    except ValueError as exc:
        raise SourceError(import_problem("%s: %s" % (type(exc).__name__, exc))) from None


def version_tuple(text: str) -> Optional[Tuple[int, ...]]:
    """(0, 3, 16) of a version string such as "0.3.16" or "0.3.16-1"; None when it has no leading number."""
    parts = []
    for p in text.split("."):
        digits = ""
        for ch in p:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(p):
            break
    return tuple(parts) or None


def picamera2_version() -> Optional[Tuple[int, ...]]:
    """The installed Picamera2's version (its package metadata), or None when it has none."""
    try:
        return version_tuple(metadata.version("picamera2"))
    except Exception:  # no metadata (a source checkout on sys.path): the TypeError check in read() covers it
        return None


def too_old(spec: str, version: str = "") -> SourceUnusable:
    return SourceUnusable("source %r: %s is older than 0.3.17: its wait() takes no timeout, which edgepipe reads "
                          "the camera with; run: %s" % (spec, "Picamera2 " + version if version else "this Picamera2",
                                                        UPGRADE_FIX))


def _rgb(code: int) -> Callable[[np.ndarray, int], np.ndarray]:
    return lambda a, w: cv2.cvtColor(a, code)


def _yuv(code: int) -> Callable[[np.ndarray, int], np.ndarray]:
    # the rows carry the stride's padding: converted whole, then cut to the width
    return lambda a, w: np.ascontiguousarray(cv2.cvtColor(a, code)[:, :w])


def _mjpeg(a: np.ndarray, w: int) -> np.ndarray:
    if a.ndim == 2:  # a greyscale JPEG (PIL mode L)
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(a, cv2.COLOR_RGB2BGR)  # PIL decodes to RGB


# format -> (the array shape capture_array gives for (w, h, stride), the conversion to BGR)
Shape = Callable[[int, int, int], Tuple[int, ...]]
FORMATS: Dict[str, Tuple[Shape, Callable[[np.ndarray, int], np.ndarray]]] = {
    "RGB888": (lambda w, h, s: (h, w, 3), lambda a, w: a),  # B, G, R in memory
    "BGR888": (lambda w, h, s: (h, w, 3), _rgb(cv2.COLOR_RGB2BGR)),
    "XRGB8888": (lambda w, h, s: (h, w, 4), _rgb(cv2.COLOR_BGRA2BGR)),  # B, G, R, X
    "XBGR8888": (lambda w, h, s: (h, w, 4), _rgb(cv2.COLOR_RGBA2BGR)),  # R, G, B, X
    "YUYV": (lambda w, h, s: (h, s // 2, 2), _yuv(cv2.COLOR_YUV2BGR_YUYV)),
    "YVYU": (lambda w, h, s: (h, s // 2, 2), _yuv(cv2.COLOR_YUV2BGR_YVYU)),
    "UYVY": (lambda w, h, s: (h, s // 2, 2), _yuv(cv2.COLOR_YUV2BGR_UYVY)),
    "YUV420": (lambda w, h, s: (h * 3 // 2, s), _yuv(cv2.COLOR_YUV2BGR_I420)),
    "YVU420": (lambda w, h, s: (h * 3 // 2, s), _yuv(cv2.COLOR_YUV2BGR_YV12)),
    "MJPEG": (lambda w, h, s: (h, w, 3), _mjpeg),
}


def unconvertible(spec: str, fmt: str, why: str = "") -> SourceUnusable:
    return SourceUnusable("source %r: the camera gives %s frames%s, which edgepipe does not convert (a USB "
                          "webcam? read it through V4L2 with --source v4l2:N; `python run.py doctor` names N)"
                          % (spec, fmt, why))


def to_bgr(spec: str, array: Any, stream: Dict[str, Any]) -> np.ndarray:
    """A frame from Picamera2's ``capture_array`` for the stream configuration ``stream`` as BGR (h, w, 3)."""
    fmt = str(stream.get("format"))
    if fmt not in FORMATS:
        raise unconvertible(spec, fmt)
    w, h = (int(v) for v in stream["size"])
    stride = int(stream.get("stride") or 0)
    shape_of, convert = FORMATS[fmt]
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        raise unconvertible(spec, fmt, " as %s" % getattr(array, "dtype", type(array).__name__))
    want = shape_of(w, h, stride)
    if fmt == "MJPEG":  # decoded by PIL: its size is the JPEG's; greyscale has no channel axis
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
            raise unconvertible(spec, fmt, " decoding to an array shaped %s" % (array.shape,))
    elif array.shape != want:
        raise unconvertible(spec, fmt, " shaped %s, not the %s that format has at %dx%d"
                            % (array.shape, want, w, h))
    return convert(array, w)


class Picamera2Source(Source):
    """The Raspberry Pi camera through Picamera2, frames turned into BGR whatever format it really gives.

    Each capture is a job (``capture_array(wait=False)``) waited on with a timeout
    (``Picamera2.wait(job, timeout)``): a stalled camera raises instead of blocking.
    ``camera_class`` stands in for Picamera2 (tests); None: the installed one.
    """

    live = True

    def __init__(self, spec: str, size: Tuple[int, int], read_timeout_s: float = 5.0,
                 camera_class: Any = None) -> None:
        super().__init__(spec)
        self.size = size
        self.read_timeout_s = read_timeout_s
        self.camera_class = camera_class
        self.cam = None
        self.stream: Dict[str, Any] = {}

    def open(self) -> None:
        Picamera2 = self.camera_class
        if Picamera2 is None:
            try:
                Picamera2 = picamera2_class()
            except SourceError as exc:
                raise SourceUnusable("source %r: %s" % (self.spec, exc)) from None
            if Picamera2 is None:
                raise SourceError("source %r needs Picamera2: %s" % (self.spec, INSTALL_FIX)) from None
            version = picamera2_version()
            if version is not None and version < MIN_VERSION:
                raise too_old(self.spec, ".".join(str(v) for v in version))
        try:
            cam = Picamera2()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError("source %r: no camera found or it is busy (%s); check the ribbon cable and list the "
                              "cameras with 'rpicam-hello --list-cameras'" % (self.spec, exc)) from None
        try:
            cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "RGB888"}))
            self.stream = dict(cam.camera_configuration()["main"])  # what libcamera made of the request
            fmt = str(self.stream.get("format"))
            if fmt not in FORMATS:
                raise unconvertible(self.spec, fmt)
            if fmt != "RGB888":
                log.warning("source %s: the camera gives %s, not RGB888 (a USB webcam through Picamera2?): each "
                            "frame is converted; --source v4l2:N reads a webcam directly", self.spec, fmt)
            cam.start()
        except BaseException as exc:
            self._close(cam)
            if isinstance(exc, (RuntimeError, OSError)) and not isinstance(exc, SourceError):
                raise SourceError("source %r: the camera cannot be configured or started (%s); is another program "
                                  "using it? list the cameras with 'rpicam-hello --list-cameras'"
                                  % (self.spec, exc)) from None
            raise
        self.cam = cam

    def read(self) -> Read:
        cam = self.cam
        if cam is None:
            raise SourceError("source %r is closed" % self.spec)
        try:
            job = cam.capture_array("main", wait=False)
            array = cam.wait(job, timeout=self.read_timeout_s)
        except (FutureTimeout, TimeoutError):
            raise SourceError("source %r: no frame from the camera within %.1f s"
                              % (self.spec, self.read_timeout_s)) from None
        except TypeError as exc:
            if "timeout" in str(exc):  # Picamera2 before 0.3.17: wait(job) only
                raise too_old(self.spec) from None
            raise
        except (RuntimeError, OSError) as exc:
            raise SourceError("source %r: the camera failed: %s" % (self.spec, exc)) from None
        return to_bgr(self.spec, array, self.stream), None

    def _close(self, cam: Any) -> None:
        """Stop and close ``cam``; closed even when stopping fails, else every reopen finds it busy."""
        try:
            cam.stop()
        except Exception as exc:  # a camera that failed mid-stream
            log.warning("source %s: stopping the camera failed: %s", self.spec, exc)
        finally:
            try:
                cam.close()
            except Exception as exc:
                log.warning("source %s: closing the camera failed: %s", self.spec, exc)

    def close(self) -> None:
        cam, self.cam = self.cam, None
        if cam is not None:
            self._close(cam)
