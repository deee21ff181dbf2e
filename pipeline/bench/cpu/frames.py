"""``bench pipeline --engine cpu``'s frames: the real photos it needs and the frame sets made from them
(derived images go to a temporary folder, never into the repository).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from edgepipe.actors.sources.source_factory import make_source
from edgepipe.pipeline.bench.common import REPO
from edgepipe.pipeline.bench.cpu.serial_loop import frame_digest
from edgepipe.pipeline.config.loading import ConfigError

DEFAULT_IMAGES = os.path.join("..", "shared", "assets", "images")
ENV_ASSETS = "EDGEPIPE_ASSETS"
SEED = "seed_image00.png"
MULTI = "multi_face.jpg"
FACES5 = ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg")
TILE = 240


def default_images_dir() -> str:
    env = os.environ.get(ENV_ASSETS, "").strip()
    if env:
        return os.path.join(env, "images")
    return os.path.normpath(os.path.join(REPO, DEFAULT_IMAGES))


def check_images_dir(path: Optional[str]) -> str:
    """The images folder, or a ConfigError that says what is missing and how to point at it."""
    folder = os.path.abspath(path or default_images_dir())
    need = (SEED, MULTI) + FACES5
    if not os.path.isdir(folder):
        raise ConfigError("bench pipeline --engine cpu needs real photos with faces: %s does not exist; pass "
                          "--images DIR (the shared assets' images folder, ../shared/assets/images beside the "
                          "repository) or set $%s" % (folder, ENV_ASSETS))
    missing = [n for n in need if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise ConfigError("--images %s: missing %s (expected the shared assets' images folder)"
                          % (folder, ", ".join(missing)))
    return folder


@dataclasses.dataclass
class FrameSet:
    name: str
    path: str  # the image file the source loops
    what: str
    size: Tuple[int, int]  # width, height
    digest: str  # of the frame the source decodes
    expected_faces: int  # faces in the photo(s)


def prepare_frames(images: str, tmp: str) -> Dict[str, FrameSet]:
    """The benchmark's frames: derived images go to ``tmp`` (never the repository)."""
    seed = cv2.imread(os.path.join(images, SEED), cv2.IMREAD_COLOR)
    seed640 = cv2.resize(seed, (640, 480), interpolation=cv2.INTER_AREA)
    seed_path = os.path.join(tmp, "seed_image00_640x480.png")
    tiles = [cv2.resize(cv2.imread(os.path.join(images, f), cv2.IMREAD_COLOR), (TILE, TILE),
                        interpolation=cv2.INTER_AREA) for f in FACES5]
    tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[0:3]), np.hstack(tiles[3:6])])
    grid_path = os.path.join(tmp, "faces5_720x480.png")
    for path, img in ((seed_path, seed640), (grid_path, grid)):
        if not cv2.imwrite(path, img):
            raise OSError("cannot write %s" % path)
    out = {}
    for name, path, what, n in (
            ("seed640", seed_path, "%s resized to 640x480 (PNG)" % SEED, 4),
            ("multi_face", os.path.join(images, MULTI), MULTI, 5),
            ("faces5", grid_path, "5 labelled faces in a 3x2 grid of %dpx tiles (PNG): %s" % (TILE, ", ".join(FACES5)),
             5)):
        src = make_source(path, loop=True)  # what the pipeline's capture and the serial front end will read
        src.open()
        try:
            item = src.read()
        finally:
            src.close()
        if item is None:
            raise ConfigError("cannot read %s" % path)
        img = item[0]
        out[name] = FrameSet(name, path, what, (int(img.shape[1]), int(img.shape[0])), frame_digest(img), n)
    return out
