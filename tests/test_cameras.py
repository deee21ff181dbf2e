"""Cameras by kind: CSI cameras through Picamera2, USB webcams through V4L2, and the formats Picamera2 really gives.

The camera lists are recorded ``global_camera_info()`` answers of a Pi 5
(``data/picamera2-cameras.json``: a CSI camera, a webcam, both); the frames come
from a stand-in of Picamera2's camera class (``picamera2_standin``) that adjusts
the format and lays a real image out in each format's buffer, as the camera and
Picamera2 do. The V4L2 side reads a sysfs tree laid out as Linux lays out a
webcam's nodes (links to the USB interface, whose parent holds the ids).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from picamera2_standin import CameraSystem

from edgepipe.actors.sources.live_sources import Reconnecting
from edgepipe.actors.sources.picamera2_source import NUMPY_FIX, Picamera2Source, picamera2_class, to_bgr, version_tuple
from edgepipe.actors.sources.sources import SourceError, SourceUnusable
from edgepipe.pipeline.ops.doctor import Doctor
from edgepipe.pipeline.ops.machine import uvc_id, uvc_nodes
from edgepipe.pipeline.plan.source_auto import resolve_source

HERE = Path(__file__).resolve().parent
RECORDED = json.loads((HERE / "data" / "picamera2-cameras.json").read_text())
WEBCAM_ID = RECORDED["uvc"][0]["Id"]
IMAGE = "/work/shared/assets/images/chelsea.png"
CAPTURE, METADATA = 0x04200001, 0x04a00000  # a UVC webcam's two nodes' device_caps (VIDIOC_QUERYCAP)
NUMPY2_ERROR = ("ValueError: numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C "
                "header, got 88 from PyObject")  # import picamera2 under numpy 2 (picamera2 issues 1088, 1211)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A real photograph at 640x480 with a pure red patch (left) and a pure blue one (right)."""
    img = cv2.imread(IMAGE, cv2.IMREAD_COLOR)
    if img is None:
        pytest.skip("test asset %s is missing" % IMAGE)
    img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
    img[20:80, 20:80] = (0, 0, 255)
    img[20:80, 560:620] = (255, 0, 0)
    return img


def webcam_tree(root: Path) -> Path:
    """A Pi 5 sysfs tree: the CSI receiver's node (video0), the C920 on USB port 1 (video1 capture, video2
    metadata) and another C920 on port 2 (video3, video4)."""
    classes = root / "sys" / "class" / "video4linux"
    hub = root / "sys" / "devices" / "platform" / "axi" / "1000120000.pcie" / "1f00200000.usb" / "xhci-hcd.0" / "usb1"
    for port, nodes in (("1-1", (1, 2)), ("1-2", (3, 4))):
        iface = hub / port / (port + ":1.0")
        iface.mkdir(parents=True)
        (hub / port / "idVendor").write_text("046d\n")
        (hub / port / "idProduct").write_text("0892\n")
        (iface / "uevent").write_text("DEVTYPE=usb_interface\nDRIVER=uvcvideo\nPRODUCT=46d/892/11\n")
        for n in nodes:
            node = classes / ("video%d" % n)
            node.mkdir(parents=True)
            (node / "name").write_text("HD Pro Webcam C920\n")
            (node / "device").symlink_to(Path("..", "..", "..", *iface.relative_to(root / "sys").parts))
    csi = classes / "video0"
    csi.mkdir(parents=True)
    (csi / "name").write_text("rp1-cfe-csi2_ch0\n")
    (root / "dev").mkdir()
    for n in range(5):
        (root / "dev" / ("video%d" % n)).write_text("")
    return root


def caps(path: Path):
    return {"video0": CAPTURE, "video1": CAPTURE, "video2": METADATA, "video3": CAPTURE, "video4": METADATA}.get(
        path.name)


# ------------------------------------------------------------------ which camera goes where

def test_the_webcam_node_is_found_from_its_libcamera_id(tmp_path):
    tree = webcam_tree(tmp_path)
    assert uvc_id(WEBCAM_ID) == ("1:1.0", "046d:0892")
    assert uvc_id(RECORDED["csi"][0]["Id"]) is None
    assert uvc_nodes(WEBCAM_ID, str(tree), caps) == [1]  # port 1's capture node, not its metadata node
    assert uvc_nodes(WEBCAM_ID.replace("-1:1.0-", "-2:1.0-"), str(tree), caps) == [3]
    assert uvc_nodes(WEBCAM_ID.replace("046d:0892", "046d:0825"), str(tree), caps) == []


def test_without_the_usb_links_the_ids_of_the_uevent_match(tmp_path):
    """A tree whose ``device`` is a plain folder (no port known): the vendor:product of its uevent decides."""
    node = tmp_path / "sys" / "class" / "video4linux" / "video8"
    (node / "device").mkdir(parents=True)
    (node / "device" / "uevent").write_text("DRIVER=uvcvideo\nPRODUCT=46d/892/11\n")
    assert uvc_nodes(WEBCAM_ID, str(tmp_path), lambda p: CAPTURE) == [8]


