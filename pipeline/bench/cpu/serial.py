"""``bench pipeline``'s serial reference loop: the reference project's loop, in one thread, for case (d).

Read the source, encode (``cfg.encoder.format``), decode, detect, crop and run
FER on each face in turn, with the engines the pipeline would build; no
pipeline, no sockets. (``pipeline.serial_loop`` is its two-process form, which
``bench pipeline --engine cpu`` runs.)
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple

import cv2

from edgepipe.actors.frame_stage import decode_image
from edgepipe.actors.runtime.stats import percentile
from edgepipe.actors.sources.source_factory import make_source
from edgepipe.bus.messages import EncodedFrame
from edgepipe.models.store import manifest
from edgepipe.pipeline.bench.cpu.serial_loop import load_models
from edgepipe.pipeline.build import engine_settings
from edgepipe.pipeline.config.loading import Config, ConfigError

STAGES = ("read", "encode", "decode", "detect", "fer", "backend")


def _ms(values: Sequence[float], q: float) -> float:
    return round(percentile(values, q), 3)


class _Timings:
    """Per-stage times (ms), end-to-end latency and faces of the timed frames."""

    def __init__(self) -> None:
        self.stages: Dict[str, List[float]] = {k: [] for k in STAGES}
        self.latency: List[float] = []
        self.n_faces = 0

    def clear(self) -> None:
        for v in self.stages.values():
            v.clear()
        self.latency.clear()
        self.n_faces = 0

    def add(self, t0: float, t1: float, t2: float, t3: float, t4: float, t5: float, faces: int) -> None:
        for key, a, b in (("read", t0, t1), ("encode", t1, t2), ("decode", t2, t3), ("detect", t3, t4),
                          ("fer", t4, t5), ("backend", t2, t5)):
            self.stages[key].append((b - a) * 1000.0)
        self.latency.append((t5 - t1) * 1000.0)
        self.n_faces += faces


def _encode(image: Any, fmt: str, params: List[int]) -> Any:
    """The encoder stage: JPEG bytes, or the raw pixels."""
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, params)
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()
    return image


def _loop(cfg: Config, source: Any, detector: Any, fer: Any, frames: int, warmup: int,
          t: _Timings) -> Tuple[int, float]:
    """Run ``warmup`` untimed then ``frames`` timed frames; return (frames done, elapsed seconds)."""
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.encoder.jpeg_quality)]
    done = 0
    t_start = time.monotonic()
    for i in range(warmup + frames):
        if i == warmup:
            t_start = time.monotonic()
            t.clear()
        t0 = time.monotonic()
        item = source.read()
        if item is None:
            break
        image, truth = item
        t1 = time.monotonic()  # the pipeline's capture time stamp is taken here too
        h, w = image.shape[:2]
        payload = _encode(image, cfg.encoder.format, params)
        t2 = time.monotonic()
        img = decode_image(EncodedFrame(i, t1, cfg.encoder.format, w, h, payload))
        t3 = time.monotonic()
        faces = detector.detect(img)
        crops = [fer.prepare(img, f) for f in faces]
        t4 = time.monotonic()
        for crop in crops:  # one face after the other, as the reference does
            fer.classify(crop)
        t5 = time.monotonic()
        t.add(t0, t1, t2, t3, t4, t5, len(faces))
        if i >= warmup:
            done += 1
    return done, time.monotonic() - t_start


def _summary(done: int, elapsed: float, t: _Timings, det_name: str, fer_name: str) -> Dict[str, Any]:
    """The runner's summary keys, filled from the serial loop's timings."""
    backend_ms = sum(t.stages["backend"])
    return {
        "frames_captured": done,
        "frames_completed": done,
        "frames_partial": 0,
        "dropped_total": 0,
        "dropped_by_reason": {},
        "unaccounted": 0,
        "duration_s": round(elapsed, 3),
        "fps": round(done / elapsed, 2) if elapsed > 0 else 0.0,
        # the reference's definition: from a received encoded frame to the last FER result
        "backend_fps": round(done * 1000.0 / backend_ms, 2) if backend_ms > 0 else 0.0,
        "latency_ms": {"p50": _ms(t.latency, 50), "p99": _ms(t.latency, 99),
                       "max": round(max(t.latency), 3) if t.latency else 0.0},
        "faces": {"faces": t.n_faces, "frames": done},
        "stages_ms_p50": {k: _ms(v, 50) for k, v in t.stages.items()},
        "models": {"detector": det_name, "fer": fer_name},
    }


def run_serial_case(cfg: Config, frames: int, warmup: int) -> Dict[str, Any]:
    """The reference project's loop: every stage of one frame, one after the other, in one thread.

    Read the source, encode (``cfg.encoder.format``), decode, detect, crop and
    run FER on each face in turn, with the engines the pipeline would build.
    ``warmup`` frames go through the loop first and are not timed.
    """
    names = cfg.profile().models(cfg.pipeline.engine)
    if not (names.detector and names.fer):
        raise ConfigError("the serial baseline needs a profile with a detector and a FER model (fd+fer64, fd+fer112)")
    settings = engine_settings(cfg)
    det_spec, fer_spec = manifest.get(names.detector), manifest.get(names.fer)
    engines: List[Any] = []
    source = None
    timings = _Timings()
    try:
        detector, fer = load_models(settings, det_spec, fer_spec, engines, cfg.detector.score_threshold,
                                    cfg.detector.max_faces)
        source = make_source(cfg.pipeline.source, loop=cfg.capture.loop)
        source.open()
        done, elapsed = _loop(cfg, source, detector, fer, frames, warmup, timings)
    finally:
        for e in engines:
            e.close()
        if source is not None:
            source.close()
    return _summary(done, elapsed, timings, det_spec.name, fer_spec.name)
