"""Sources: specs, bad input, cameras that are not there."""
from __future__ import annotations

import numpy as np
import pytest

from edgepipe.actors.sources.source_factory import make_source
from edgepipe.actors.sources.sources import SourceError, is_live
from edgepipe.models.families.labels import EXPRESSIONS


def test_synthetic_truth_is_consistent():
    s = make_source("synthetic:faces=4,fps=0,size=320x240,seed=3,change=2")
    s.open()
    img, truth = s.read()
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    assert len(truth) == 4
    assert all(t.expression in EXPRESSIONS for t in truth)
    assert not is_live("synthetic:fps=0") and is_live("synthetic:fps=30") and is_live("v4l2:0")


@pytest.mark.parametrize("spec, message", [
    ("synthetic:faces=x", "option faces=x is not a whole number"),
    ("synthetic:fps=fast", "option fps=fast is not a number"),
    ("synthetic:fps=nan", "option fps=nan is not a finite number"),
    ("synthetic:size=big", "WIDTHxHEIGHT"),
    ("synthetic:faces=64,size=64x64", "do not fit"),
    ("v4l2:abc", "camera number"),
    ("video:/no/such/file.mp4", None),
])
def test_bad_specs(spec, message):
    with pytest.raises(SourceError) as err:
        src = make_source(spec)
        src.open()
    if message:
        assert message in str(err.value)


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    import cv2
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    src = make_source("dir:%s" % tmp_path)
    got = [src.read() for _ in range(3)]
    assert all(g[0].shape == (10, 10, 3) for g in got)
    assert src.errors == 1  # one bad file, met on every pass: counted once
    (tmp_path / "a.png").unlink()
    with pytest.raises(SourceError, match="image .*b.jpg cannot be decoded"):
        make_source("dir:%s" % tmp_path).read()
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"none of the 2 images in .* can be decoded \(b.jpg, c.png\)"):
        make_source("dir:%s" % tmp_path).open()  # before the run starts


def test_missing_camera_gives_a_clear_error():
    src = make_source("v4l2:63")
    with pytest.raises(SourceError, match="cannot open camera /dev/video63"):
        src.open()


def test_picamera2_without_the_library_says_what_to_install():
    src = make_source("picamera2:640x480")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="python3-picamera2"):
            src.open()
    else:  # a Raspberry Pi: the real camera must open or say why not
        try:
            src.open()
        except SourceError as exc:
            assert "camera" in str(exc)
        finally:
            src.close()


def test_image_source_decodes_each_file_once(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from edgepipe.actors.sources import sources

    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8, 3), 7, np.uint8))
    decoded = []
    real = sources.cv2.imread
    monkeypatch.setattr(sources.cv2, "imread", lambda *a: decoded.append(a[0]) or real(*a))
    src = make_source("dir:%s" % tmp_path)
    frames = [src.read()[0] for _ in range(5)]
    assert decoded == [str(tmp_path / "a.png")]
    assert all(f is frames[0] for f in frames) and not frames[0].flags.writeable  # shared, so read-only
    tiny = sources.ImageSource("dir", str(tmp_path), cache_mb=0)  # nothing fits: decoded on every read
    decoded.clear()
    tiny.read(), tiny.read()
    assert len(decoded) == 2
