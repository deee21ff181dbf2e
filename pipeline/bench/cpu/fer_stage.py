"""``bench pipeline --engine cpu``'s FER stage alone: the pipeline's ``FerWorker`` actors fed real face
crops by a PUSH socket, with no capture or detector in the way.

Two variants: every worker in this process (``inproc://``; the workers' engine threads and the feeder share
one interpreter), and every worker in a child process of its own, started as ``fer.processes = true`` starts
them (the process groups: spawn, ready over the control link, final reports, ``ipc://`` endpoints in a run
folder), fed over ``ipc://``. Both warm up with two jobs per worker before the clock starts.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List

import cv2
import msgspec
import numpy as np

from edgepipe.actors.fer import FerWorker
from edgepipe.actors.runtime.context import Context, RoleModels
from edgepipe.actors.runtime.tasks import task_group
from edgepipe.bus.control import ControlServer
from edgepipe.bus.messages import FaceJob
from edgepipe.bus.rundir import RunDir
from edgepipe.models.registry import expression_model, face_detector
from edgepipe.models.store import manifest
from edgepipe.pipeline.build import engine_settings, make_bus
from edgepipe.pipeline.config.loading import Config
from edgepipe.pipeline.loop import event_loop_run
from edgepipe.pipeline.processes.groups import with_fer_processes
from edgepipe.pipeline.processes.supervisor import GroupProcess, handle_control, wait_ready, write_config

WARM_JOBS_PER_WORKER = 2


def cpu_depth(cfg: Config, settings: Any) -> int:
    """A worker's jobs in flight as ``FerWorker`` sets it: one on the CPU."""
    return cfg.fer.depth if settings.kind != "cpu" else 1


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
    endpoints = {"facejobs": tag + "-jobs", "expressions": tag + "-expr"}
    pool = [FerWorker("fer-%d" % i, bus, cfg.fer, endpoints, Context(), RoleModels(settings, spec))
            for i in range(workers)]
    started: List[Any] = []
    try:
        for w in pool:
            await w.start()
            started.append(w)
        out = await _measure(jobs, results, crops, workers, frames)
        out["depth"] = pool[0].depth
    finally:
        for w in reversed(started):
            await w.stop()
        jobs.close()
        results.close()
        leaked = bus.open_channels()
        bus.close()
    out["leaked_sockets"] = leaked
    return out


async def _measure(jobs: Any, results: Any, crops: List[Any], workers: int, frames: int) -> Dict[str, Any]:
    """Warm up, then send ``frames`` jobs (every crop, one job per frame) and wait for every expression."""
    stack = np.stack(crops)  # the faces of one frame go out as one job, as the detector sends them
    warm = WARM_JOBS_PER_WORKER * workers
    for k in range(warm):
        await jobs.send(FaceJob(frames + k, 0, len(crops), time.monotonic(), stack))  # ids after the measured
    for _ in range(warm):
        await results.recv()
    per_worker: Dict[str, int] = {}
    faces = errors = 0
    load = os.getloadavg()[0]
    cpu0 = time.process_time()  # this process: the feeder, and the workers when they run in it
    t0 = time.monotonic()

    async def feed() -> None:
        for k in range(frames):
            await jobs.send(FaceJob(k, 0, len(crops), t0, stack))

    async with task_group() as tg:
        tg.start_soon(feed, name="bench.feed")
        for _ in range(frames):
            e = await results.recv()
            per_worker[e.worker] = per_worker.get(e.worker, 0) + e.count
            faces += e.count
            errors += bool(e.error)
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    return {"this_process_cpu_pct": round(100.0 * cpu / elapsed, 1), "load_avg_1m": round(load, 2),
            "faces": faces, "frames": frames, "duration_s": round(elapsed, 3), "fps": round(frames / elapsed, 2),
            "faces_per_s": round(faces / elapsed, 1), "faces_per_frame": float(len(crops)),
            "per_worker": per_worker, "errors": errors, "warmup_jobs": warm}


async def _fer_stage_processes(cfg: Config, crops: List[Any], workers: int, frames: int) -> Dict[str, Any]:
    """The same stage with every FerWorker in a child process of its own (``fer.processes = true``)."""
    rundir = RunDir.create()
    cfg = msgspec.structs.replace(cfg, groups={}, endpoints=msgspec.structs.replace(cfg.endpoints))
    cfg.pipeline.engine = cfg.placement.fer = "cpu"
    cfg.fer.workers, cfg.fer.processes = workers, True
    for link in ("facejobs", "expressions", "control", "metrics_in"):
        setattr(cfg.endpoints, link, "ipc://%s/%s" % (rundir.path, link))
    cfg = with_fer_processes(cfg)
    bus = make_bus(cfg)
    chans: List[Any] = []
    groups: List[GroupProcess] = []
    control = None
    try:
        control = ControlServer(bus, cfg.endpoints.control)
        jobs = bus.push(cfg.endpoints.facejobs, hwm=cfg.fer.hwm, name="bench.jobs", bind=True)
        chans.append(jobs)
        results = bus.pull(cfg.endpoints.expressions, hwm=max(64, frames), name="bench.expr", bind=True)
        chans.append(results)
        # the workers' periodic metrics land here unread (sent without waiting: dropped when full)
        chans.append(bus.pull(cfg.endpoints.metrics_in, hwm=1000, name="bench.metrics", bind=True))
        path = write_config(cfg, rundir.path)
        groups = [GroupProcess(name, cfg, path) for name in cfg.groups]
        for g in groups:
            await g.spawn()
        await wait_ready(groups, control, [])
        out = await _measure(jobs, results, crops, workers, frames)
    finally:
        try:
            for g in groups:
                await g.stop()
        finally:
            by_name = {g.name: g for g in groups}
            while control is not None:
                msg = control.recv_nowait()
                if msg is None:
                    break
                handle_control(msg, by_name)
            for ch in chans:
                ch.close()
            leaked = [x for x in bus.open_channels() if not x.startswith("runner.control")]
            if control is not None:
                control.close()
            bus.close()
            rundir.remove()
    out["processes"] = {g.name: {"pid": g.ready.pid if g.ready else None, "exit_code": g.proc.returncode
                                 if g.proc is not None else None, "final_report": sorted(g.final)} for g in groups}
    out["leaked_sockets"] = leaked
    out["depth"] = cpu_depth(cfg, engine_settings(cfg, "cpu"))  # as pipeline.build makes the workers
    return out


def run_fer_stage(cfg: Config, crops: List[Any], workers: int, frames: int) -> Dict[str, Any]:
    """FER workers alone (the pipeline's FerWorker actors, PUSH/PULL over inproc://) on real face crops:
    ``frames`` jobs of every crop (one job per frame)."""
    if not crops:
        raise ValueError("no faces found for the FER stage")
    return event_loop_run(_fer_stage(cfg, crops, workers, frames))


def run_fer_stage_processes(cfg: Config, crops: List[Any], workers: int, frames: int) -> Dict[str, Any]:
    """FER workers alone, each in a child process of its own (``fer.processes = true``), PUSH/PULL over
    ``ipc://``, on real face crops: ``frames`` jobs of every crop (one job per frame)."""
    if not crops:
        raise ValueError("no faces found for the FER stage")
    return event_loop_run(_fer_stage_processes(cfg, crops, workers, frames))
