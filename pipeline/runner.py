"""Run the whole pipeline in one process (one event loop, ``inproc://`` by default).

Start-up order: metrics hub, sinks, aggregator, FER pool, detector or
classifier, encoder, capture. ``start()`` of each returns when it is ready;
then every publisher waits until its subscribers are attached (ZeroMQ's slow
joiner), and only then does the source start. The run ends when the source
ends, ``--frames`` or ``--duration`` is reached, or ``stop`` is set (Ctrl-C);
the pipeline then drains (every frame already captured comes out completed,
partial or counted as dropped) and every actor is stopped.

Python 3.9 compatible.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from actors.aggregator import Aggregator
from actors.base import Actor
from actors.capture import Capture
from actors.classifier import Classifier
from actors.detector import Detector
from actors.display import Display, make_sink
from actors.encoder import Encoder
from actors.engines import EngineSettings
from actors.fer import FerWorker
from actors.metrics_hub import MetricsHub
from actors.recorder import Recorder
from actors.sources import is_live
from actors.stats import percentile
from bus.sockets import Bus
from models import manifest
from models.engine import EngineFaults

from .config import Config

log = logging.getLogger("edgepipe.runner")


@dataclass
class RunOptions:
    frames: Optional[int] = None
    duration_s: Optional[float] = None
    results_path: Optional[str] = None


@dataclass
class Pipeline:
    cfg: Config
    bus: Bus
    hub: MetricsHub
    capture: Capture
    encoder: Encoder
    inference: Actor  # detector or classifier
    fer: List[FerWorker]
    aggregator: Aggregator
    recorder: Recorder
    display: Optional[Display]
    models: Dict[str, str] = field(default_factory=dict)

    @property
    def actors(self) -> List[Actor]:
        """In start-up order (consumers first)."""
        out: List[Actor] = [self.hub, self.recorder]
        if self.display is not None:
            out.append(self.display)
        out += [self.aggregator] + list(self.fer) + [self.inference, self.encoder, self.capture]
        return out


def engine_settings(cfg: Config) -> EngineSettings:
    e = cfg.engine
    faults = {name: EngineFaults(f.raise_every, f.hang_after, f.slow_every, f.slow_ms)
              for name, f in e.fake.faults.items()}
    return EngineSettings(kind=cfg.pipeline.engine, latency_ms=dict(e.fake.latency_ms), faults=faults,
                          threads=e.cpu.threads, device=e.edgetpu.device, fallback=e.edgetpu.fallback,
                          model_paths=list(cfg.models.paths))


def build(cfg: Config, bus: Bus, opts: RunOptions) -> Pipeline:
    ep = cfg.endpoints
    profile = cfg.profile()
    names = profile.models(cfg.pipeline.engine)
    engine = engine_settings(cfg)
    mkw = {"metrics_endpoint": ep.metrics_in, "metrics_interval": cfg.bus.metrics_interval_s}
    hub = MetricsHub("metrics", bus, inbound_endpoint=ep.metrics_in, public_endpoint=ep.metrics)
    models = {}
    fer_spec = manifest.get(names.fer) if names.fer and names.detector else None
    if names.classifier:
        spec = manifest.get(names.classifier)
        models["classifier"] = spec.name
        inference: Actor = Classifier("classifier", bus, encoded_endpoint=ep.encoded, detections_endpoint=ep.detections,
                                      hwm=cfg.detector.hwm, engine=engine, model=spec, **mkw)
    else:
        spec = manifest.get(names.detector)
        models["detector"] = spec.name
        inference = Detector("detector", bus, encoded_endpoint=ep.encoded, detections_endpoint=ep.detections,
                             facejobs_endpoint=ep.facejobs, hwm=cfg.detector.hwm, jobs_hwm=cfg.fer.hwm,
                             engine=engine, model=spec, fer_model=fer_spec,
                             score_threshold=cfg.detector.score_threshold, max_faces=cfg.detector.max_faces,
                             freshest=cfg.detector.freshest and is_live(cfg.pipeline.source), **mkw)
    fer = []
    if fer_spec is not None:
        models["fer"] = fer_spec.name
        fer = [FerWorker("fer-%d" % i, bus, facejobs_endpoint=ep.facejobs, expressions_endpoint=ep.expressions,
                         hwm=cfg.fer.hwm, engine=engine, model=fer_spec,
                         invoke_timeout_ms=cfg.fer.invoke_timeout_ms, **mkw)
               for i in range(cfg.fer.workers)]
    aggregator = Aggregator("aggregator", bus, detections_endpoint=ep.detections, expressions_endpoint=ep.expressions,
                            results_endpoint=ep.results, hwm=cfg.fer.hwm, deadline_ms=cfg.aggregator.deadline_ms,
                            ordered=cfg.aggregator.ordered, **mkw)
    recorder = Recorder("recorder", bus, results_endpoint=ep.results, results_path=opts.results_path, **mkw)
    sink = make_sink(cfg.pipeline.display, cfg.display.fps)
    display = None
    if sink is not None:
        display = Display("display", bus, sink=sink, frames_endpoint=ep.frames, results_endpoint=ep.results,
                          hwm=cfg.display.hwm, frame_buffer=cfg.display.frame_buffer, **mkw)
    encoder = Encoder("encoder", bus, frames_endpoint=ep.frames, encoded_endpoint=ep.encoded, hwm=cfg.encoder.hwm,
                      format=cfg.encoder.format, jpeg_quality=cfg.encoder.jpeg_quality, **mkw)
    capture = Capture("capture", bus, source=cfg.pipeline.source, frames_endpoint=ep.frames, hwm=cfg.capture.hwm,
                      max_frames=opts.frames, duration_s=opts.duration_s, loop=cfg.capture.loop,
                      results_endpoint=ep.results, max_in_flight=cfg.capture.max_in_flight, **mkw)
    return Pipeline(cfg, bus, hub, capture, encoder, inference, fer, aggregator, recorder, display, models)


async def _first_failure(actors: List[Actor], until: "asyncio.Future[Any]") -> None:
    """Wait for ``until``; raise if an actor dies first."""
    tasks = [a.task for a in actors if a.task is not None]
    while not until.done():
        done, _ = await asyncio.wait(tasks + [until], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is until:
                continue
            name = next(a.name for a in actors if a.task is t)
            if t.cancelled():
                raise RuntimeError("actor %s was cancelled" % name)
            exc = t.exception()
            raise RuntimeError("actor %s stopped: %s" % (name, exc or "returned early"))


async def run(cfg: Config, opts: RunOptions, stop: Optional[asyncio.Event] = None,
              on_ready: Optional[Any] = None) -> Dict[str, Any]:
    """Run the pipeline to its end; return the summary (see ``summarize``)."""
    bus = Bus(max_header=cfg.bus.max_header_kb * 1024, max_image=cfg.bus.max_image_mb << 20)
    p = None
    started: List[Actor] = []
    t_go = time.monotonic()
    drained = False
    interrupted = False
    leaked: List[str] = []
    try:
        p = build(cfg, bus, opts)
        for actor in p.actors:
            await actor.start()
            started.append(actor)
        # every publisher waits for its subscribers before the first frame
        waits = [p.capture.pub.wait_subscribers(1 + (p.display is not None)),
                 p.encoder.pub.wait_subscribers(1),
                 p.inference.pub.wait_subscribers(1),
                 p.aggregator.pub.wait_subscribers(1 + (p.display is not None) + p.capture.lossless)]
        await _first_failure(started, asyncio.ensure_future(asyncio.gather(*waits)))
        log.info("pipeline ready: profile %s, engine %s, source %s, models %s", cfg.pipeline.profile,
                 cfg.pipeline.engine, cfg.pipeline.source, p.models)
        if on_ready is not None:
            on_ready(p)
        t_go = time.monotonic()
        p.capture.go()
        assert p.capture.done is not None and p.recorder.drained is not None
        captured = asyncio.ensure_future(p.capture.done.wait())
        stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            ends = [captured] + ([stopped] if stopped else [])
            await _first_failure(started, asyncio.ensure_future(
                asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)))
        finally:
            if stopped is not None and stopped.done():
                interrupted = True
            for f in (captured, stopped):
                if f is not None:
                    f.cancel()
        if interrupted:
            p.capture.finish()  # no new frames; what is in flight drains below
        timeout = cfg.pipeline.drain_timeout_s if not interrupted else min(1.5, cfg.pipeline.drain_timeout_s)
        try:
            await asyncio.wait_for(_first_failure(started, asyncio.ensure_future(p.recorder.drained.wait())), timeout)
            drained = True
        except asyncio.TimeoutError:
            log.warning("pipeline did not drain within %.1f s; frames still in flight are reported as unaccounted",
                        timeout)
    finally:
        for actor in reversed(started):
            try:
                await actor.stop()
            except Exception:  # report and go on stopping the others
                log.exception("stopping %s failed", actor.name)
        leaked = bus.open_channels()
        if leaked:
            log.error("sockets left open by actors: %s", leaked)
        bus.close()
    summary = summarize(p, t_go, drained, interrupted)
    summary["leaked_sockets"] = leaked
    return summary


def summarize(p: Pipeline, t_go: float, drained: bool, interrupted: bool) -> Dict[str, Any]:
    cfg = p.cfg
    snaps = {a.name: a.snapshot(final=True) for a in p.actors if a is not p.hub}
    agg = p.aggregator.stats.counters
    captured = p.capture.stats.counters.get("out", 0)
    completed = agg.get("completed", 0)
    partial = agg.get("partial", 0)
    dropped = {name: m.counters.get("dropped", 0) for name, m in snaps.items()
               if name not in ("recorder", "display")}
    drops_by_reason: Dict[str, int] = {}
    for m in snaps.values():
        for k, v in m.counters.items():
            if k.startswith("dropped."):
                drops_by_reason[k[8:]] = drops_by_reason.get(k[8:], 0) + v
    total_dropped = sum(dropped.values())
    rec = p.recorder
    elapsed = (rec.last_t - t_go) if rec.last_t is not None else 0.0
    lat = p.aggregator.stats.all_latency_ms
    per_actor = {}
    for name, m in snaps.items():
        per_actor[name] = {
            "in": m.counters.get("in", 0),
            "out": m.counters.get("out", 0),
            "fps": round(m.counters.get("out", 0) / elapsed, 2) if elapsed > 0 else 0.0,
            "busy_ms_p50": round(m.gauges.get("busy_ms_p50", 0.0), 3),
            "busy_ms_p99": round(m.gauges.get("busy_ms_p99", 0.0), 3),
            "dropped": m.counters.get("dropped", 0),
            "rejected": m.counters.get("rejected", 0),
            "counters": {k: v for k, v in m.counters.items() if k not in ("in", "out")},
        }
    return {
        "profile": cfg.pipeline.profile,
        "engine": cfg.pipeline.engine,
        "source": cfg.pipeline.source,
        "models": p.models,
        "encoder": cfg.encoder.format,
        "fer_workers": len(p.fer),
        "python": sys.version.split()[0],
        "pid": os.getpid(),
        "interrupted": interrupted,
        "drained": drained,
        "frames_captured": captured,
        "frames_completed": completed,
        "frames_partial": partial,
        "frames_out_of_order": agg.get("out_of_order", 0),
        "dropped": dropped,
        "dropped_total": total_dropped,
        "dropped_by_reason": drops_by_reason,
        "unaccounted": captured - completed - partial - total_dropped,
        "faces": dict(rec.totals),
        "duration_s": round(elapsed, 3),
        "fps": round((completed + partial) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3),
                       "max": round(max(lat), 3) if lat else 0.0},
        "actors": per_actor,
    }
