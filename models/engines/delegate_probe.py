"""Load the Edge TPU delegate first in a throwaway subprocess (the probe).

A TFLite runtime that does not match ``libedgetpu`` does not raise: it kills the
process (SIGSEGV or SIGABRT) in ``load_delegate`` or when the interpreter is
built. Coral's last runtime, libedgetpu1-std 16.0, is built against TF 2.5 and
is reported to crash with runtimes from 2.12 on (see constraints/tpu-py39.txt).
So before a process loads the delegate for real, ``probe()`` runs this file as
a child with the same Python, which

1. imports the runtime (ai-edge-litert, else tflite-runtime) and reports its version;
2. opens the library with ctypes and reports ``edgetpu_version()``;
3. loads the delegate (with the device option) and, given a model, builds an
   interpreter with it, allocates its tensors and invokes it once.

Each step is written to stdout as one JSON line before the next starts, so when
the child dies the parent knows how far it got. A crash becomes one
``ProbeResult`` whose ``error`` names the signal, the step, the runtime and the
libedgetpu versions and the fix; ``models/litert.py`` raises it as an
EngineError, and the engine's configured fallback applies.

The probe opens the device, and a second process that opens a Coral USB
Accelerator breaks the transfers of the one using it until it is re-plugged
(google-coral/edgetpu #237, #645). So ``probe()`` first takes the device's
claim (``devices.probe_claim``: the lock file a run holds), without waiting:
when another process holds it the probe does not run and its result names the
holder (``busy``); in a process where a model already runs on the device it
does not run either (``skipped``: that runtime is proven). Only the parent
takes the claim; the child does not know about it.

``EDGEPIPE_DELEGATE_LOADER`` ("MODULE:FUNC" or "/path/file.py:FUNC") replaces
the runtime's ``load_delegate(library, options)`` in the child: tests select a
stand-in loader that crashes. The child imports nothing from this project, so
it runs in the TPU venv (Python 3.9) as well.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from importlib import metadata
from typing import Any, Dict, List, Optional, Tuple

if __name__ != "__main__":  # the parent's side; the child imports nothing from this project
    from edgepipe.models.engines.devices import DeviceBusy, claim_key, probe_claim

ENV_LOADER = "EDGEPIPE_DELEGATE_LOADER"
DEFAULT_LIBRARY = "libedgetpu.so.1"
FIX_RUNTIME = ("install the runtime pinned for libedgetpu 16.0 in the TPU venv: `python run.py setup-tpu-venv "
               "--python PYTHON3.9` (constraints/tpu-py39.txt: tflite-runtime==2.11.0, numpy<2); "
               "`python run.py doctor` shows what is installed")


class ProbeResult:
    """What the probe child reported: ``ok``, versions, how far it got and the error."""

    def __init__(self, ok: bool, runtime: str = "", runtime_version: str = "", libedgetpu: str = "",
                 stage: str = "", error: str = "", returncode: int = 0, holder: str = "",
                 skipped: bool = False) -> None:
        self.ok = ok
        self.holder = holder  # "pid N": another process holds the device's claim; the probe did not run
        self.skipped = skipped  # a model already runs on the device in this process: the probe did not run
        self.runtime = runtime
        self.runtime_version = runtime_version
        self.libedgetpu = libedgetpu
        self.stage = stage
        self.error = error
        self.returncode = returncode

    @property
    def crashed(self) -> bool:
        return self.returncode < 0

    @property
    def busy(self) -> bool:
        return bool(self.holder)

    def versions(self) -> str:
        rt = ("%s %s" % (self.runtime, self.runtime_version)).strip() or "no TFLite runtime"
        return "runtime %s, libedgetpu %s" % (rt, self.libedgetpu or "unknown")

    def as_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "runtime": self.runtime, "runtime_version": self.runtime_version,
                "libedgetpu": self.libedgetpu, "stage": self.stage, "error": self.error,
                "returncode": self.returncode, "holder": self.holder, "skipped": self.skipped}


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return "signal %d" % -returncode


def parse(lines: List[str], returncode: int, stderr: str = "") -> ProbeResult:
    """The result of a probe child from its stdout lines and exit status."""
    info: Dict[str, Any] = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            info.update(rec)
    res = ProbeResult(bool(info.get("ok")) and returncode == 0, str(info.get("runtime", "")),
                      str(info.get("runtime_version", "")), str(info.get("libedgetpu", "")),
                      str(info.get("stage", "")), str(info.get("error", "")), returncode)
    if res.ok:
        return res
    if returncode < 0:
        res.error = ("the Edge TPU delegate crashed the probe process (%s) while %s: %s. A TFLite runtime "
                     "that does not match libedgetpu dies like this (libedgetpu 16.0 needs tflite-runtime "
                     "2.11 or older); %s" % (_signal_name(returncode), res.stage or "starting", res.versions(),
                                             FIX_RUNTIME))
    elif not res.error:
        tail = [x for x in stderr.strip().splitlines() if x.strip()][-1:]
        res.error = "the delegate probe exited with status %d%s (%s)" % (
            returncode, (": " + tail[0]) if tail else "", res.versions())
    else:
        res.error = "%s (%s)" % (res.error, res.versions())
    return res


def probe(library: str = DEFAULT_LIBRARY, device: str = "", model: str = "", python: str = "",
          timeout_s: float = 60.0, env: Optional[Dict[str, str]] = None) -> ProbeResult:
    """Run the probe child with ``python`` (default: this interpreter) holding the device's claim; never raises.
    Another process holding the claim: not run, ``busy`` (``holder`` names it); a model already running on
    the device in this process: not run, ``ok`` and ``skipped``."""
    try:
        with probe_claim("edgetpu:%s" % device) as run_it:
            if not run_it:
                return ProbeResult(True, stage="skipped: a model already runs on the Edge TPU %r in this "
                                   "process" % device, skipped=True)
            return _run_child(library, device, model, python, timeout_s, env)
    except DeviceBusy as exc:
        return ProbeResult(False, stage="claiming the device", returncode=1, holder=exc.holder or "pid unknown",
                           error="the Edge TPU %s is held by another process (%s); the probe did not open it"
                           % (device or "(the first found)", exc.holder or "pid unknown"))


def _run_child(library: str, device: str, model: str, python: str, timeout_s: float,
               env: Optional[Dict[str, str]]) -> ProbeResult:
    cmd = [python or sys.executable, os.path.abspath(__file__), "--library", library]
    if device:
        cmd += ["--device", device]
    if model:
        cmd += ["--model", model]
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONFAULTHANDLER", "1")  # a crash leaves its C stack trace on stderr
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env,
                                universal_newlines=True)
    except OSError as exc:
        return ProbeResult(False, error="cannot start the delegate probe with %s: %s" % (cmd[0], exc),
                           returncode=1)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        res = parse(out.splitlines(), 1, err)
        res.ok = False
        res.error = ("the delegate probe hung for %.0f s while %s (%s); unplug and re-plug the Edge TPU, "
                     "then run `python run.py doctor`" % (timeout_s, res.stage or "starting", res.versions()))
        return res
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return parse(out.splitlines(), proc.returncode, err)


_CACHE: Dict[Tuple[str, ...], ProbeResult] = {}
_CACHE_LOCK = threading.Lock()


def probe_once(library: str = DEFAULT_LIBRARY, device: str = "", model: str = "",
               python: str = "") -> ProbeResult:
    """``probe()`` once per process for each library, device (its claim: "" and "usb:0" are one), model,
    interpreter and loader; a probe that found the device held by another process is not kept."""
    key = (library, claim_key("edgetpu:%s" % device), model, os.path.abspath(python or sys.executable),
           os.environ.get(ENV_LOADER, ""))
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is None:
            found = probe(library, device, model, python)
            if not found.busy and not found.skipped:
                _CACHE[key] = found
        return found


# ---------------------------------------------------------------------------------------- the child
def _say(**rec: Any) -> None:
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except Exception:  # noqa: BLE001 - PackageNotFoundError and broken metadata alike
            continue
    return ""


# the TFLite runtimes, in order of preference: (interpreter module, distribution)
RUNTIMES = (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"))


def runtime_module() -> Tuple[Any, str]:
    """The TFLite runtime's ``interpreter`` module and its distribution's name: ai-edge-litert, else
    tflite-runtime (the TPU venv's). ImportError naming both when neither is installed."""
    missing = []
    for module, dist in RUNTIMES:
        try:
            return importlib.import_module(module), dist  # optional and heavy: imported when a model is loaded
        except ImportError as exc:
            missing.append(str(exc))
    raise ImportError("; ".join(missing))


def _import_runtime() -> Tuple[Any, str, str]:
    mod, dist = runtime_module()
    return mod, dist, _dist_version(dist, dist.replace("-", "_"))


def _custom_loader(spec: str) -> Any:
    target, _, func = spec.rpartition(":")
    if target.endswith(".py"):
        sp = importlib.util.spec_from_file_location("edgepipe_probe_loader", target)
        if sp is None or sp.loader is None:
            raise ImportError("cannot load %s" % target)
        module = importlib.util.module_from_spec(sp)
        sp.loader.exec_module(module)
    else:  # a module a test names in EDGEPIPE_DELEGATE_LOADER (a stand-in loader that crashes)
        module = importlib.import_module(target)
    return getattr(module, func)


def child_main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="delegate_probe")
    ap.add_argument("--library", default=DEFAULT_LIBRARY)
    ap.add_argument("--device", default="")
    ap.add_argument("--model", default="")
    args = ap.parse_args(argv)
    _say(stage="importing the TFLite runtime")
    try:
        mod, runtime, version = _import_runtime()
    except ImportError as exc:
        _say(error="no TFLite runtime is importable (%s)" % exc)
        return 2
    _say(stage="opening %s" % args.library, runtime=runtime, runtime_version=version)
    try:
        lib = ctypes.CDLL(args.library)
    except OSError as exc:
        _say(error="%s cannot be opened: %s; install libedgetpu1-std from Coral's apt repository "
                   "(README, Raspberry Pi set-up)" % (args.library, exc))
        return 3
    libver = ""
    fn = getattr(lib, "edgetpu_version", None)
    if fn is not None:
        fn.restype = ctypes.c_char_p
        raw = fn()
        libver = raw.decode("utf-8", "replace") if raw else ""
    _say(stage="loading the delegate from %s" % args.library, libedgetpu=libver or "(no edgetpu_version)")
    loader = mod.load_delegate
    custom = os.environ.get(ENV_LOADER, "")
    if custom:
        loader = _custom_loader(custom)
    options = {"device": args.device} if args.device else {}
    try:
        delegate = loader(args.library, options)
        if args.model:
            _say(stage="building an interpreter for %s with the delegate" % os.path.basename(args.model))
            interp = mod.Interpreter(model_path=args.model, experimental_delegates=[delegate])
            interp.allocate_tensors()
            _say(stage="invoking %s once on the Edge TPU" % os.path.basename(args.model))
            interp.invoke()  # zero inputs: a mismatched runtime may crash only here
    except (OSError, ValueError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()
        _say(error="the delegate did not load%s: %s" % ((" on %r" % args.device) if args.device else "",
                                                         text[0] if text else type(exc).__name__))
        return 4
    _say(ok=True, stage="done")
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
