"""Reading the machine for ``run.py doctor``: sysfs files, V4L2 VIDIOC_QUERYCAP, the dpkg status, a Python's runtimes."""
from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import struct
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

CSI_NODES = ("rp1-cfe", "pispbe", "rpivid", "rpi-hevc", "bcm2835-codec", "bcm2835-isp", "unicam")
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_DEVICE_CAPS = 0x80000000
VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
# libcamera's uvcvideo handler names a webcam by its USB controller's firmware node, the port path (the bus number
# stripped), config.interface, and vendor:product: /base/axi/pcie@1000120000/rp1/usb@200000-1.3:1.0-046d:0892
UVC_ID = re.compile(r"-(\d+(?:\.\d+)*:\d+\.\d+)-([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")
USB_INTERFACE = re.compile(r"\d+-(\d+(?:\.\d+)*:\d+\.\d+)$")  # sysfs: bus-ports:config.interface, 1-1.3:1.0


def querycap(dev: Path) -> Optional[int]:
    """The device capabilities of a V4L2 node (VIDIOC_QUERYCAP), or None when it does not answer."""
    try:
        fd = os.open(str(dev), os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = fcntl.ioctl(fd, VIDIOC_QUERYCAP, bytes(104))
    except OSError:
        return None
    finally:
        os.close(fd)
    caps, device_caps = struct.unpack_from("<II", buf, 84)
    return device_caps if caps & V4L2_CAP_DEVICE_CAPS else caps


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def is_usb_camera(info: Dict[str, Any]) -> bool:
    """Whether a camera of ``Picamera2.global_camera_info()`` is a USB webcam (Picamera2's own test)."""
    return "/usb" in str(info.get("Id", ""))


def uvc_id(camera_id: str) -> Optional[Tuple[str, str]]:
    """(port path "1.3:1.0", "vid:pid") of the libcamera id of a USB webcam; None for any other id."""
    m = UVC_ID.search(camera_id) if "/usb" in camera_id else None
    return (m.group(1), ("%s:%s" % (m.group(2), m.group(3))).lower()) if m else None


def node_usb_ids(node: Path) -> Tuple[str, str]:
    """(port path, "vid:pid") of the USB interface behind ``/sys/class/video4linux/videoN`` ("" where unknown):
    the ``device`` link's target is named bus-ports:config.interface, its parent holds idVendor and idProduct;
    without them the interface's uevent PRODUCT=vid/pid/bcd gives the ids."""
    dev = node / "device"
    real = Path(os.path.realpath(str(dev)))
    m = USB_INTERFACE.match(real.name)
    port = m.group(1) if m else ""
    vid, pid = read(real.parent / "idVendor"), read(real.parent / "idProduct")
    if vid and pid:
        return port, ("%s:%s" % (vid, pid)).lower()
    for line in read(dev / "uevent").splitlines():
        if line.startswith("PRODUCT="):
            try:
                v, p = (int(x, 16) for x in line[len("PRODUCT="):].split("/")[:2])
            except ValueError:
                break
            return port, "%04x:%04x" % (v, p)
    return port, ""


def uvc_nodes(camera_id: str, root: str = "/", caps_of: Callable[[Path], Optional[int]] = querycap) -> List[int]:
    """The N of the ``/dev/videoN`` capture nodes of the webcam that libcamera (and Picamera2) names
    ``camera_id``, in number order: its vendor:product, and its port where sysfs shows it, match; a node that
    answers VIDIOC_QUERYCAP without video capture (the webcam's metadata node) is left out."""
    want = uvc_id(camera_id)
    if want is None:
        return []
    out = []
    for path in glob.glob(os.path.join(root, "sys/class/video4linux/video*")):
        m = re.match(r"video(\d+)$", os.path.basename(path))
        if not m:
            continue
        port, ids = node_usb_ids(Path(path))
        if ids != want[1] or (port and port != want[0]):
            continue
        caps = caps_of(Path(root) / "dev" / os.path.basename(path))
        if caps is not None and not caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE):
            continue
        out.append(int(m.group(1)))
    return sorted(out)


