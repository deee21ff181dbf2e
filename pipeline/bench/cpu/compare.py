"""``python run.py bench pipeline --engine cpu``: the pipeline against the serial loop, on real faces.

Real CPU models (the profile's CPU models: BlazeFace full range + FER64 for
``fd+fer64``) on real photographs from the shared assets (``--images``,
default ``../shared/assets/images`` beside the repository, or
``$EDGEPIPE_ASSETS/images``):

- ``seed640``: ``seed_image00.png`` resized to 640x480 (4 faces), written as a
  PNG to a temporary folder (never into the repository);
- ``multi_face``: ``multi_face.jpg`` as it is (1000x667, 5 faces);
- ``faces5``: a 720x480 frame of five labelled face photos (``0-f1-su-ph.jpg``,
  ``0-f15-hao-ph.jpg``, ``15-f13-anc-ph.jpg``, ``45-m7-di-ph.jpg``,
  ``single_face.jpg``) in a 3x2 grid, for the FER pool comparison.

For each frame set, in the same run and round-robin:

(1) the pipeline through the real runner (``pipeline.runner.run``) with an
    image-file source that loops the one image, every actor in this process
    (``inproc://``), the config's FER pool and credit window
    (``capture.max_in_flight``);
(2) the reference project's serial two-process loop (``pipeline.serial_loop``):
    the front end reads the same source the same way (so both pay what a
    read of it costs), sends the pixels over one ZeroMQ hop (REQ/REP over
    ``ipc://``) and waits for the result before it reads the next frame (one
    frame in flight); the back end detects and runs FER on each face in turn,
    with the same models and CPU thread count;
(3) the same serial loop with the frame kept in memory: the front end reads
    the image once and sends it every time, as a camera hands over a decoded
    frame. An image source that decodes its file on every read (as
    ``actors/sources.py`` did before it kept decoded files) makes (2) pay that
    decode where (3) does not; with a source that keeps the frame, (2) and (3)
    should agree.

The FER pool is also measured alone: the pipeline's ``FerWorker`` actors (1
and 2, the config's depth and queue sizes) fed the real face crops of
``faces5`` by a PUSH socket, one job per frame as the detector sends them,
with no capture or detector in the way; and again with every worker in a
child process of its own, started as ``fer.processes = true`` starts them
(the process groups) and fed over ``ipc://``. The pipeline on ``faces5`` also
runs with ``fer.processes = true`` (1 and 2 worker processes).

Reported: FPS of each, the ratios pipeline / serial (the median of the
per-round ratios), faces found per frame by each, the CPU time per frame of
each (core-ms: every process of each side over its timed frames, warm-up
excluded on both; ``cpu_cost.py``) and its ratio; and FER pool 2 vs 1
workers on ``faces5`` as faces per second, in this process and in processes. No number here is a test
threshold; the JSON (``bench_pipeline_cpu.json``) has every run.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgepipe.pipeline.bench.common import machine_info, ratio, write_report
from edgepipe.pipeline.bench.cpu.cpu_cost import CpuMeter
from edgepipe.pipeline.bench.cpu.fer_stage import real_crops, run_fer_stage, run_fer_stage_processes
from edgepipe.pipeline.bench.cpu.frames import check_images_dir, prepare_frames
from edgepipe.pipeline.bench.cpu.render import render
from edgepipe.pipeline.bench.cpu.serial_loop import SerialLoop
from edgepipe.pipeline.config.loading import Config, ConfigError, apply_overrides, endpoint_names, load
from edgepipe.pipeline.loop import event_loop_run
from edgepipe.pipeline.runner import RunOptions, run

OUT_NAME = "bench_pipeline_cpu.json"
COMPARE_SETS = ("seed640", "multi_face")  # pipeline vs serial
POOL_SET = "faces5"  # FER pool 2 vs 1
POOL_WORKERS = (1, 2)


# ---------------------------------------------------------------- one measurement of each kind

def pipeline_config(base: Config, source: str, workers: Optional[int], tag: str) -> Config:
    """The config's pipeline on the CPU engine with an image source, every endpoint in-process (no TCP port)."""
    cfg = base
    cfg.pipeline.source = source
    cfg.pipeline.display = "none"
    cfg.groups = {}
    cfg.placement.detector = cfg.placement.fer = cfg.placement.classifier = ""
    if workers:
        cfg.fer.workers = workers
    for name in endpoint_names():
        setattr(cfg.endpoints, name, "inproc://benchcpu-%s-%s" % (tag, name))
    return cfg