@pytest.mark.parametrize("setup, spec", [("csi", "picamera2"), ("uvc", "v4l2:1"), ("both", "picamera2")])
def test_auto_takes_the_csi_camera_through_picamera2_and_a_webcam_through_v4l2(tmp_path, setup, spec):
    tree = webcam_tree(tmp_path)
    got, why = resolve_source("auto", cameras=lambda: (RECORDED[setup], ""), nodes=lambda: [(1, "C920")],
                              captures=lambda i: i == 1, webcam_nodes=lambda i: uvc_nodes(i, str(tree), caps))
    assert got == spec
    assert ("USB webcam HD Pro Webcam C920 at /dev/video1" in why) if setup == "uvc" else ("imx708_wide" in why)


def test_auto_goes_on_when_the_webcam_node_delivers_nothing_or_picamera2_is_broken():
    probed = []

    def captures(i):
        probed.append(i)
        return i == 5

    got, _ = resolve_source("auto", cameras=lambda: (RECORDED["uvc"], ""), nodes=lambda: [(1, "C920"), (5, "other")],
                            captures=captures, webcam_nodes=lambda i: [1])
    assert got == "v4l2:5" and probed == [1, 5]  # the webcam's node is probed once
    problem = "Picamera2 cannot be imported: ...; run: %s" % NUMPY_FIX
    got, why = resolve_source("auto", cameras=lambda: ([], problem), nodes=lambda: [], webcam_nodes=lambda i: [])
    assert got == "demo" and "'numpy<2'" in why and "constraints/pi-bookworm.txt" in why


def doctor_cameras(tree: Path, listed, err=""):
    doctor = Doctor(str(tree), None, repo=tree, querycap=caps, picameras=lambda: (listed, err),
                    probe=lambda python: None, user_groups=[])
    doctor.check_cameras()
    return [(f.status, f.text, f.fix) for f in doctor.findings if f.section == "camera"]


def test_doctor_names_the_source_of_each_camera(tmp_path):
    tree = webcam_tree(tmp_path)
    found = doctor_cameras(tree, RECORDED["both"])
    assert found[0][:2] == ("ok", "Picamera2 camera 0: imx708_wide (--source picamera2)")
    assert found[1][:2] == ("ok", "Picamera2 camera 1: HD Pro Webcam C920, a USB webcam (--source v4l2:1: through "
                                  "V4L2; Picamera2 gives it only as MJPEG or YUYV)")
    nodes = [text for _, text, _ in found[2:]]
    assert nodes == ["V4L2 capture node /dev/video1 'HD Pro Webcam C920' (uvcvideo) (--source v4l2:1)",
                     "V4L2 capture node /dev/video3 'HD Pro Webcam C920' (uvcvideo) (--source v4l2:3)"]
    unplugged = [dict(RECORDED["uvc"][0], Id=WEBCAM_ID.replace("0892", "0825"))]
    status, text, fix = doctor_cameras(tree, unplugged)[0]
    assert status == "info" and "not found from its id" in text and "--source v4l2:N" in fix


def test_doctor_names_numpy_when_picamera2_does_not_import(tmp_path):
    status, text, fix = doctor_cameras(tmp_path, None, NUMPY2_ERROR)[0]
    assert "numpy.dtype size changed" in text and fix == NUMPY_FIX
    assert doctor_cameras(tmp_path, None, "ModuleNotFoundError: No module named 'picamera2'")[0][2].startswith(
        "sudo apt install python3-picamera2")


# ------------------------------------------------------------------ the formats Picamera2 really gives

def read_one(system: CameraSystem, size=(640, 480)) -> np.ndarray:
    src = Picamera2Source("picamera2", size, camera_class=system.camera_class())
    src.open()
    try:
        img, truth = src.read()
    finally:
        src.close()
    assert truth is None and not system.held  # closed: released
    return img


@pytest.mark.parametrize("setup, formats, got_format, max_mean_diff", [
    ("csi", None, "RGB888", 0.0),  # asked for and given: BGR in memory, untouched
    ("csi", ["XBGR8888"], "XBGR8888", 0.0),  # R, G, B, X: reordered, X dropped
    ("csi", ["BGR888"], "BGR888", 0.0),
    ("csi", ["YUV420"], "YUV420", 6.0),
    ("uvc", None, "MJPEG", 4.0),  # a webcam adjusts RGB888 to its first format: MJPEG, decoded by PIL as RGB
    ("uvc", ["YUYV"], "YUYV", 6.0),  # a webcam without MJPEG
])
def test_each_format_arrives_as_bgr(scene, caplog, setup, formats, got_format, max_mean_diff):
    kind = "webcam_formats" if setup == "uvc" else "csi_formats"
    system = CameraSystem(RECORDED[setup], scene, **{kind: formats})
    with caplog.at_level(logging.WARNING, logger="edgepipe.source"):
        img = read_one(system)
    assert system.opened[0].config["main"]["format"] == got_format
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    assert float(np.abs(img.astype(np.int16) - scene.astype(np.int16)).mean()) <= max_mean_diff
    red, blue = img[30:70, 30:70].mean(axis=(0, 1)), img[30:70, 570:610].mean(axis=(0, 1))
    assert red[2] > 200 and red[0] < 50 and blue[0] > 200 and blue[2] < 50  # red stays red: no R/B swap
    said = [r.getMessage() for r in caplog.records]
    assert any(got_format in m and "--source v4l2:N" in m for m in said) == (got_format != "RGB888")


