"""Where the display's annotated frames go: the Sink interface, a window and a video file.

The web page sink (``actors.web_sink``) builds on the same interface; ``actors.display.make_sink``
picks one from the ``--display`` spec.
"""
from __future__ import annotations

import os
from typing import Set

import cv2
import numpy as np


class DisplayError(RuntimeError):
    """A display sink that cannot work here; the message says why."""

    user_facing = True


class Sink:
    every_frame = False  # a record: write every result in order, do not skip to the newest

    def open(self) -> None:
        pass

    def write(self, image: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class WindowSink(Sink):
    def __init__(self, title: str = "edgepipe") -> None:
        self.title = title
        self.opened = False
        self.windows: Set[str] = set()  # the windows opened, one per camera

    def open(self) -> None:
        if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DisplayError("display 'window' needs a screen (DISPLAY is not set); use --display none "
                               "or --display file:out.mp4")
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise DisplayError("display 'window' needs OpenCV with GUI support: pip uninstall "
                               "opencv-python-headless && pip install opencv-python") from None
        self.opened = True

    def write(self, image: np.ndarray) -> None:
        cv2.imshow(self.title, image)
        cv2.waitKey(1)

    def write_camera(self, camera: str, image: np.ndarray) -> None:
        """A window per camera: ``edgepipe`` for the one camera ``default``, ``edgepipe NAME`` otherwise."""
        title = self.title if camera == "default" else "%s %s" % (self.title, camera)
        self.windows.add(title)
        cv2.imshow(title, image)
        cv2.waitKey(1)

    def close(self) -> None:
        if self.opened:
            for title in sorted(self.windows - {self.title}):
                cv2.destroyWindow(title)
            cv2.destroyWindow(self.title)
            self.opened = False


class FileSink(Sink):
    every_frame = True

    def __init__(self, path: str, fps: float) -> None:
        self.path = path
        self.fps = fps  # until the source's own rate is known (``Display`` sets it from the first frame)
        self.writer = None

    def open(self) -> None:
        d = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(d):
            raise DisplayError("display file: folder %s does not exist" % d)

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            h, w = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.lower().endswith(".avi") else "mp4v"))
            self.writer = cv2.VideoWriter(self.path, fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                raise DisplayError("cannot write video %s (unsupported container?)" % self.path)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