def run_json(cmd: List[str], timeout_s: float = 60.0) -> Tuple[Optional[Any], str]:
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                           timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if p.returncode != 0:
        tail = [x for x in p.stderr.strip().splitlines() if x.strip()][-1:]
        return None, tail[0] if tail else "exit status %d" % p.returncode
    try:
        return json.loads(p.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return None, "no answer"


RUNTIME_SCRIPT = """import json, sys
out = {"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
       "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix)}
try:
    from importlib import metadata
except ImportError:
    metadata = None
for dist in ("ai-edge-litert", "tflite-runtime", "numpy", "opencv-python-headless", "opencv-python", "pyzmq",
             "msgspec", "pycoral"):
    try:
        out[dist] = metadata.version(dist)
    except Exception:
        out[dist] = None
try:
    import numpy
    out["numpy_imported"] = numpy.__version__
except Exception as exc:
    out["numpy_imported"] = None
print(json.dumps(out))
"""
PICAMERA2_SCRIPT = """import json
from picamera2 import Picamera2
print(json.dumps([{k: str(v) for k, v in c.items()} for c in Picamera2.global_camera_info()]))
"""


def dpkg_versions(status_file: Path, names: Tuple[str, ...]) -> Dict[str, str]:
    """Installed versions of the packages ``names`` in a dpkg status file."""
    found: Dict[str, str] = {}
    text = read(status_file)
    for para in text.split("\n\n"):
        fields = {}
        for line in para.splitlines():
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                fields[k.strip()] = v.strip()
        if fields.get("Package") in names and fields.get("Status", "").endswith(" installed"):
            found[fields["Package"]] = fields.get("Version", "?")
    return found


def ldconfig_paths(prefix: str) -> List[str]:
    """Paths the dynamic linker's cache (``ldconfig -p``) has for libraries named ``prefix``*."""
    for exe in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 universal_newlines=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        return [line.split("=>", 1)[1].strip() for line in out.splitlines()
                if line.strip().startswith(prefix) and "=>" in line]
    return []


def held_flocks(paths: List[str], proc_locks: str = "/proc/locks") -> Dict[str, str]:
    """Which of the files ``paths`` some process holds a lock on, and its pid ("pid N"), read from
    ``/proc/locks``: nothing is opened or locked, so a device another process has claimed is left alone."""
    want: Dict[Tuple[int, int, int], str] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        want[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = p
    held: Dict[str, str] = {}
    for line in read(Path(proc_locks)).splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":  # "->": a process waiting for the lock, not holding it
            continue
        try:
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if key in want:
            held[want[key]] = "pid %s" % fields[4]
    return held


def picamera2_findings(listed: List[Dict[str, str]], root: str = "/",
                       caps_of: Callable[[Path], Optional[int]] = querycap) -> List[Tuple[str, str, str]]:
    """(status, text, fix) of each camera ``Picamera2.global_camera_info()`` lists, with the --source that reads
    it: a CSI camera through Picamera2 (camera 0: Picamera2 sorts USB webcams last), a webcam through V4L2."""
    out = []
    for i, c in enumerate(listed):
        model = c.get("Model", "?")
        if not is_usb_camera(c):
            out.append(("ok", "Picamera2 camera %d: %s (--source picamera2%s)"
                        % (i, model, "" if i == 0 else " opens camera 0 only"), ""))
            continue
        nodes = uvc_nodes(c.get("Id", ""), root, caps_of)
        if nodes:
            out.append(("ok", "Picamera2 camera %d: %s, a USB webcam (--source v4l2:%d: through V4L2; Picamera2 "
                        "gives it only as MJPEG or YUYV)" % (i, model, nodes[0]), ""))
        else:
            out.append(("info", "Picamera2 camera %d: %s, a USB webcam whose V4L2 capture node is not found from "
                        "its id %s" % (i, model, c.get("Id", "")),
                        "v4l2-ctl --list-devices, then --source v4l2:N with the N of its first /dev/videoN"))
    return out
