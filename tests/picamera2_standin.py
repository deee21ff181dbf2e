"""A stand-in for Picamera2's camera class (the camera is one of the two things the tests may fake).

It behaves as picamera2/picamera2.py and picamera2/request.py do for what
edgepipe calls: ``global_camera_info()`` sorts the cameras with USB webcams
last; ``Picamera2(n)`` opens the n-th of that list and raises when it is held by
another (libcamera's acquire); ``configure()`` keeps a format the camera has and
otherwise adjusts it, without failing, to the camera's first one (libcamera's
validate(): a webcam has MJPEG and YUYV, and MJPEG sorts first);
``camera_configuration()["main"]`` says the format, size and stride it got; and
``capture_array(wait=False)`` + ``wait(job, timeout)`` give the array Picamera2
makes of that format's buffer: RGB888 and kin ``(h, w, 3|4)``, YUYV ``(h, stride
// 2, 2)``, YUV420 ``(h * 3 // 2, stride)``, MJPEG decoded by PIL (RGB). The
frames are made from a real image, laid out in the buffer as the camera lays
them out.
"""
from __future__ import annotations

import io
from typing import Any, Dict, List, Optional, Set

import cv2
import numpy as np
from PIL import Image

CSI_FORMATS = ["RGB888", "BGR888", "XRGB8888", "XBGR8888", "YUV420"]
WEBCAM_FORMATS = ["MJPEG", "YUYV"]


def yuyv_bytes(bgr: np.ndarray, stride: int) -> np.ndarray:
    """The YUYV 4:2:2 buffer (BT.601, limited range, rows padded to ``stride`` bytes) of a BGR image."""
    b, g, r = (bgr[:, :, i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape
    out = np.zeros((h, stride), np.uint8)
    packed = np.empty((h, w * 2), np.float64)
    packed[:, 0::2] = y
    packed[:, 1::4] = (u[:, 0::2] + u[:, 1::2]) / 2
    packed[:, 3::4] = (v[:, 0::2] + v[:, 1::2]) / 2
    out[:, :w * 2] = np.clip(np.round(packed), 0, 255)
    return out.reshape(-1)


def buffer_of(fmt: str, bgr: np.ndarray, stride: int) -> np.ndarray:
    """The bytes the camera writes into a buffer of format ``fmt`` for the scene ``bgr``."""
    h, w = bgr.shape[:2]
    if fmt == "MJPEG":
        ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        return np.frombuffer(jpg.tobytes(), np.uint8)
    if fmt == "YUYV":
        return yuyv_bytes(bgr, stride)
    if fmt == "YUV420":
        assert stride == w, "the stand-in lays YUV420 out unpadded"
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    pixels = {"RGB888": bgr, "BGR888": bgr[:, :, ::-1],
              "XRGB8888": np.dstack([bgr, np.full((h, w), 255, np.uint8)]),
              "XBGR8888": np.dstack([bgr[:, :, ::-1], np.full((h, w), 255, np.uint8)])}[fmt]
    out = np.zeros((h, stride), np.uint8)
    out[:, :pixels.shape[1] * pixels.shape[2]] = pixels.reshape(h, -1)
    return out.reshape(-1)


def make_array(buffer: np.ndarray, config: Dict[str, Any]) -> np.ndarray:
    """Picamera2's ``helpers.make_array`` (``_make_array_shared`` and a copy) for the formats used here."""
    fmt, (w, h), stride = config["format"], config["size"], config["stride"]
    if fmt == "MJPEG":
        return np.array(Image.open(io.BytesIO(buffer.tobytes())))
    if fmt in ("RGB888", "BGR888"):
        image = buffer.reshape((h, stride))[:, :w * 3].reshape((h, w, 3))
    elif fmt in ("XRGB8888", "XBGR8888"):
        image = buffer.reshape((h, stride))[:, :w * 4].reshape((h, w, 4))
    elif fmt == "YUV420":
        image = buffer.reshape((h * 3 // 2, stride))
    elif fmt == "YUYV":
        image = buffer.reshape(h, stride // 2, 2)
    else:
        raise RuntimeError("Format " + fmt + " not supported")
    return np.ascontiguousarray(image)


class CameraSystem:
    """What libcamera sees: the cameras (``global_camera_info()`` entries), the formats each has, a scene."""

    def __init__(self, cameras: List[Dict[str, Any]], scene: np.ndarray, webcam_formats: Optional[List[str]] = None,
                 csi_formats: Optional[List[str]] = None, yuyv_pad: int = 0) -> None:
        self.cameras = cameras
        self.scene = scene
        self.webcam_formats = webcam_formats or WEBCAM_FORMATS
        self.csi_formats = csi_formats or CSI_FORMATS
        self.yuyv_pad = yuyv_pad
        self.held: Set[str] = set()  # Ids acquired and not yet released
        self.opened: List["StandInCamera"] = []
        self.stop_errors: List[Exception] = []  # what the next stop()s raise (a camera that failed mid-stream)

    def camera_class(self) -> type:
        system = self

        class Picamera2(StandInCamera):
            @staticmethod
            def global_camera_info() -> List[Dict[str, Any]]:
                return sorted([dict(c) for c in system.cameras], key=lambda cam: ("/usb" not in cam["Id"], cam["Id"]),
                              reverse=True)

            def __init__(self, camera_num: int = 0) -> None:
                super().__init__(system, self.global_camera_info()[camera_num])  # IndexError: no camera

        return Picamera2


class StandInCamera:
    def __init__(self, system: CameraSystem, info: Dict[str, Any]) -> None:
        if info["Id"] in system.held:
            raise RuntimeError("Camera __init__ sequence did not complete.")  # libcamera: acquire() failed, busy
        system.held.add(info["Id"])
        system.opened.append(self)
        self.system, self.info = system, info
        self.usb = "/usb" in info["Id"]
        self.formats = system.webcam_formats if self.usb else system.csi_formats
        self.config: Dict[str, Any] = {}
        self.started = False
        self.is_open = True
        self.stop_calls = 0

    def create_video_configuration(self, main: Dict[str, Any]) -> Dict[str, Any]:
        return {"main": dict({"format": "XBGR8888", "size": (1280, 720)}, **main), "raw": None}

    def configure(self, config: Dict[str, Any]) -> None:
        main = dict(config["main"])
        if main["format"] not in self.formats:
            main["format"] = self.formats[0]  # "Camera configuration has been adjusted!"
        w, h = main["size"]
        fmt = main["format"]
        per_pixel = {"YUYV": 2, "MJPEG": 0, "YUV420": 1, "RGB888": 3, "BGR888": 3}.get(fmt, 4)
        main["stride"] = w * per_pixel + (self.system.yuyv_pad if fmt == "YUYV" else 0)
        self.config = dict(config, main=main)

    def camera_configuration(self) -> Dict[str, Any]:
        return self.config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main", wait: Any = None) -> Any:
        assert wait is False and self.started
        main = self.config[name]
        w, h = main["size"]
        scene = cv2.resize(self.system.scene, (w, h), interpolation=cv2.INTER_AREA)
        return ("job", make_array(buffer_of(main["format"], scene, main["stride"]), main))

    def wait(self, job: Any, timeout: Optional[float] = None) -> np.ndarray:
        return job[1]

    def stop(self) -> None:
        self.stop_calls += 1
        if not self.started:
            return
        if self.system.stop_errors:
            raise self.system.stop_errors.pop(0)  # still started, as Picamera2's stop_() leaves it
        self.started = False

    def close(self) -> None:
        """As Picamera2.close(): stop (again), then release the camera."""
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.system.held.discard(self.info["Id"])
