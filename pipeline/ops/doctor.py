"""``python run.py doctor``: what this machine has for edgepipe, and the command that fixes each problem.

Sections: the interpreters and runtimes (this Python 3.11 side, the Python 3.9
TPU venv), libedgetpu and its version (dpkg status, the library files, and the
delegate probe), Edge TPUs on USB (sysfs ids 1a6e:089a, 18d1:9302) and PCIe
(``/dev/apex_*``), cameras (Picamera2 and V4L2 capture nodes), the model files
of every profile, and the SoC temperature (``thermal_zone0``). It ends with
what runs here, each profile on each engine, and exits 1 only when nothing the
user asked for runs (``pipeline/ops/verdict.py``); a problem that stops nothing
asked for is a note.

Devices a process has claimed (a running pipeline, a probe) are listed with
their pid from /proc/locks, and the delegate probe takes the Edge TPU's claim
without waiting: doctor never opens a device a run holds.

Everything read from the machine goes through ``root`` ("/" here; a recorded
tree in the tests), except what needs a process: the probe, the TPU venv's
Python and Picamera2, which run only against the real root (or through the
hooks a test passes).
"""
from __future__ import annotations

import argparse
import glob
import grp
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgepipe import ROOT as EDGEPIPE_ROOT
from edgepipe.actors.sources.demo import DEMO, DEMO_FILE
from edgepipe.actors.sources.picamera2_source import NUMPY_FIX, numpy_mismatch
from edgepipe.models.engines import delegate_probe
from edgepipe.models.engines.devices import lock_dir
from edgepipe.models.store import fetch
from edgepipe.pipeline.config.loading import ConfigError, load
from edgepipe.pipeline.ops import verdict
from edgepipe.pipeline.ops.machine import (CSI_NODES, PICAMERA2_SCRIPT, RUNTIME_SCRIPT, V4L2_CAP_VIDEO_CAPTURE,
                                           V4L2_CAP_VIDEO_CAPTURE_MPLANE, dpkg_versions, held_flocks, ldconfig_paths,
                                           picamera2_findings, querycap, read, run_json)

ROOT = Path(EDGEPIPE_ROOT)
USB_TPUS = {("1a6e", "089a"): "Coral USB Accelerator, not yet initialised (its firmware loads when the "
                              "runtime first opens it)",
            ("18d1", "9302"): "Coral USB Accelerator, initialised"}
PCI_TPU = ("0x1ac1", "0x089a")
APT_CORAL = ("add Coral's apt repository with its signed-by keyring (README, Raspberry Pi set-up, step 1), "
             "then: sudo apt update && sudo apt install libedgetpu1-std")
SETUP_TPU_VENV = "python run.py setup-tpu-venv   # finds a Python 3.9 from uv or pyenv; see README"
HOT_C = 80.0  # a Pi 5 starts to throttle at 80-85 C


class Finding:
    """One line of the report. ``engine``: the engine it concerns (cpu: the TFLite runtime; edgetpu: the runtime,
    the device); ``cell``: the (profile, engine) it concerns (a model file); ``blocks``: it stops that engine or
    cell from running (the verdict's "why not")."""

    def __init__(self, section: str, status: str, text: str, fix: str = "", engine: str = "",
                 cell: Tuple[str, str] = ("", ""), blocks: bool = False) -> None:
        self.section, self.status, self.text, self.fix = section, status, text, fix
        self.engine, self.cell, self.blocks = engine, cell if cell[0] else (), blocks

    def as_dict(self) -> Dict[str, Any]:
        return {"section": self.section, "status": self.status, "text": self.text, "fix": self.fix,
                "engine": self.engine, "cell": list(self.cell), "blocks": self.blocks}


def _runtime_of(info: Dict[str, Any]) -> str:
    for dist in ("ai-edge-litert", "tflite-runtime"):
        if info.get(dist):
            return "%s %s" % (dist, info[dist])
    return ""