def test_yuyv_rows_padded_to_the_stride_are_cut_to_the_width(scene):
    system = CameraSystem(RECORDED["uvc"], scene, webcam_formats=["YUYV"], yuyv_pad=64)
    img = read_one(system)
    assert system.opened[0].config["main"]["stride"] == 640 * 2 + 64
    assert img.shape == (480, 640, 3) and float(np.abs(img.astype(np.int16) - scene.astype(np.int16)).mean()) < 6


def test_a_format_that_cannot_be_converted_is_one_line_and_not_reconnected(scene):
    system = CameraSystem(RECORDED["uvc"], scene, webcam_formats=["NV12"])
    src = Picamera2Source("picamera2", (640, 480), camera_class=system.camera_class())
    with pytest.raises(SourceUnusable) as err:
        src.open()
    msg = str(err.value)
    assert "gives NV12 frames" in msg and "--source v4l2:N" in msg and "\n" not in msg
    assert not system.held  # the camera opened for the attempt was closed
    with pytest.raises(SourceUnusable, match=r"YUYV frames shaped \(480, 640, 3\), not the \(480, 640, 2\)"):
        to_bgr("picamera2", scene, {"format": "YUYV", "size": (640, 480), "stride": 1280})
    made = []

    def make():
        made.append(1)
        return Picamera2Source("picamera2", (640, 480), camera_class=system.camera_class())

    system.webcam_formats = ["YUYV"]
    live = Reconnecting("picamera2", make)
    live.open()
    live.inner.stream["format"] = "UYVY"  # what a misreported format gives: the array does not fit
    live.inner.stream["stride"] = 1000
    with pytest.raises(SourceUnusable, match="UYVY"):
        live.read()
    assert made == [1] and live.attempts == 0  # stopped, not reopened with backoff
    live.close()
    assert not system.held


def test_close_releases_the_camera_when_stop_fails_so_a_reopen_is_not_busy(scene):
    system = CameraSystem(RECORDED["csi"], scene)
    cls = system.camera_class()
    src = Picamera2Source("picamera2", (640, 480), camera_class=cls)
    src.open()
    system.stop_errors.append(RuntimeError("camera stopped responding"))
    src.close()
    assert not system.held and src.cam is None
    again = Picamera2Source("picamera2", (640, 480), camera_class=cls)
    again.open()  # not "busy"
    assert again.read()[0].shape == (480, 640, 3)
    again.close()
    cls()  # held by nobody now
    with pytest.raises(SourceError, match="no camera found or it is busy"):
        Picamera2Source("picamera2", (640, 480), camera_class=cls).open()


# ------------------------------------------------------------------ broken set-ups named with their fix

def test_numpy2_under_picamera2_is_one_line_with_the_fix():
    def numpy2():
        raise ValueError(NUMPY2_ERROR.split(": ", 1)[1])

    with pytest.raises(SourceError) as err:
        picamera2_class(load=numpy2)
    msg = str(err.value)
    assert "pip install -c constraints/pi-bookworm.txt 'numpy<2'" in msg and "\n" not in msg
    assert (HERE.parent / "constraints" / "pi-bookworm.txt").is_file()

    def missing():
        raise ModuleNotFoundError("No module named 'picamera2'", name="picamera2")

    def no_libcamera():
        raise ModuleNotFoundError("No module named 'libcamera'", name="libcamera")

    assert picamera2_class(load=missing) is None
    with pytest.raises(SourceError, match="sudo apt install python3-picamera2"):
        picamera2_class(load=no_libcamera)


def test_picamera2_before_0_3_17_is_told_to_upgrade(scene):
    """Picamera2 0.3.16's wait(job) takes no timeout."""
    system = CameraSystem(RECORDED["csi"], scene)

    class Old(system.camera_class()):
        def wait(self, job):
            return job[1]

    src = Picamera2Source("picamera2", (640, 480), camera_class=Old)
    src.open()
    try:
        with pytest.raises(SourceUnusable) as err:
            src.read()
    finally:
        src.close()
    assert "older than 0.3.17" in str(err.value)
    assert "sudo apt install --only-upgrade python3-picamera2" in str(err.value)
    assert version_tuple("0.3.16") < (0, 3, 17) <= version_tuple("0.3.17") < version_tuple("0.3.19-1")
