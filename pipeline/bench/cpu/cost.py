"""CPU cost per frame alone: ``python -m edgepipe.pipeline.bench.cpu.cost [--threads] [--rounds N] ...``.

The part of ``bench pipeline --engine cpu`` that compares core-ms per frame (``compare.bench_cpu`` with
chosen frame sets and no FER pool cases): the pipeline against the serial two-process loop on the same
frames, round-robin, warm-up excluded on both sides. ``--threads`` adds a second pipeline run per round
that also reads every thread's CPU time (``cpu_cost.CpuMeter(threads=True)``: a /proc walk every
100 ms, about 0.1 core-ms a frame of its own), so the breakdown says where the pipeline's CPU goes;
``--models`` times each of the profile's two models alone at 1 and 2 LiteRT threads (wall ms and core-ms
per invoke: what a second thread buys, and what it burns).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgepipe.actors.runtime.engines import EngineSettings
from edgepipe.models.store import manifest
from edgepipe.pipeline.bench.common import write_report
from edgepipe.pipeline.bench.cpu.compare import COMPARE_SETS, bench_cpu, pipeline_config, run_pipeline
from edgepipe.pipeline.bench.cpu.frames import check_images_dir, prepare_frames
from edgepipe.pipeline.bench.cpu.render import render
from edgepipe.pipeline.config.loading import ConfigError, apply_overrides, load

OUT_NAME = "bench_cpu_cost.json"


def thread_breakdown(frame_path: str, frames: int, warmup: int, rounds: int, cpu_threads: Optional[int],
                     models_dir: str, profile: Optional[str] = None) -> Dict[str, Any]:
    """Per-thread core-ms per frame of the pipeline, ``rounds`` runs: each thread's median, and the runs."""
    runs: List[Dict[str, Any]] = []
    for rnd in range(rounds):
        cfg = apply_overrides(load(None), profile=profile, engine="cpu", display="none")
        if os.path.isdir(models_dir) and models_dir not in cfg.models.paths:
            cfg.models.paths.append(models_dir)
        if cpu_threads:
            cfg.engine.cpu.threads = cpu_threads
        r = run_pipeline(pipeline_config(cfg, frame_path, None, "cost-%d" % rnd), frames, warmup, threads=True)
        runs.append({k: r.get(k) for k in ("fps", "core_ms_per_frame", "cores_busy", "thread_core_ms_per_frame")})
    names = sorted({n for r in runs for n in (r["thread_core_ms_per_frame"] or {})})
    med = {n: round(statistics.median([(r["thread_core_ms_per_frame"] or {}).get(n, 0.0) for r in runs]), 3)
           for n in names}
    return {"median": dict(sorted(med.items(), key=lambda kv: -kv[1])), "runs": runs}


def model_cpu(names: Sequence[str], threads: Sequence[int], model_paths: Sequence[str], n: int = 300,
              warmup: int = 30) -> List[Dict[str, Any]]:
    """Each model alone on the CPU engine at each thread count: wall ms and core-ms (this process's CPU time,
    LiteRT's own threads included) per invoke, ``n`` invokes of a zero input after ``warmup``."""
    out = []
    for name in names:
        for t in threads:
            settings = EngineSettings.of("cpu", model_paths=list(model_paths), threads=t)
            engine = settings.build(manifest.get(name))
            engine.load()
            try:
                x = [np.zeros(s.shape, dtype=s.dtype) for s in engine.inputs]
                for _ in range(warmup):
                    engine.invoke(x)
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(n):
                    engine.invoke(x)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            finally:
                engine.close()
            out.append({"model": name, "threads": t, "wall_ms": round(wall * 1000.0 / n, 3),
                        "core_ms": round(cpu * 1000.0 / n, 3)})
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgepipe.pipeline.bench.cpu.cost",
                                 description="Core-ms per frame: the pipeline against the serial two-process "
                                 "loop on the same real frames (CPU models).")
    ap.add_argument("--frames", type=int, default=900, help="timed frames per run (default 900)")
    ap.add_argument("--warmup", type=int, default=30, help="warm-up frames, excluded (default 30)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, round-robin (default 3)")
    ap.add_argument("--sets", default="seed640", help="frame sets, comma-separated, of: %s (default seed640)"
                    % ", ".join(COMPARE_SETS))
    ap.add_argument("--threads", action="store_true", help="also each pipeline thread's core-ms per frame")
    ap.add_argument("--cpu-threads", type=int, default=None, help="[engine.cpu] threads for both sides "
                    "(default: the config's)")
    ap.add_argument("--stdlib-loop", action="store_true", help="the pipeline on asyncio's own event loop "
                    "(default: uvloop where installed, as run.py)")
    ap.add_argument("--models", action="store_true", help="also each model alone at 1 and 2 LiteRT threads: "
                    "wall ms and core-ms per invoke")
    ap.add_argument("--images", default=None, help="the shared assets' images folder")
    ap.add_argument("--profile", default=None, help="a profile with a detector and a FER model")
    ap.add_argument("--out", default=os.path.join("bench-out", "cpu"), help="folder of %s" % OUT_NAME)
    args = ap.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    bad = [s for s in sets if s not in COMPARE_SETS]
    if bad or args.frames < 2 or args.rounds < 1:
        print("--sets: one or more of %s; --frames >= 2; --rounds >= 1" % ", ".join(COMPARE_SETS), file=sys.stderr)
        return 2
    try:
        result = bench_cpu(images=args.images, frames=args.frames, warmup=args.warmup, repeats=args.rounds,
                           profile=args.profile, sets=sets, pool=False, cpu_threads=args.cpu_threads,
                           stdlib_loop=args.stdlib_loop,
                           progress=lambda s: print("  " + s, flush=True))
        if args.threads:
            folder = check_images_dir(args.images)
            with tempfile.TemporaryDirectory(prefix="edgepipe-cost-") as tmp:
                fs = prepare_frames(folder, tmp)[sets[0]]
                result["threads"] = thread_breakdown(fs.path, args.frames, args.warmup, args.rounds,
                                                     args.cpu_threads,
                                                     os.path.normpath(os.path.join(folder, "..", "models")),
                                                     args.profile)
        if args.models:
            names = result["settings"]["models"]
            result["models_alone"] = model_cpu([names["detector"], names["fer"]], (1, 2),
                                               result["settings"]["model_paths"])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(render(result))
    th = result.get("threads")
    if th:
        print("pipeline threads, core-ms per frame (median of %d runs, %s): %s"
              % (len(th["runs"]), sets[0], ", ".join("%s %.2f" % kv for kv in th["median"].items())))
    for m in result.get("models_alone", []):
        print("%s alone, %d LiteRT thread(s): %.3f ms per invoke, %.3f core-ms" % (m["model"], m["threads"],
                                                                             m["wall_ms"], m["core_ms"]))
    write_report(args.out, OUT_NAME, result, lead="")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