class Doctor:
    """Runs every check; ``root`` is where /sys, /dev, /usr and /var are read from."""

    def __init__(self, root: str = "/", cfg: Any = None, repo: Path = ROOT,
                 querycap: Callable[[Path], Optional[int]] = querycap,
                 picameras: Optional[Callable[[], Tuple[Optional[List[Dict[str, str]]], str]]] = None,
                 probe: Optional[Callable[[str], Any]] = None, python: str = sys.executable,
                 user_groups: Optional[List[str]] = None) -> None:
        self.root = Path(root)
        self.real = self.root.resolve() == Path("/")
        self.cfg = cfg
        self.repo = repo
        self.querycap = querycap
        self.picameras = picameras if picameras is not None else (self._picameras if self.real else None)
        self.probe = probe if probe is not None else (self._probe if self.real else None)
        self.python = python
        # the groups this user is in; None for root (every device node opens)
        self.user_groups = user_groups if user_groups is not None else (
            None if os.geteuid() == 0 else [g.gr_name for g in grp.getgrall() if g.gr_gid in os.getgroups()])
        self.findings: List[Finding] = []
        self.tpu_python = ""

    def add(self, section: str, status: str, text: str, fix: str = "", **about: Any) -> None:
        self.findings.append(Finding(section, status, text, fix, **about))

    def p(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def run(self) -> List[Finding]:
        for check in (self.check_python, self.check_tpu_venv, self.check_libedgetpu, self.check_tpus,
                      self.check_cameras, self.check_models, self.check_temperature):
            check()
        return self.findings

    # -- interpreters and runtimes ---------------------------------------------------------------
    def check_python(self) -> None:
        info, err = run_json([self.python, "-c", RUNTIME_SCRIPT])
        if info is None:
            self.add("python", "fail", "cannot run %s: %s" % (self.python, err),
                     "python run.py doctor   # with the venv's Python", engine="cpu", blocks=True)
            return
        self.add("python", "ok", "Python %s at %s%s" % (info["python"], info["executable"],
                                                       " (a venv)" if info["venv"] else ""))
        rt = _runtime_of(info)
        if rt:
            self.add("python", "ok", "CPU runtime: %s" % rt)
        else:
            self.add("python", "fail", "no TFLite runtime: --engine cpu cannot run",
                     "python -m pip install -c constraints/pi-bookworm.txt -e .", engine="cpu", blocks=True)
        numpy = info.get("numpy_imported") or ""
        if numpy.startswith("2") and self._has_system_picamera2():
            self.add("python", "fail", "numpy %s shadows the system numpy that Debian's python3-picamera2 is "
                     "built against: `import picamera2` fails" % numpy,
                     "python -m pip install -c constraints/pi-bookworm.txt 'numpy<2'")
        elif numpy:
            self.add("python", "ok", "numpy %s" % numpy)

    def _has_system_picamera2(self) -> bool:
        return bool(glob.glob(str(self.p("usr/lib/python3/dist-packages/picamera2"))))

    def _tpu_python(self) -> Tuple[str, str]:
        """The TPU group's Python (config groups with a detector or fer, else .venv-tpu) and where it came from."""
        for name, g in sorted(getattr(self.cfg, "groups", {}).items()):
            if g.python and ({"detector", "fer"} & set(g.actors)):
                py = g.python if os.path.isabs(g.python) else str(self.repo / g.python)
                return py, "groups.%s.python" % name
        return str(self.repo / ".venv-tpu" / "bin" / "python"), "the default .venv-tpu"

    def check_tpu_venv(self) -> None:
        py, where = self._tpu_python()
        configured = where.startswith("groups.")  # a group that runs it: without it, that group cannot start
        if not os.path.exists(py):
            self.add("tpu-venv", "fail" if configured else "warn", "no Python 3.9 TPU venv at %s (%s): the Edge "
                     "TPU group has no runtime pinned for libedgetpu 16.0" % (py, where), SETUP_TPU_VENV,
                     engine="edgetpu", blocks=configured)
            return
        info, err = run_json([py, "-c", RUNTIME_SCRIPT])
        if info is None:
            self.add("tpu-venv", "fail", "the TPU venv's Python %s does not run: %s" % (py, err), SETUP_TPU_VENV,
                     engine="edgetpu", blocks=configured)
            return
        self.tpu_python = py
        rt = _runtime_of(info)
        self.add("tpu-venv", "ok" if info["python"].startswith("3.9.") else "warn",
                 "TPU venv: Python %s at %s (%s)" % (info["python"], py, where), engine="edgetpu")
        if info.get("tflite-runtime") == "2.11.0" and not info.get("ai-edge-litert"):
            self.add("tpu-venv", "ok", "TPU runtime: tflite-runtime 2.11.0 (pinned for libedgetpu 16.0)")
        else:
            self.add("tpu-venv", "warn", "TPU runtime: %s, not the pinned tflite-runtime 2.11.0 (newer runtimes "
                     "are reported to segfault with libedgetpu 16.0)" % (rt or "none"), SETUP_TPU_VENV,
                     engine="edgetpu")
        if (info.get("numpy_imported") or "").startswith("2"):
            self.add("tpu-venv", "fail", "numpy %s in the TPU venv: tflite-runtime 2.11 needs numpy<2"
                     % info["numpy_imported"], SETUP_TPU_VENV, engine="edgetpu", blocks=configured)

    # -- libedgetpu ------------------------------------------------------------------------------
    def check_claims(self) -> Dict[str, str]:
        """Every accelerator a process has claimed (a running pipeline, a probe), and its pid: read from
        /proc/locks, so doctor opens no device and takes no claim here. Returns lock file -> "pid N"."""
        held = held_flocks(glob.glob(os.path.join(lock_dir(), "device-*.lock")))
        for path, pid in sorted(held.items()):
            name = os.path.basename(path)[len("device-"):-len(".lock")]
            self.add("devices", "info", "device %s is in use by %s (a running pipeline or probe); doctor leaves it "
                     "alone" % (name, pid))
        return held

    def check_libedgetpu(self) -> None:
        held = self.check_claims()
        pkgs = dpkg_versions(self.p("var/lib/dpkg/status"), ("libedgetpu1-std", "libedgetpu1-max"))
        files = sorted(set(glob.glob(str(self.p("usr/lib/*/libedgetpu.so.1*")))
                           + glob.glob(str(self.p("usr/lib/libedgetpu.so.1*")))
                           + glob.glob(str(self.p("usr/local/lib/libedgetpu.so.1*")))))
        if self.real:
            files = sorted(set(files) | set(ldconfig_paths("libedgetpu.so")))
        if pkgs:
            self.add("libedgetpu", "ok", "installed: %s" % ", ".join("%s %s" % kv for kv in sorted(pkgs.items())))
        if files:
            self.add("libedgetpu", "ok", "library: %s" % ", ".join("/" + str(Path(f).relative_to(self.root))
                                                                  for f in files))
        if not pkgs and not files:
            self.add("libedgetpu", "fail", "libedgetpu (the Edge TPU runtime) is not installed", APT_CORAL,
                     engine="edgetpu", blocks=True)
            return
        if self.probe is not None:
            # the probe opens an Edge TPU: never one another process has claimed. The real probe takes the
            # claim itself, without waiting (delegate_probe.probe); this first look also covers a test's hook.
            busy = {p: pid for p, pid in held.items() if os.path.basename(p).startswith("device-edgetpu")}
            res = None if busy else self.probe(self.tpu_python)
            if busy or getattr(res, "busy", False):
                self.add("libedgetpu", "info", "delegate probe skipped: an Edge TPU is claimed by another process "
                         "(%s), which doctor leaves alone" % ", ".join(sorted(busy.values()) or [res.holder]),
                         "python run.py doctor   # again once that run has ended")
                return
            if res.ok:
                self.add("libedgetpu", "ok", "delegate probe: loads (%s)" % res.versions())
            else:
                self.add("libedgetpu", "fail", "delegate probe: %s" % res.error,
                         SETUP_TPU_VENV if res.crashed else "python run.py doctor   # after plugging in the TPU",
                         engine="edgetpu", blocks=True)

    def _probe(self, python: str) -> Any:
        return delegate_probe.probe(python=python or self.python)

    # -- Edge TPUs ---------------------------------------------------------------------------------
    def check_tpus(self) -> None:
        found = 0
        for dev in sorted(glob.glob(str(self.p("sys/bus/usb/devices/*")))):
            d = Path(dev)
            ids = (read(d / "idVendor").lower(), read(d / "idProduct").lower())
            if ids not in USB_TPUS:
                continue
            found += 1
            speed = read(d / "speed")
            text = "USB %s %s:%s: %s, %s Mb/s" % (d.name, ids[0], ids[1], USB_TPUS[ids], speed or "?")
            if speed and speed.isdigit() and int(speed) < 5000:
                self.add("edgetpu", "warn", text + " (a USB 2 port: about 3x slower)",
                         "plug the accelerator into a blue USB 3 port", engine="edgetpu")
            else:
                self.add("edgetpu", "ok", text)
        usb_found = found
        apex = sorted(glob.glob(str(self.p("dev/apex_*"))))
        for a in apex:
            found += 1
            self.add("edgetpu", "ok", "PCIe %s" % ("/" + str(Path(a).relative_to(self.root))))
        for dev in sorted(glob.glob(str(self.p("sys/bus/pci/devices/*")))):
            d = Path(dev)
            if (read(d / "vendor"), read(d / "device")) == PCI_TPU and not apex:
                found += 1
                self.add("edgetpu", "fail", "PCIe Edge TPU %s has no /dev/apex_* node: the apex driver is not "
                         "loaded" % d.name, "install and load the gasket/apex driver (gasket-dkms), then reboot; "
                         "on a Pi 5 also set dtparam=pciex1 in /boot/firmware/config.txt", engine="edgetpu",
                         blocks=True)
        need = (["plugdev"] if usb_found else []) + (["apex"] if apex else [])
        for g in need:  # the groups Coral's udev rules give the device nodes to
            if self.user_groups is not None and g not in self.user_groups:
                self.add("edgetpu", "warn", "you are not in the %s group, which Coral's udev rules give the "
                         "Edge TPU's device node to" % g, "sudo usermod -aG %s $USER   # then log in again" % g,
                         engine="edgetpu")
        if not found:
            self.add("edgetpu", "fail", "no Edge TPU: none on USB (ids 1a6e:089a, 18d1:9302) or PCIe (/dev/apex_*)",
                     "plug the Coral USB Accelerator into a USB 3 port (after installing libedgetpu1-std, unplug "
                     "and re-plug it once), or run with --engine cpu", engine="edgetpu", blocks=True)

    # -- cameras -----------------------------------------------------------------------------------
    def _picameras(self) -> Tuple[Optional[List[Dict[str, str]]], str]:
        return run_json([self.python, "-c", PICAMERA2_SCRIPT], timeout_s=30)

    def check_cameras(self) -> None:
        cams = 0
        if self.picameras is not None:
            listed, err = self.picameras()
            if listed is None:
                self.add("camera", "info", "Picamera2 not usable from %s: %s" % (self.python, err),
                         NUMPY_FIX if numpy_mismatch(err) else
                         "sudo apt install python3-picamera2, and make the venv with --system-site-packages")
            else:  # each with the --source that reads it
                for status, text, fix in picamera2_findings(listed, str(self.root), self.querycap):
                    cams += 1
                    self.add("camera", status, text, fix)
                if not listed:
                    self.add("camera", "info", "Picamera2 imports but lists no camera")
        for node in sorted(glob.glob(str(self.p("sys/class/video4linux/video*"))),
                           key=lambda s: int("".join(ch for ch in Path(s).name if ch.isdigit()) or 0)):
            n = Path(node)
            name = read(n / "name")
            driver = ""
            for line in read(n / "device" / "uevent").splitlines():
                if line.startswith("DRIVER="):
                    driver = line.split("=", 1)[1]
            label = "/dev/%s %r%s" % (n.name, name, (" (%s)" % driver) if driver else "")
            if name.startswith(CSI_NODES):
                continue  # the Pi's camera front end, ISP and codecs: Picamera2's, never a --source v4l2
            caps = self.querycap(self.p("dev") / n.name)
            if caps is None:
                self.add("camera", "info", "%s does not answer VIDIOC_QUERYCAP" % label)
            elif caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE):
                cams += 1
                self.add("camera", "ok", "V4L2 capture node %s (--source v4l2:%s)"
                         % (label, n.name[len("video"):]))
        csi = [Path(x).name for x in glob.glob(str(self.p("sys/class/video4linux/video*")))
               if read(Path(x) / "name").startswith(CSI_NODES)]
        if csi and not cams:
            self.add("camera", "info", "%d Pi camera/ISP nodes (%s...): a CSI camera is read through Picamera2, "
                     "not V4L2" % (len(csi), sorted(csi)[0]))
        paths = list(getattr(getattr(self.cfg, "models", None), "paths", []) or [])
        demo = fetch.locate(DEMO, DEMO_FILE, paths)
        if not cams and demo is not None:
            self.add("camera", "note", "no camera found: --source auto plays the demo clip (%s), or pass "
                     "--source video:PATH" % demo)
        elif not cams:
            self.add("camera", "warn", "no camera found (runs use a file or the demo clip)",
                     "connect a camera (CSI: check the ribbon, then `rpicam-hello --list-cameras`; USB: "
                     "`v4l2-ctl --list-devices`), or pass --source video:PATH")

    # -- models ------------------------------------------------------------------------------------
    def check_models(self) -> None:
        paths = list(getattr(getattr(self.cfg, "models", None), "paths", []) or [])
        for pname, prof in sorted((getattr(self.cfg, "profiles", {}) or {}).items()):
            for engine in verdict.ENGINES:
                roles = verdict.needs(prof, engine, paths)
                head = "profile %s, --engine %s" % (pname, engine)
                missing = [m for n in roles for m in n.missing]
                if not missing:
                    self.add("models", "ok", "%s: all files present (%s)"
                             % (head, ", ".join(sorted({n.label(engine) for n in roles}))), cell=(pname, engine))
                for text, fix in missing:
                    self.add("models", "warn", "%s: %s" % (head, text), fix, cell=(pname, engine), blocks=True)

    # -- temperature -------------------------------------------------------------------------------
    def check_temperature(self) -> None:
        zone = self.p("sys/class/thermal/thermal_zone0")
        raw = read(zone / "temp")
        if not raw:
            self.add("temperature", "info", "no SoC temperature sensor (/sys/class/thermal/thermal_zone0 absent)")
            return
        try:
            c = int(raw) / 1000.0
        except ValueError:
            self.add("temperature", "warn", "thermal_zone0 reads %r, not a temperature" % raw)
            return
        what = read(zone / "type") or "thermal_zone0"
        if c >= HOT_C:
            self.add("temperature", "warn", "%s: %.1f C: a Pi 5 throttles from 80-85 C" % (what, c),
                     "fit the Raspberry Pi Active Cooler (or a fan and heatsink) and give the case air")
        else:
            self.add("temperature", "ok", "%s: %.1f C" % (what, c))


