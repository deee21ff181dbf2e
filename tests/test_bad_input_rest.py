"""Bad input that used to escape: each gives one error line that names the option or the file, never a
traceback; a source that gives no frame ends the run with a non-zero exit; a broken file in a looping
folder is counted once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
START = "edgepipe: "  # the run's own notices before it starts (placement, the fake engine's banner, endpoints)


def run_py(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--engine", "fake",
                           "--metrics-endpoint", "ipc://%s/metrics" % tmp_path, *args],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=120)


def error_lines(stderr: str):
    """What stderr says besides the run's start notices."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(START)]


def image(path: Path, level: int) -> None:
    cv2.imwrite(str(path), np.full((48, 64, 3), level, np.uint8))


@pytest.fixture
def undecodable(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"not a jpeg")  # (a JPEG header over junk would add libjpeg's own line)
    (d / "b.png").write_bytes(b"not a png either")
    return d


@pytest.mark.parametrize("args, line", [
    (["--display", "web:999999", "--source", "synthetic"],
     "config error: --display web:999999: pipeline.display: port 999999 is not in 0-65535 (web:0 takes any free "
     "port)"),
    (["--source", "synthetic:faces=x"],
     "error: capture did not start: source 'synthetic:faces=x': option faces=x is not a whole number"),
    (["--source", "synthetic:fps=inf"],
     "error: capture did not start: source 'synthetic:fps=inf': option fps=inf is not a finite number"),
    (["--fer-workers", "0", "--source", "synthetic"],
     "config error: --fer-workers 0: fer.workers: 0 is below the minimum 1"),
])
def test_one_line_naming_the_option(args, line, tmp_path):
    p = run_py(tmp_path, *args, "--frames", "5")
    assert p.returncode != 0
    assert error_lines(p.stderr) == [line], p.stderr
    assert "Traceback" not in p.stderr and "config.toml" not in p.stderr


def test_a_config_file_error_still_names_the_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[pipeline]\ndisplay = "web:70000"\n')
    p = run_py(tmp_path, "--config", str(cfg), "--source", "synthetic", "--frames", "5")
    assert p.returncode == 2
    lines = error_lines(p.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        "config error: %s: pipeline.display: port 70000 is not in 0-65535" % cfg), p.stderr


def test_a_folder_with_no_decodable_image_fails_in_one_line(undecodable, tmp_path):
    p = run_py(tmp_path, "--source", "dir:%s" % undecodable, "--frames", "5")
    assert p.returncode == 1
    assert error_lines(p.stderr) == [
        "error: capture did not start: source 'dir:%s': none of the 2 images in %s can be decoded (a.jpg, b.png): "
        "corrupt or not images" % (undecodable, undecodable)], p.stderr
    assert "Traceback" not in p.stderr
    assert "frames:" not in p.stdout  # no summary of a run that never started


def test_a_video_with_no_decodable_frame_ends_non_zero(tmp_path):
    clip = Path(ROOT.parent / "shared" / "assets" / "video" / "WolfgangLanger_Pexels.mp4")
    if not clip.is_file():
        pytest.skip("the shared assets are not here: %s" % clip)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:20000])  # the header and part of the first frame: OpenCV opens it
    p = run_py(tmp_path, "--source", "video:%s" % cut, "--frames", "5")
    assert p.returncode == 1, p.stderr
    assert "decodes no frame of it" in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last == "error: source video:%s gave no frame: 1 unreadable input(s), logged above" % cut
    assert "Traceback" not in p.stderr


def test_a_broken_file_in_a_looping_folder_counts_once(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    image(d / "a.png", 40)
    image(d / "b.png", 200)
    (d / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    summary = tmp_path / "s.json"
    p = run_py(tmp_path, "--source", "dir:%s" % d, "--frames", "10", "--summary", str(summary))
    assert p.returncode == 0, p.stderr
    s = json.loads(summary.read_text())
    assert s["frames_captured"] == 10  # five passes over the folder, each meeting c.jpg
    assert s["actors"]["capture"]["counters"]["source_errors"] == 1
    logged = [line for line in p.stderr.splitlines() if "cannot decode image" in line]
    assert len(logged) == 1 and str(d / "c.jpg") in logged[0] and "logged and counted" in logged[0]
    assert "source: 1 unreadable inputs" in p.stdout
    assert "Traceback" not in p.stderr