def run_pipeline(cfg: Config, frames: int, warmup: int = 0, threads: bool = False,
                 stdlib_loop: bool = False) -> Dict[str, Any]:
    """One in-process run of ``frames`` frames; its figures, with the CPU time per frame of every process of
    the run after its first ``warmup`` results (``cpu_cost.CpuMeter``; ``threads``: and of each thread).
    ``stdlib_loop``: on asyncio's own event loop instead of uvloop's (as ``run.py`` without uvloop)."""
    meter: List[CpuMeter] = []
    recorder: List[Any] = []

    def ready(p: Any) -> None:  # just before the captures' go
        rec = p.one("recorder")
        recorder.append(rec)
        meter.append(CpuMeter(lambda: rec.totals["frames"], threads=threads).start())

    try:
        s = (asyncio.run if stdlib_loop else event_loop_run)(run(cfg, RunOptions(frames=frames), on_ready=ready))
    finally:
        for m in meter:
            m.stop()
    cpu_warmup = min(warmup, max(0, frames // 2))
    cpu = meter[0].per_frame(cpu_warmup, recorder[0].last_t) if meter else {"core_ms_per_frame": None}
    faces = s.get("faces") or {}
    done = (s.get("frames_completed") or 0) + (s.get("frames_partial") or 0)
    n_faces = int(faces.get("faces", 0))
    actors = s.get("actors", {})
    return {
        "fps": s["fps"], "duration_s": s["duration_s"], "frames_captured": s["frames_captured"],
        "frames_completed": s["frames_completed"], "frames_partial": s["frames_partial"],
        "dropped_total": s["dropped_total"], "unaccounted": s["unaccounted"], "drained": s.get("drained"),
        "leaked_sockets": s.get("leaked_sockets", []),
        "faces_total": n_faces, "faces_frames": int(faces.get("frames", 0)),
        "faces_per_frame": round(n_faces / faces["frames"], 3) if faces.get("frames") else 0.0,
        "faces_per_s": round(n_faces / s["duration_s"], 1) if s["duration_s"] else 0.0,
        "latency_ms": s["latency_ms"], "models": s.get("models"),
        "busy_ms_p50": {n: a["busy_ms_p50"] for n, a in actors.items() if n not in ("recorder",)},
        "completed_frames": done, "processes": [g["name"] for g in s.get("groups", [])],
        "cpu_warmup_frames": cpu_warmup, **cpu,
    }


def run_serial(cfg: Config, source: str, frames: int, warmup: int, in_memory: bool = False) -> Dict[str, Any]:
    names = cfg.profile().models("cpu")
    loop = SerialLoop(names.detector, names.fer, threads=cfg.engine.cpu.threads, model_paths=cfg.models.paths,
                      score_threshold=cfg.detector.score_threshold, max_faces=cfg.detector.max_faces,
                      transport="ipc")
    try:
        loop.start()
        r = loop.run(source, frames, warmup, in_memory=in_memory)
    finally:
        loop.close()
    r["backend_exit_code"] = loop.exit_code
    r["ipc_dir_left"] = bool(loop.dir and os.path.exists(loop.dir))
    r["faces_per_s"] = round(r["faces_total"] / r["duration_s"], 1) if r["duration_s"] else 0.0
    return r


# ---------------------------------------------------------------- the whole run

def _dist_version(name: str) -> Optional[str]:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v]
    return round(statistics.median(vals), 3) if vals else None


def bench_cpu(images: Optional[str] = None, frames: int = 300, warmup: int = 30, repeats: int = 3,
              profile: Optional[str] = None, config_path: Optional[str] = None,
              progress: Optional[Callable[[str], None]] = None, sets: Sequence[str] = COMPARE_SETS,
              pool: bool = True, cpu_threads: Optional[int] = None, stdlib_loop: bool = False) -> Dict[str, Any]:
    """Measure; return the report (``bench_pipeline_cpu.json``). ``cpu_threads``: ``[engine.cpu] threads``
    for both sides (default: the config's); ``stdlib_loop``: the pipeline on asyncio's own loop."""
    folder = check_images_dir(images)

    def base() -> Config:
        cfg = apply_overrides(load(config_path), profile=profile, engine="cpu", display="none")
        shared = os.path.normpath(os.path.join(folder, "..", "models"))
        if os.path.isdir(shared) and shared not in cfg.models.paths:
            cfg.models.paths.append(shared)
        if cpu_threads:
            cfg.engine.cpu.threads = cpu_threads
        return cfg

    cfg0 = base()
    names = cfg0.profile().models("cpu")
    if not (names.detector and names.fer):
        raise ConfigError("bench pipeline --engine cpu needs a profile with a detector and a FER model "
                          "(fd+fer64, fd+fer112); %s has %s" % (cfg0.pipeline.profile, names))
    say = progress or (lambda s: None)
    t0 = time.monotonic()
    runs: Dict[str, List[Dict[str, Any]]] = {}
    errors: Dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-benchcpu-") as tmp:
        fsets = prepare_frames(folder, tmp)
        cases: List[Tuple[str, str, Optional[int]]] = []  # (kind, frame set, FER workers)
        for name in sets:
            cases += [("pipeline", name, None), ("serial", name, None), ("serial_mem", name, None)]
        crops: List[Any] = []
        if pool:
            cases += [("pool", POOL_SET, w) for w in POOL_WORKERS]
            cases += [("ferstage", POOL_SET, w) for w in POOL_WORKERS]
            cases += [("ferprocs", POOL_SET, w) for w in POOL_WORKERS]
            cases += [("poolprocs", POOL_SET, w) for w in POOL_WORKERS]
            crops = real_crops(base(), fsets[POOL_SET].path)

        def key(c: Tuple[str, str, Optional[int]]) -> str:
            return "%s:%s" % (c[0], c[1]) + (":w%d" % c[2] if c[2] else "")

        def measure(c: Tuple[str, str, Optional[int]], n: int, warm: int) -> Dict[str, Any]:
            kind, name, workers = c
            fs = fsets[name]
            if kind == "ferstage":
                return run_fer_stage(base(), crops, workers or 1, n)
            if kind == "ferprocs":
                return run_fer_stage_processes(base(), crops, workers or 1, n)
            if kind in ("serial", "serial_mem"):
                return run_serial(base(), fs.path, n, warm, in_memory=kind == "serial_mem")
            cfg = pipeline_config(base(), fs.path, workers, key(c).replace(":", "-"))
            cfg.fer.processes = kind == "poolprocs"  # every FER worker in a child process of its own
            return run_pipeline(cfg, n, warm, stdlib_loop=stdlib_loop)

        for rnd in range(repeats + (1 if warmup > 0 else 0)):
            is_warmup = warmup > 0 and rnd == 0
            for c in cases:
                k = key(c)
                if k in errors or (is_warmup and c[0] != "pipeline" and c[0] != "pool"):
                    continue  # the serial loop warms up inside its own measurement
                try:
                    r = measure(c, warmup if is_warmup else frames, 0 if is_warmup else warmup)
                except (RuntimeError, OSError, ValueError) as exc:
                    errors[k] = "%s: %s" % (type(exc).__name__, exc)
                    say("%-28s failed: %s" % (k, errors[k]))
                    continue
                if is_warmup:
                    continue
                r["round"] = rnd
                runs.setdefault(k, []).append(r)
                say("%-28s %7.1f FPS  %5.2f faces/frame  %6.1f faces/s  (round %d/%d, %.0f s)"
                    % (k, r["fps"], r["faces_per_frame"], r["faces_per_s"], rnd + (0 if warmup > 0 else 1),
                       repeats, time.monotonic() - t0))
        sets_info = {n: dataclasses.asdict(fs) for n, fs in fsets.items()}
    for fs in sets_info.values():
        if fs["path"].startswith(tmp):
            fs["path"] = os.path.basename(fs["path"]) + " (temporary)"

    def med(k: str, field: str) -> Optional[float]:
        return _median([r.get(field) for r in runs.get(k, [])])

    def per_round(a: str, b: str, field: str) -> List[float]:
        by_a = {r["round"]: r.get(field) for r in runs.get(a, [])}
        return [v for v in (ratio(by_a.get(r["round"]), r.get(field)) for r in runs.get(b, [])) if v]

    compare = []
    for name in sets:
        p, s, m = "pipeline:%s" % name, "serial:%s" % name, "serial_mem:%s" % name
        ratios = per_round(p, s, "fps")
        ratios_mem = per_round(p, m, "fps")
        pr, sr, mr = runs.get(p, []), runs.get(s, []), runs.get(m, [])
        compare.append({
            "frames": name, "pipeline_fps": med(p, "fps"), "serial_fps": med(s, "fps"),
            "ratio": _median(ratios), "ratio_runs": ratios,
            "pipeline_faces_per_frame": med(p, "faces_per_frame"), "serial_faces_per_frame": med(s, "faces_per_frame"),
            "serial_in_memory_fps": med(m, "fps"), "ratio_vs_in_memory": _median(ratios_mem),
            "ratio_vs_in_memory_runs": ratios_mem, "serial_in_memory_faces_per_frame": med(m, "faces_per_frame"),
            "expected_faces": fsets[name].expected_faces,
            "pipeline_fer_workers": cfg0.fer.workers, "pipeline_max_in_flight": cfg0.capture.max_in_flight,
            "serial_in_flight": 1,
            "same_frames": bool(pr and sr and all(r["frame_digests"] == [fsets[name].digest] for r in sr + mr)),
            "pipeline_busy_ms_p50": pr[len(pr) // 2]["busy_ms_p50"] if pr else None,
            "serial_ms_p50": sr[len(sr) // 2]["ms_p50"] if sr else None,
            "serial_in_memory_ms_p50": mr[len(mr) // 2]["ms_p50"] if mr else None,
            "goal": ">= 1.5x the serial loop, at least as many faces per frame",
            "pipeline_core_ms_per_frame": med(p, "core_ms_per_frame"),
            "serial_core_ms_per_frame": med(s, "core_ms_per_frame"),
            "serial_front_core_ms_per_frame": med(s, "front_core_ms_per_frame"),
            "serial_back_core_ms_per_frame": med(s, "back_core_ms_per_frame"),
            "serial_in_memory_core_ms_per_frame": med(m, "core_ms_per_frame"),
            "core_ms_ratio": _median(per_round(p, s, "core_ms_per_frame")),
            "core_ms_ratio_runs": per_round(p, s, "core_ms_per_frame"),
            "core_ms_ratio_vs_in_memory": _median(per_round(p, m, "core_ms_per_frame")),
            "core_ms_goal": "<= 0.85x the serial loop's core-ms per frame",
        })
    pool_row: Dict[str, Any] = {}
    if pool:
        a, b = "pool:%s:w%d" % (POOL_SET, POOL_WORKERS[1]), "pool:%s:w%d" % (POOL_SET, POOL_WORKERS[0])
        ratios = per_round(a, b, "faces_per_s")
        pool_row = {"frames": POOL_SET, "workers": list(POOL_WORKERS),
                    "faces_per_s": [med(b, "faces_per_s"), med(a, "faces_per_s")],
                    "fps": [med(b, "fps"), med(a, "fps")],
                    "faces_per_frame": [med(b, "faces_per_frame"), med(a, "faces_per_frame")],
                    "ratio": _median(ratios), "ratio_runs": ratios, "goal": ">= 1.7x faces/s"}
        a, b = "ferstage:%s:w%d" % (POOL_SET, POOL_WORKERS[1]), "ferstage:%s:w%d" % (POOL_SET, POOL_WORKERS[0])
        ratios = per_round(a, b, "faces_per_s")
        pool_row["stage_only"] = {"faces_per_s": [med(b, "faces_per_s"), med(a, "faces_per_s")],
                                  "faces_per_frame": len(crops), "ratio": _median(ratios), "ratio_runs": ratios,
                                  "this_process_cpu_pct": [med(b, "this_process_cpu_pct"),
                                                           med(a, "this_process_cpu_pct")]}
        a, b = "ferprocs:%s:w%d" % (POOL_SET, POOL_WORKERS[1]), "ferprocs:%s:w%d" % (POOL_SET, POOL_WORKERS[0])
        ratios = per_round(a, b, "faces_per_s")
        pool_row["stage_processes"] = {"faces_per_s": [med(b, "faces_per_s"), med(a, "faces_per_s")],
                                       "faces_per_frame": len(crops), "ratio": _median(ratios),
                                       "ratio_runs": ratios, "goal": ">= 1.7x faces/s",
                                       "this_process_cpu_pct": [med(b, "this_process_cpu_pct"),
                                                                med(a, "this_process_cpu_pct")],
                                       "load_avg_1m_runs": [r.get("load_avg_1m") for r in runs.get(a, [])
                                                            + runs.get(b, [])]}
        a, b = "poolprocs:%s:w%d" % (POOL_SET, POOL_WORKERS[1]), "poolprocs:%s:w%d" % (POOL_SET, POOL_WORKERS[0])
        one = "pool:%s:w%d" % (POOL_SET, POOL_WORKERS[0])
        pool_row["pipeline_processes"] = {
            "faces_per_s": [med(b, "faces_per_s"), med(a, "faces_per_s")], "fps": [med(b, "fps"), med(a, "fps")],
            "faces_per_frame": [med(b, "faces_per_frame"), med(a, "faces_per_frame")],
            "ratio": _median(per_round(a, b, "faces_per_s")), "ratio_runs": per_round(a, b, "faces_per_s"),
            "vs_one_worker_in_process": _median(per_round(a, one, "faces_per_s")),
            "vs_one_worker_in_process_runs": per_round(a, one, "faces_per_s")}
    return {
        "machine": machine_info(),
        "settings": {"engine": "cpu", "profile": cfg0.pipeline.profile, "models": {"detector": names.detector,
                                                                                   "fer": names.fer},
                     "cpu_threads": cfg0.engine.cpu.threads, "stdlib_loop": stdlib_loop,
                     "litert": _dist_version("ai-edge-litert"),
                     "frames": frames, "warmup": warmup,
                     "repeats": repeats, "images": folder, "model_paths": cfg0.models.paths,
                     "elapsed_s": round(time.monotonic() - t0, 1),
                     "notes": ["pipeline: pipeline.runner.run, image-file source looping one image, inproc://, "
                               "credit window capture.max_in_flight; fps = completed frames / (last result - go)",
                               "serial: pipeline.serial_loop, a second process behind one REQ/REP hop over "
                               "ipc://, one frame in flight; the front end reads the same source as the "
                               "pipeline's capture (the same cost per read)",
                               "serial_mem: the same loop, but the front end reads the image once and sends that "
                               "frame every time (a camera hands over decoded frames); ratio_vs_in_memory",
                               "ratio: median of the per-round ratios (both measured in the same round)",
                               "pool: the pipeline on faces5 with 1 and 2 FER workers, faces/s",
                               "ferstage: the FER workers alone (FerWorker actors, the config's depth and hwm) fed "
                               "the real crops of faces5 by a PUSH socket; faces/s from the first job to the last "
                               "expression, after 2 warm-up jobs per worker; one job in flight per CPU worker, "
                               "as the pipeline builds them",
                               "ferprocs: the same, every FerWorker in a child process of its own as "
                               "fer.processes = true starts them (process groups), fed over ipc://",
                               "poolprocs: the pipeline on faces5 with fer.processes = true (1 and 2 worker "
                               "processes), faces/s"]},
        "frame_sets": sets_info,
        "runs": runs,
        "pipeline_vs_serial": compare,
        "fer_pool": pool_row,
        "errors": errors,
    }


def main_cpu(args: argparse.Namespace, frames: int, warmup: int, repeats: int) -> int:
    """``bench pipeline --engine cpu`` (called by ``pipeline.bench`` with its parsed options)."""
    os.makedirs(args.out, exist_ok=True)
    print("bench pipeline --engine cpu: real photos, %d frames per run after a %d-frame warm-up, %d repeat%s"
          % (frames, warmup, repeats, "s" if repeats > 1 else ""), flush=True)
    result = bench_cpu(images=getattr(args, "images", None), frames=frames, warmup=warmup, repeats=repeats,
                       profile=args.profile, config_path=args.config,
                       progress=(lambda s: print("  " + s, flush=True)) if args.progress else None)
    print()
    print(render(result))
    write_report(args.out, OUT_NAME, result)
    return 1 if result["errors"] else 0
