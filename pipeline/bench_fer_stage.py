"""``bench pipeline --engine cpu``'s FER stage alone: the pipeline's ``FerWorker`` actors fed real face
crops over ``inproc://``, with no capture or detector in the way.

Python 3.9 compatible.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

import cv2
import numpy as np

from actors.fer import FerWorker
from actors.tasks import TaskGroup
from bus.messages import FaceJob
from models import manifest
from models.registry import expression_model, face_detector

from .build import engine_settings, make_bus
from .config import Config
from .loop import event_loop_run


def real_crops(cfg: Config, path: str) -> List[Any]:
    """The FER model's inputs for every face the profile's CPU detector finds in the image at ``path``."""
    names = cfg.profile().models("cpu")
    settings = engine_settings(cfg, "cpu")
    det_spec, fer_spec = manifest.get(names.detector), manifest.get(names.fer)
    det_engine, fer_engine = settings.build(det_spec), settings.build(fer_spec)
    try:
        det_engine.load()
        fer_engine.load()
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        detector = face_detector(det_spec, det_engine, score_threshold=cfg.detector.score_threshold,
                                 max_faces=cfg.detector.max_faces)
        fer = expression_model(fer_spec, fer_engine)
        return [fer.prepare(img, f) for f in detector.detect(img)]
    finally:
        det_engine.close()
        fer_engine.close()


async def _fer_stage(cfg: Config, crops: List[Any], workers: int, frames: int) -> Dict[str, Any]:
    bus = make_bus(cfg)
    tag = "inproc://benchcpu-ferstage-w%d" % workers
    jobs = bus.push(tag + "-jobs", hwm=cfg.fer.hwm, name="bench.jobs", bind=True)
    results = bus.pull(tag + "-expr", hwm=max(64, frames), name="bench.expr", bind=True)
    spec = manifest.get(cfg.profile().models("cpu").fer)
    settings = engine_settings(cfg, "cpu")
    pool = [FerWorker("fer-%d" % i, bus, facejobs_endpoint=tag + "-jobs", expressions_endpoint=tag + "-expr",
                      hwm=cfg.fer.hwm, engine=settings, model=spec, invoke_timeout_ms=cfg.fer.invoke_timeout_ms,
                      depth=cfg.fer.depth) for i in range(workers)]
    stack = np.stack(crops)  # the faces of one frame go out as one job, as the detector sends them
    started: List[Any] = []
    per_worker: Dict[str, int] = {}
    faces = errors = 0
    try:
        for w in pool:
            await w.start()
            started.append(w)
        t0 = time.monotonic()

        async def feed() -> None:
            for k in range(frames):
                await jobs.send(FaceJob(k, 0, len(crops), t0, stack))

        async with TaskGroup() as tg:
            tg.start_soon(feed(), name="bench.feed")
            for _ in range(frames):
                e = await results.recv()
                per_worker[e.worker] = per_worker.get(e.worker, 0) + e.count
                faces += e.count
                errors += bool(e.error)
        elapsed = time.monotonic() - t0
    finally:
        for w in reversed(started):
            await w.stop()
        jobs.close()
        results.close()
        leaked = bus.open_channels()
        bus.close()
    return {"faces": faces, "frames": frames, "duration_s": round(elapsed, 3), "fps": round(frames / elapsed, 2),
            "faces_per_s": round(faces / elapsed, 1), "faces_per_frame": float(len(crops)),
            "per_worker": per_worker, "errors": errors, "leaked_sockets": leaked}


def run_fer_stage(cfg: Config, crops: List[Any], workers: int, frames: int) -> Dict[str, Any]:
    """FER workers alone (the pipeline's FerWorker actors, PUSH/PULL over inproc://) on real face crops:
    ``frames`` jobs of every crop (one job per frame)."""
    if not crops:
        raise ValueError("no faces found for the FER stage")
    return event_loop_run(_fer_stage(cfg, crops, workers, frames))
