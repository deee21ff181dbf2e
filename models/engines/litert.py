"""Real-inference engines: LiteRT on the CPU (XNNPACK) and on the Coral Edge TPU.

``cpu`` uses ``ai_edge_litert.interpreter.Interpreter`` (``num_threads`` from
the config), else ``tflite_runtime.interpreter.Interpreter``. ``edgetpu`` uses
PyCoral's ``make_interpreter`` when PyCoral is installed, else the same
interpreter with the ``libedgetpu.so.1`` delegate. An Edge TPU engine runs on
a pool of devices (``models/devices.py``): one interpreter per device, and
every invoke on the owner thread of the device it goes to, so the engines of
one process share each Edge TPU (libedgetpu shares one device context among
the interpreters of a process) and never invoke it at the same time. Model files are located,
fetched and verified by ``models/fetch.py``.

A missing library, a missing Edge TPU and a wrong model file all raise
``EngineError`` with a message saying what is wrong and how to fix it. With
``fallback="cpu"``, an Edge TPU engine that cannot open its TPU logs a warning
and loads the model's CPU file instead (its ``kind`` then reads ``cpu`` and
``fell_back`` is True).

Before an Edge TPU interpreter is opened, the delegate is loaded once in a
throwaway subprocess (``models/delegate_probe.py``; ``EDGEPIPE_DELEGATE_PROBE=0``
skips it): a runtime that crashes with this libedgetpu becomes an EngineError
naming both versions, and the fallback above applies. ``EDGEPIPE_EDGETPU_LIBRARY``
names another libedgetpu build (a path or a soname).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from edgepipe.models.engines import delegate_probe
from edgepipe.models.engines.devices import DeviceGone, DeviceModel, DevicePool, open_on, open_pool
from edgepipe.models.engines.engine import Engine, EngineError, TensorSpec
from edgepipe.models.spec import ModelSpec
from edgepipe.models.store import fetch

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
ENV_LIBRARY = "EDGEPIPE_EDGETPU_LIBRARY"  # another libedgetpu build (a path or a soname)


# libedgetpu's words for a Coral that is gone (unplugged, reset, not enumerated yet), from Coral's and
# Frigate's reports: no device at load ("Failed to load delegate", "No EdgeTPU was detected", "Error in
# device opening"), a USB transfer that fails in an invoke ("HandleQueuedBulkIn transfer in failed", "Bulk
# out 0 failed", "USB transfer error", "Deadline exceeded", then "EdgeTpuDelegateForCustomOp failed to
# invoke"). They raise DeviceGone: the role moves to the CPU until a re-probe finds the device again.
GONE_TEXTS = ("failed to load delegate", "no edgetpu was detected", "error in device opening", "bulkin", "bulk in",
              "bulk out", "transfer in failed", "usb transfer error", "deadline exceeded", "edgetpudelegateforcustomop")


def is_device_gone(exc: BaseException) -> bool:
    """Whether an Edge TPU error says that the device is gone (``GONE_TEXTS``)."""
    text = str(exc).lower()
    return any(t in text for t in GONE_TEXTS)


def edgetpu_library() -> str:
    return os.environ.get(ENV_LIBRARY, "").strip() or EDGETPU_LIBRARY


INSTALL_LITERT = ("no TFLite interpreter is installed: run `python -m pip install ai-edge-litert` "
                  "(or, on Python 3.9 with numpy<2, `python -m pip install tflite-runtime`)")
INSTALL_EDGETPU = (
    "install the Edge TPU runtime (Debian package libedgetpu1-std from Coral's apt repository, "
    "see coral.ai/software), plug in the Coral USB accelerator (a USB 3 port, then unplug and "
    "re-plug it once after installing), or run with --engine cpu, or allow fallback = \"cpu\" "
    "in the config")


XNNPACK_BANNER = b"Created TensorFlow Lite XNNPACK delegate for CPU."
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def without_xnnpack_banner() -> Iterator[None]:
    """Hold back LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." line.

    The C++ runtime writes it straight to file descriptor 2 on every interpreter it creates, and no
    environment variable or Python call silences it (TF_CPP_MIN_LOG_LEVEL does not). For the time of
    the call, fd 2 goes to a temporary file; whatever else was written there meanwhile (another thread's
    log, a real error) is written back to stderr afterwards.
    """
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no stderr to redirect
            yield
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    yield
                finally:
                    try:
                        sys.stderr.flush()
                    except (OSError, ValueError):
                        pass
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    kept = b"".join(line for line in tmp.read().splitlines(True) if XNNPACK_BANNER not in line)
                    if kept:
                        os.write(2, kept)
        finally:
            os.close(saved)


def _interpreter_class():
    """The TFLite interpreter class and its module (ai-edge-litert, else tflite-runtime)."""
    try:
        mod, _ = delegate_probe.runtime_module()
    except ImportError:
        raise EngineError(INSTALL_LITERT) from None
    return mod.Interpreter, mod


def _is_flatbuffer(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] == b"TFL3"


def _tensor_spec(d: Dict[str, Any]) -> TensorSpec:
    scale, zero_point = 0.0, 0
    q = d.get("quantization")
    if q:
        scale, zero_point = float(q[0]), int(q[1])
    qp = d.get("quantization_parameters") or {}
    scales = qp.get("scales")
    if scales is not None and len(scales) == 1:
        scale = float(scales[0])
        zero_point = int(qp["zero_points"][0])
    dtype = np.dtype(d["dtype"]).name
    return TensorSpec(str(d.get("name", "")), tuple(int(x) for x in d["shape"]), dtype, scale, zero_point)


class LiteRTEngine(Engine):
    """One TFLite interpreter; ``kind`` is ``cpu`` or ``edgetpu``."""

    def __init__(self, kind: str, model: ModelSpec, *, threads: int = 1, device: str = "",
                 fallback: str = "", model_paths: Sequence[str] = (), fetch_missing: bool = True,
                 open_pool: Optional[Callable[[], DevicePool]] = None) -> None:
        super().__init__(model)
        if kind not in ("cpu", "edgetpu"):
            raise EngineError("LiteRT engine kind must be cpu or edgetpu, not %r" % kind)
        if fallback not in ("", "none", "cpu"):
            raise EngineError("fallback must be \"cpu\" or empty, not %r" % fallback)
        self.kind = kind
        self.requested_kind = kind
        self.threads = max(1, int(threads or 1))
        self.device = device or ""
        self.fallback = fallback
        self.model_paths = tuple(str(p) for p in (model_paths or ()))
        self.fetch_missing = fetch_missing
        self.fell_back = False
        self.model_path: Optional[Path] = None
        self._interp: Any = None
        self._open_pool = open_pool or (lambda: edgetpu_pool([self.device]))
        self._interps: Dict[str, Any] = {}  # Edge TPU: device name -> its interpreter
        self.device_model = DeviceModel(model.name, model.tpu_param_mb, est_ms=model.tpu_ms or 5.0)
        self._batch = 1  # the batch size the interpreter's tensors are allocated for (CPU)
        self._batch_refused = False
        self._in_idx: List[int] = []
        self._out_idx: List[int] = []
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> None:
        if self._interp is not None:
            return
        if self.kind == "edgetpu":
            try:
                self._load_edgetpu()
            except EngineError as exc:
                if self.fallback != "cpu":
                    raise
                log.warning("model %s: the Edge TPU engine is not available, falling back to the CPU: %s",
                            self.model.name, exc)
                self.kind = "cpu"
                self.fell_back = True
                self._load_cpu()
        else:
            self._load_cpu()
        self._read_details()

    def _resolve(self, engine_kind: str) -> Path:
        path = fetch.resolve(self.model, engine_kind, model_paths=self.model_paths, fetch=self.fetch_missing)
        if not _is_flatbuffer(path):
            raise EngineError("model %r: %s is not a TFLite model file (no TFL3 flatbuffer header); "
                              "delete it and fetch it again with `python run.py models fetch %s`"
                              % (self.model.name, path, self.model.name))
        return path

    def _load_cpu(self) -> None:
        interpreter_cls, _ = _interpreter_class()
        path = self._resolve("cpu")
        try:
            with without_xnnpack_banner():
                interp = interpreter_cls(model_path=str(path), num_threads=self.threads)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = ""
            if "edgetpu" in str(exc).lower():
                hint = " (it is compiled for the Edge TPU: use --engine edgetpu, or the model's CPU file)"
            raise EngineError("model %r: cannot load %s on the CPU: %s%s"
                              % (self.model.name, path, msg, hint)) from None
        self._interp = interp
        self.model_path = path

    def _load_edgetpu(self) -> None:
        if "edgetpu" not in self.model.files:
            raise EngineError("model %r has no Edge TPU file (it is not compiled for the Edge TPU); "
                              "run it with --engine cpu" % self.model.name)
        path = self._resolve("edgetpu")
        pool = self._open_pool()  # claims the devices (DeviceBusy when another process holds one)
        try:
            for dev in pool.devices:  # "edgetpu:DEVICE"; probed unless a model of this process already runs on it
                self._interps[dev.name] = open_on(dev, functools.partial(self._probe, path, dev.name[8:]),
                                                  functools.partial(self._open_interpreter, path, dev.name[8:]))
        except BaseException:
            self._interps = {}
            pool.release()
            raise
        self.pool = pool
        self._interp = next(iter(self._interps.values()))
        self.model_path = path

    def _probe(self, path: Path, device: str) -> None:
        """Load the delegate in a throwaway subprocess first: a runtime that crashes with this
        libedgetpu kills the probe, not this process (``models/delegate_probe.py``)."""
        if os.environ.get("EDGEPIPE_DELEGATE_PROBE", "1") == "0":
            return
        res = delegate_probe.probe_once(edgetpu_library(), device, str(path))
        if not res.ok:
            fix = "" if res.crashed else "; " + INSTALL_EDGETPU
            raise EngineError("model %r: the Edge TPU is not usable: %s%s" % (self.model.name, res.error, fix))
        log.info("model %s: delegate probe passed (%s)", self.model.name, res.versions())

    def _open_interpreter(self, path: Path, device: str) -> Any:
        """One interpreter on the Edge TPU ``device`` ("" = the first one, "usb:0", "pci:0")."""
        interp = None
        try:
            # optional: Coral's own helper where it is installed (the TPU venv), else the runtime's delegate
            from pycoral.utils.edgetpu import make_interpreter  # type: ignore
        except ImportError:
            make_interpreter = None
        try:
            if make_interpreter is not None:
                interp = make_interpreter(str(path), device=device or None)
            else:
                interpreter_cls, mod = _interpreter_class()
                options = {"device": device} if device else {}
                # Open the library first: when it is missing, load_delegate leaves a half-built
                # Delegate whose __del__ fails later, at garbage-collection time.
                library = edgetpu_library()
                ctypes.CDLL(library)
                delegate = mod.load_delegate(library, options)
                interp = interpreter_cls(model_path=str(path), experimental_delegates=[delegate])
            interp.allocate_tensors()
        except (OSError, ValueError, RuntimeError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where, error = (" %r" % device) if device else "", DeviceGone if is_device_gone(exc) else EngineError
            raise error("model %r: cannot open the Edge TPU%s through %s (%s): %s"
                        % (self.model.name, where, edgetpu_library(), detail, INSTALL_EDGETPU)) from None
        return interp

    def _read_details(self) -> None:
        interp = self._interp
        ins = interp.get_input_details()
        outs = interp.get_output_details()
        self._inputs = [_tensor_spec(d) for d in ins]
        self._outputs = [_tensor_spec(d) for d in outs]
        self._in_idx = [int(d["index"]) for d in ins]
        self._out_idx = [int(d["index"]) for d in outs]
        want = (1,) + tuple(self.model.input_shape)
        got = tuple(self._inputs[0].shape) if self._inputs else ()
        if got != want:
            path = self.model_path
            self.close()
            raise EngineError("model %r: the file %s has input shape %s, the manifest expects %s: "
                              "wrong model file; replace it with the manifest's file (python run.py models "
                              "fetch %s)" % (self.model.name, path, list(got), list(want), self.model.name))

    # -- running -------------------------------------------------------------------------------
    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        interp = self._interp
        if interp is None:
            raise EngineError("engine for %r is not loaded (call load() first) or was closed" % self.model.name)
        if len(inputs) != len(self._in_idx):
            raise EngineError("model %r takes %d input tensors, got %d"
                              % (self.model.name, len(self._in_idx), len(inputs)))
        pool = self.pool
        if pool is not None:  # on the owner thread of the Edge TPU the pool picks
            return pool.run(self.device_model, lambda dev: self._invoke(self._interps[dev.name], inputs))
        return self._invoke(interp, inputs)

    def invoke_batch(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """One invoke of N on the CPU (the input resized to N, where the model allows it); N on a device."""
        n = int(np.shape(inputs[0])[0])
        if self.pool is not None or n == 1 or self._batch_refused:
            return super().invoke_batch(inputs)
        interp = self._interp
        if interp is None:
            raise EngineError("engine for %r is not loaded (call load() first) or was closed" % self.model.name)
        with self._lock:
            try:
                self._resize_locked(interp, n)
                for spec, idx, x in zip(self._inputs, self._in_idx, inputs):
                    a = np.asarray(x)
                    interp.set_tensor(idx, np.ascontiguousarray(a if a.dtype.name == spec.dtype
                                                                else a.astype(spec.dtype)))
                interp.invoke()
                self.invocations += 1
                return [np.array(interp.get_tensor(i), copy=True) for i in self._out_idx]
            except (ValueError, RuntimeError) as exc:
                log.warning("model %s does not take a batch of %d (%s); invoking one at a time",
                            self.model.name, n, exc)
                self._batch_refused = True
                self._batch = 0  # unknown: the next invoke of one resizes back
        return super().invoke_batch(inputs)

    def _resize_locked(self, interp: Any, n: int) -> None:
        """Allocate the interpreter's tensors for a batch of ``n`` (holding ``_lock``)."""
        if self._batch != n:
            for spec, idx in zip(self._inputs, self._in_idx):
                interp.resize_tensor_input(idx, [n] + list(spec.shape[1:]))
            interp.allocate_tensors()
            self._batch = n

    def _invoke(self, interp: Any, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        with self._lock:
            if self.pool is None:
                self._resize_locked(interp, 1)
            for spec, idx, x in zip(self._inputs, self._in_idx, inputs):
                a = np.asarray(x)
                if a.dtype.name != spec.dtype:
                    a = a.astype(spec.dtype)
                try:  # the shape was checked against the manifest at load; the interpreter checks this one
                    interp.set_tensor(idx, np.ascontiguousarray(a))
                except ValueError as exc:
                    raise EngineError("model %r: input shape %s, expected %s (%s)"
                                      % (self.model.name, list(a.shape), list(spec.shape), exc)) from None
            try:
                interp.invoke()
            except RuntimeError as exc:
                if self.pool is not None and is_device_gone(exc):
                    raise DeviceGone("model %r: the Edge TPU failed: %s" % (self.model.name, exc)) from None
                raise
            self.invocations += 1
            return [np.array(interp.get_tensor(i), copy=True) for i in self._out_idx]

    def close(self) -> None:
        self._interp = None
        self._interps = {}
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.release()

    def describe(self) -> Dict[str, object]:
        d = super().describe()
        d.update({"engine": self.kind, "file": str(self.model_path) if self.model_path else None,
                  "threads": self.threads})
        if self.fell_back:
            d["fell_back_from"] = self.requested_kind
        if self.pool is not None:
            d["devices"] = self.pool.names
        return d


def edgetpu_pool(devices: Sequence[str]) -> DevicePool:
    """This process's Edge TPUs ``devices`` ("" = the first one found), claimed from other processes."""
    return open_pool(["edgetpu:%s" % d for d in (list(devices) or [""])], "edgetpu")


def make_litert_engine(kind: str, spec: ModelSpec, *, threads: int = 1, device: str = "",
                       fallback: str = "", model_paths: Sequence[str] = (),
                       open_pool: Optional[Callable[[], DevicePool]] = None) -> Engine:
    """An unloaded LiteRT engine (``cpu`` or ``edgetpu``) for ``spec``; ``load()`` opens it.

    A model with no Edge TPU file runs on the CPU (placement has said so, with one warning line).
    """
    if kind == "edgetpu" and "edgetpu" not in spec.files:
        kind = "cpu"
    return LiteRTEngine(kind, spec, threads=threads, device=device, fallback=fallback, model_paths=model_paths,
                        open_pool=open_pool)
