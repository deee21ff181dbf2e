"""Device claims: one process per physical accelerator, whatever name the config gives it.

A claim is an exclusive ``flock`` on a lock file per physical device (in
``$EDGEPIPE_DEVICE_LOCKS``, else a per-user folder under the temp directory);
the kernel releases it when the holder exits, even by a crash. The file
says who holds it: ``pid N`` (a run) or ``pid N (a delegate probe)``.

``claim_key`` maps a config's device names to one key per physical device:
``fake:N`` is itself; ``edgetpu:usb`` and ``edgetpu:usb:0`` are
``edgetpu:usb:0``, ``edgetpu:pci`` is ``edgetpu:pci:0``; ``edgetpu:``
(libedgetpu's "the first found") is ``edgetpu:usb:0`` when a Coral shows on
USB or none shows anywhere, ``edgetpu:pci:0`` when only PCIe ones
(``/dev/apex_*``) do. With USB and PCIe Edge TPUs both attached, which one
libedgetpu finds first is its choice: name each device (``usb:0``,
``pci:0``) rather than ``""``. Any other form (a device path) is its own key.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import os
import tempfile
import time

from edgepipe.models.errors import EngineError

LOCK_DIR_ENV = "EDGEPIPE_DEVICE_LOCKS"
PROBE_WAIT_S = 130.0  # how long an engine waits for another process's probe (a probe times out at 120 s)
PROBE_MARK = "(a delegate probe)"
CORAL_USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))  # before and after the runtime's firmware load


class DeviceBusy(EngineError):
    """The device is held by another process; ``holder`` names it ("pid N")."""

    def __init__(self, message: str, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder


def lock_dir() -> str:
    base = os.environ.get(LOCK_DIR_ENV) or os.path.join(tempfile.gettempdir(), "edgepipe-%d" % os.getuid())
    os.makedirs(base, mode=0o700, exist_ok=True)
    return base


def coral_usb_attached(root: str = "/") -> bool:
    """Whether a Coral USB Accelerator shows in sysfs (either of its two ids)."""
    for d in glob.glob(os.path.join(root, "sys/bus/usb/devices/*")):
        try:
            with open(os.path.join(d, "idVendor")) as v, open(os.path.join(d, "idProduct")) as p:
                if (v.read().strip(), p.read().strip()) in CORAL_USB_IDS:
                    return True
        except OSError:
            continue
    return False


def claim_key(name: str, root: str = "/") -> str:
    """The one key of the physical device a config's ``name`` means (see the module's docstring)."""
    kind, _, dev = name.partition(":")
    if kind != "edgetpu":
        return name
    dev = dev.strip().lower()
    if not dev:
        only_pci = glob.glob(os.path.join(root, "dev/apex_*")) and not coral_usb_attached(root)
        dev = "pci:0" if only_pci else "usb:0"
    bus, _, index = dev.partition(":")
    if bus in ("usb", "pci") and (index or "0").isdigit():
        return "edgetpu:%s:%d" % (bus, int(index or "0"))
    return "edgetpu:" + dev  # a path or another form libedgetpu takes: its own claim


def _lock_path(key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in key)
    return os.path.join(lock_dir(), "device-%s.lock" % safe)


class _Claim:
    """An exclusive flock on the device's lock file, held while the device is open in this process (or,
    ``probe``, while a probe child has it open). ``wait_s``: how long to wait while a probe holds it."""

    def __init__(self, key: str, probe: bool = False, wait_s: float = 0.0) -> None:
        self.path = _lock_path(key)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                holder = _holder(fd)
                if holder.endswith(PROBE_MARK) and time.monotonic() < deadline:
                    time.sleep(0.05)  # a probe holds it for a second or two: this run starts after it
                    continue
                os.close(fd)
                raise DeviceBusy("device %s is already claimed by another process (%s); one accelerator belongs "
                                 "to one process: put the actors that use it in one group, or give each process "
                                 "its own device (groups.NAME.tpu, engine.edgetpu.devices, engine.fake.devices)"
                                 % (key, holder or "pid unknown"), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("pid %d%s" % (os.getpid(), " " + PROBE_MARK if probe else "")).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
