"""A setting that can never work stops the start with rc != 0, and each error is printed once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_py(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, "--metrics-endpoint",
                           "ipc://%s/metrics" % tmp_path], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("engine, missing", [("fake", "imagenet_labels.txt"),
                                             ("cpu", "mobilenet_v2_imagenet_int8_logits.tflite")])
def test_a_classifier_without_its_files_fails_at_start_once(engine, missing, tmp_path):
    empty = tmp_path / "cache"
    empty.mkdir()
    p = run_py(tmp_path, "--profile", "cls-imagenet", "--engine", engine, "--frames", "5", "-v",
               env={"EDGEPIPE_CACHE": str(empty), "EDGEPIPE_MODEL_PATH": str(empty)})
    assert p.returncode == 2, p.stderr[-2000:]  # refused before the run starts (pipeline/plan/model_files.py)
    assert p.stderr.count("%s (classifier of model mobilenet-v2)" % missing) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert "frames:" not in p.stdout  # no run, no summary


@pytest.mark.parametrize("args, message", [
    (["--frames", "-3"], "argument --frames: must be above 0, got -3"),
    (["--frames", "0"], "argument --frames: must be above 0"),
    (["--duration", "-1.5"], "argument --duration: must be above 0"),
    (["--frames", "many"], "argument --frames: expected a number, got 'many'"),
])
def test_counts_that_make_no_sense_are_refused(args, message, tmp_path):
    p = run_py(tmp_path, "--engine", "fake", *args)
    assert p.returncode == 2
    assert message in p.stderr


def test_a_missing_source_is_said_once(tmp_path):
    p = run_py(tmp_path, "--engine", "fake", "--source", "dir:%s" % (tmp_path / "nowhere"), "--frames", "5", "-v")
    assert p.returncode == 1
    assert p.stderr.count("does not exist") == 1, p.stderr[-3000:]