MARK = {"ok": "[ok]  ", "info": "[info]", "note": "[note]", "warn": "[warn]", "fail": "[FAIL]"}


def render(findings: List[Finding], root: str, runs: Optional[List[str]] = None) -> str:
    """The report: the findings, then (``runs``, from ``verdict.render``) what runs here and the verdict."""
    lines = ["edgepipe doctor (machine root %s)" % root]
    for f in findings:
        lines.append("%s %-11s %s" % (MARK[f.status], f.section, f.text))
        if f.fix and f.status in ("warn", "fail", "info", "note"):
            lines.append("       %-11s fix: %s" % ("", f.fix))
    problems = sum(1 for f in findings if f.status in ("warn", "fail"))
    notes = sum(1 for f in findings if f.status == "note")
    lines.append("%d problem(s)%s%s" % (problems, ", each with the command that fixes it" if problems else "",
                                        "; %d note(s): what stops nothing asked for" % notes if notes else ""))
    return "\n".join(lines + list(runs or []))


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="run.py doctor", description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a config file overlaid on config.toml (profiles, groups, models.paths)")
    ap.add_argument("--profile", help="the profile you mean to run (default: the config's pipeline.profile)")
    ap.add_argument("--engine", choices=("auto", "cpu", "edgetpu", "fake"),
                    help="the engine you mean to run it on (default: the config's pipeline.engine; auto: the Edge "
                    "TPU or the CPU)")
    ap.add_argument("--root", default="/", help="read /sys, /dev, /usr, /var under this folder (a recorded tree)")
    ap.add_argument("--json", action="store_true", help="print the findings and what runs here as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 also when a [warn] or [FAIL] line is left")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print("config error: %s" % exc, file=sys.stderr)
        return 2
    profile, engines = verdict.asked(cfg, args.profile or "", args.engine or "")
    if profile not in cfg.profiles:
        print("doctor: --profile %s: unknown profile (profiles: %s)" % (profile, ", ".join(sorted(cfg.profiles))),
              file=sys.stderr)
        return 2
    findings = Doctor(args.root, cfg).run()
    table = verdict.cells(cfg, findings)
    code = verdict.judge(findings, table, profile, engines)
    runs = verdict.render(table, profile, engines, code)
    if args.json:
        print(json.dumps({"findings": [f.as_dict() for f in findings], "runs": [c.as_dict() for c in table],
                          "asked": {"profile": profile, "engines": engines}, "verdict": runs[-1], "exit": code},
                         indent=2))
    else:
        print(render(findings, args.root, runs))
    if args.strict and any(f.status in ("warn", "fail") for f in findings):
        return 1
    return code
