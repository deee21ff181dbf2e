"""The Edge TPU delegate is loaded first in a throwaway subprocess (models/delegate_probe.py).

The stand-in loaders in tests/delegate_standins.py run inside the real probe
child (selected with EDGEPIPE_DELEGATE_LOADER) and kill it with a real signal.
libc stands in for libedgetpu (EDGEPIPE_EDGETPU_LIBRARY) so the child gets past
opening the library, as on a Pi with libedgetpu installed.
"""
from __future__ import annotations

import ctypes.util
import logging
from pathlib import Path

import numpy as np
import pytest

from edgepipe.models import registry
from edgepipe.models.engines import delegate_probe, litert
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.store import manifest

HERE = Path(__file__).resolve().parent
STANDINS = str(HERE / "delegate_standins.py")
MODELS_DIR = HERE.parent.parent / "shared" / "assets" / "models"
LIBC = ctypes.util.find_library("c") or "libc.so.6"


@pytest.fixture(autouse=True)
def fresh_probe_cache():
    delegate_probe._CACHE.clear()
    yield
    delegate_probe._CACHE.clear()


def _runtime_version() -> str:
    mod, runtime, version = delegate_probe._import_runtime()
    assert mod is not None
    return "%s %s" % (runtime, version)


def test_segfault_in_probe_becomes_one_clear_error(monkeypatch):
    monkeypatch.setenv(delegate_probe.ENV_LOADER, STANDINS + ":crash_segv")
    res = delegate_probe.probe(LIBC)
    assert not res.ok and res.crashed and res.returncode == -11
    assert res.stage == "loading the delegate from %s" % LIBC
    assert "SIGSEGV" in res.error and _runtime_version() in res.error
    assert "libedgetpu (no edgetpu_version)" in res.error  # libc has no edgetpu_version()
    assert "tflite-runtime==2.11.0" in res.error and "setup-tpu-venv" in res.error


def test_abort_in_probe_is_named(monkeypatch):
    monkeypatch.setenv(delegate_probe.ENV_LOADER, STANDINS + ":crash_abort")
    res = delegate_probe.probe(LIBC)
    assert not res.ok and res.returncode == -6
    assert "SIGABRT" in res.error and _runtime_version() in res.error


def test_python_error_in_probe_is_reported(monkeypatch):
    monkeypatch.setenv(delegate_probe.ENV_LOADER, STANDINS + ":refuse")
    res = delegate_probe.probe(LIBC, device="usb:0")
    assert not res.ok and not res.crashed and res.returncode == 4
    assert "did not load on 'usb:0'" in res.error and "Failed to load delegate from" in res.error


def test_missing_library_is_reported_by_the_probe():
    res = delegate_probe.probe("libedgetpu-not-here.so.1")
    assert not res.ok and res.returncode == 3
    assert "libedgetpu-not-here.so.1 cannot be opened" in res.error and "libedgetpu1-std" in res.error
    assert res.runtime in ("ai-edge-litert", "tflite-runtime")


def test_parse_of_a_good_probe():
    lines = ['{"stage": "importing the TFLite runtime"}',
             '{"stage": "opening x", "runtime": "tflite-runtime", "runtime_version": "2.11.0"}',
             '{"stage": "loading", "libedgetpu": "BuildLabel(COMPILER=6.3.0),RuntimeVersion(14)"}',
             '{"ok": true, "stage": "done"}']
    res = delegate_probe.parse(lines, 0)
    assert res.ok and res.versions() == ("runtime tflite-runtime 2.11.0, "
                                         "libedgetpu BuildLabel(COMPILER=6.3.0),RuntimeVersion(14)")


@pytest.mark.skipif(not MODELS_DIR.is_dir(), reason="test assets not found at %s" % MODELS_DIR)
def test_crashing_delegate_falls_back_to_cpu(monkeypatch, caplog):
    monkeypatch.setenv(delegate_probe.ENV_LOADER, STANDINS + ":crash_segv")
    monkeypatch.setenv(litert.ENV_LIBRARY, LIBC)
    spec = manifest.get("fer112")
    # no fallback configured: the crash is one EngineError naming both versions; this process lives on
    eng = registry.make_engine("edgetpu", spec, model_paths=[str(MODELS_DIR)])
    with pytest.raises(EngineError) as err:
        eng.load()
    msg = str(err.value)
    assert msg.startswith("model 'fer112': the Edge TPU is not usable: the Edge TPU delegate crashed")
    assert "SIGSEGV" in msg and _runtime_version() in msg and "libedgetpu" in msg
    assert "Traceback" not in msg
    # fallback = "cpu": the CPU model runs and the warning carries the probe's error
    caplog.set_level(logging.WARNING, logger="edgepipe.models.engines.litert")
    eng = registry.make_engine("edgetpu", spec, model_paths=[str(MODELS_DIR)], fallback="cpu")
    try:
        eng.load()
        assert eng.kind == "cpu" and eng.fell_back
        warnings = [r.getMessage() for r in caplog.records if "falling back to the CPU" in r.getMessage()]
        assert len(warnings) == 1 and "SIGSEGV" in warnings[0]
        out = eng.invoke([np.zeros((1, 112, 112, 3), np.int8)])
        assert out[0].shape == (1, 7)
    finally:
        eng.close()
