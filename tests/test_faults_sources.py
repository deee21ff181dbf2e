"""Files that fail: a bad image in a looping folder, a truncated video."""
from __future__ import annotations

import logging
import shutil

import pytest
from helpers import ASSETS

from edgepipe.actors.sources.sources import ImageSource, OpenCvSource

VIDEO = ASSETS / "video" / "WolfgangLanger_Pexels.mp4"


def test_a_bad_file_in_a_looping_folder_is_logged_and_counted_once(tmp_path, caplog):
    shutil.copy(ASSETS / "images" / "single_face.jpg", tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    src = ImageSource("dir:%s" % tmp_path, str(tmp_path), loop=True)
    with caplog.at_level(logging.INFO, logger="edgepipe.source"):
        for _ in range(10):  # 10 good frames: 10 passes over the folder, each meets b.jpg
            assert src.read() is not None
    assert src.errors == 1  # met on 9 passes (those before the 10th read), one distinct file
    logged = [r for r in caplog.records if "b.jpg" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "cannot decode" in logged[0].getMessage()


def test_a_truncated_video_warns_with_the_frame_where_it_ended(tmp_path, caplog):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(VIDEO.read_bytes()[:800000])  # about half of the 472 frames
    src = OpenCvSource("video:%s" % cut, str(cut), live=False)
    src.open()
    try:
        n = 0
        with caplog.at_level(logging.WARNING, logger="edgepipe.source"):
            while src.read() is not None:
                n += 1
    finally:
        src.close()
    assert 0 < n < 472
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, warned
    assert "ended at frame %d of the 472" % n in warned[0]
    assert src.errors == 1


@pytest.mark.parametrize("name", ["WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4"])
def test_a_whole_video_ends_without_a_warning(name, caplog):
    path = ASSETS / "video" / name
    src = OpenCvSource("video:%s" % path, str(path), live=False)
    src.open()
    try:
        with caplog.at_level(logging.WARNING, logger="edgepipe.source"):
            while src.read() is not None:
                pass
    finally:
        src.close()
    assert src.errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
