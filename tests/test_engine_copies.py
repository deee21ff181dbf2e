"""EngineHost on the CPU: one interpreter per thread, so the frames in flight are detected on as many cores."""
from __future__ import annotations

import asyncio
import threading

import cv2
import pytest
from helpers import ASSETS, run_async

from edgepipe.actors.runtime.engines import EngineHost, EngineSettings
from edgepipe.models.registry import face_detector
from edgepipe.models.store.manifest import get

MODELS = ASSETS / "models"
pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason="test assets not found at %s" % ASSETS)


def host(kind: str, model: str = "blazeface-full") -> EngineHost:
    spec = get(model)
    settings = EngineSettings.of(kind, model_paths=[str(MODELS)])
    return EngineHost(settings, spec, "detector", lambda e: face_detector(spec, e), threads=2, copies_on_cpu=True)


def test_cpu_host_lends_each_call_its_own_interpreter_and_they_detect_alike():
    image = cv2.resize(cv2.imread(str(ASSETS / "images" / "seed_image00.png")), (640, 480))
    both_in = threading.Barrier(2, timeout=30)  # each call holds its copy until the other holds one too

    def call(h: EngineHost):
        with h.lend() as model:
            both_in.wait()
            return id(model.engine), [f.as_list() for f in model.detect(image)]

    async def main():
        h = host("cpu")
        try:
            await h.load()
            assert len(h.engines) == 2 and h.engines[0] is not h.engines[1]
            (e1, faces1), (e2, faces2) = await asyncio.gather(h.call(call, h), h.call(call, h))
            return e1, e2, faces1, faces2
        finally:
            h.close()
    e1, e2, faces1, faces2 = run_async(main())
    assert e1 != e2  # two calls at once ran on two interpreters
    assert len(faces1) == 4 and faces1 == faces2


def test_accelerator_host_shares_one_engine_between_its_threads():
    async def main():
        h = host("fake", "coral-ssd-face")  # a detector with an Edge TPU build
        try:
            await h.load()
            with h.lend() as a, h.lend() as b:  # a device runs one invoke at a time: one engine feeds it
                return len(h.engines), a is b is h.model
        finally:
            h.close()
    assert run_async(main()) == (1, True)
