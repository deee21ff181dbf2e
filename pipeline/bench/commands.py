"""``python run.py bench models|pipeline``: measure models alone and the whole pipeline.

``bench models`` times each model's invoke on the CPU (1 and N threads) and on
the Edge TPU when one loads (``models.bench``), prints the table and writes
``bench_models.json`` and ``bench_models.png``. Model files are found in the
config's ``models.paths``, then ``$EDGEPIPE_MODEL_PATH``, then the cache (see
``models/fetch.py``); in this repository the shared assets are found with
``EDGEPIPE_MODEL_PATH=../shared/assets/models``.

``bench pipeline`` runs the whole pipeline in this process, one configuration
after the other, on an unpaced synthetic source (``synthetic:faces=K,fps=0``),
so it measures the most the pipeline can complete. An unpaced source is read
as fast as results come back (credit flow control: at most
``capture.max_in_flight`` frames between capture and result), so frames should
not be dropped; every configuration still reports completed FPS *and* drops
(a live source would drop stale frames at the detector: freshest wins). It
compares, as ratios within one run:

(a) FER pool size (1, 2, 4 workers) at 1, 3 and 5 faces;
(b) encoder raw vs JPEG;
(c) ``inproc://`` vs ``ipc://`` endpoints;
(d) the reference project's serial loop: the same engines called one after the
    other (read, encode, decode, detect, FER per face) with no pipeline.

Every configuration runs once as a warm-up (``--warmup`` frames), then
``--repeats`` times with ``--frames`` captured frames, round-robin over the
configurations so that drift on a noisy machine hits them all alike; the run
with the median FPS is reported. Results: ``bench_pipeline.json`` (with the
machine's description) and PNG charts in ``--out`` (default ``./bench-out``).

This module is the command line and the runs; the parts live beside it:
``bench_cases`` (configurations), ``bench_serial`` (the serial loop, d),
``bench_report`` and ``bench_render`` (the report and its tables),
``bench_common`` (machine description, output files), ``bench_cpu``,
``bench_bus`` and ``bench_detectors`` (the other benchmarks).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from edgepipe.models.engines.engine import EngineError
from edgepipe.models.store.fetch import ENV_PATH
from edgepipe.pipeline.bench import bus as bench_bus
from edgepipe.pipeline.bench import charts
from edgepipe.pipeline.bench import detectors as bench_detectors
from edgepipe.pipeline.bench import fer112_align
from edgepipe.pipeline.bench import models as mbench
from edgepipe.pipeline.bench.cameras import command as bench_cameras
from edgepipe.pipeline.bench.cases import (DEFAULT_FRAMES, DEFAULT_REPEATS, DEFAULT_WARMUP, FACES, PLACEMENTS,
                                           QUICK_FRAMES, QUICK_REPEATS, QUICK_WARMUP, WORKERS, Case, case_config,
                                           ipc_dir, plan, run_pipeline_case, tpu_python)
from edgepipe.pipeline.bench.common import (DEFAULT_OUT, REPO, SHARED_MODELS, machine_info, read_json, with_charts,
                                            write_json, write_report)
from edgepipe.pipeline.bench.cpu.compare import main_cpu
from edgepipe.pipeline.bench.cpu.serial import run_serial_case
from edgepipe.pipeline.bench.render import render_devices, render_memory, render_pipeline
from edgepipe.pipeline.bench.report import record, report
from edgepipe.pipeline.config.loading import ConfigError, apply_overrides, load
from edgepipe.pipeline.loop import setup_logging
from edgepipe.pipeline.plan.placement import load_table, save_table, table_path

log = logging.getLogger("edgepipe.bench")


# ---------------------------------------------------------------- bench models

def bench_models_main(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    paths = list(cfg.models.paths)
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else mbench.local_models(paths)
    if not names:
        print("error: no model files found in models.paths, $%s or the cache; point the search path at the "
              "shared assets (%s=%s python run.py bench models) or run `python run.py models fetch NAME`"
              % (ENV_PATH, ENV_PATH, SHARED_MODELS), file=sys.stderr)
        return 2
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    kinds = [k.strip() for k in args.engines.split(",") if k.strip()]
    rows: List[Dict[str, Any]] = []
    errors: Dict[str, str] = {}
    for name in names:  # one at a time: a missing file fails that model, not the table
        try:
            rows += mbench.bench_models([name], threads_list=threads, runs=args.runs, engine_kinds=kinds,
                                        warmup=args.warmup, model_paths=paths,
                                        device=(cfg.engine.edgetpu.devices or [""])[0])
        except EngineError as exc:
            errors[name] = str(exc)
            log.warning("bench %s: %s", name, exc)
    if rows:
        print(mbench.render_table(rows))
    for name, err in errors.items():
        print("%s: not measured: %s" % (name, err))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench_models.json")
    models_report = {"machine": machine_info(),
                     "settings": {"runs": args.runs, "warmup": args.warmup, "threads": threads,
                                  "engines": kinds, "model_paths": paths, ENV_PATH: os.environ.get(ENV_PATH, "")},
                     "rows": rows, "errors": errors}
    write_json(path, models_report)
    print("wrote %s" % path)
    if rows and args.cache:
        merged = {r["model"]: r for r in (read_json(table_path()).get("rows", []))}
        merged.update({r["model"]: r for r in rows})  # a run of some models keeps the others' rows
        models_report["rows"] = list(merged.values())
        print("wrote %s (the table `auto` placement reads: %d models)"
              % (save_table(models_report), len(load_table())))
    if rows:
        for p in with_charts(lambda: [charts.models_chart(rows, os.path.join(args.out, "bench_models.png"))]):
            print("wrote %s" % p)
    return 1 if errors else 0


# ---------------------------------------------------------------- bench pipeline: the whole run

def bench_pipeline(engine: str = "fake", frames: int = DEFAULT_FRAMES, warmup: int = DEFAULT_WARMUP,
                   repeats: int = DEFAULT_REPEATS, faces: Sequence[int] = FACES, workers: Sequence[int] = WORKERS,
                   profile: Optional[str] = None, config_path: Optional[str] = None,
                   progress: Optional[Callable[[str], None]] = None,
                   profiles: Sequence[str] = (), placements: Sequence[str] = PLACEMENTS) -> Dict[str, Any]:
    """Run every configuration; return the report (see ``bench_pipeline.json``)."""
    base_cfg = load(config_path)  # fail early on a bad config or profile
    apply_overrides(base_cfg, profile=profile, engine=engine)
    profiles = [base_cfg.pipeline.profile] + [p for p in profiles if p != base_cfg.pipeline.profile]
    for prof in profiles:
        apply_overrides(load(config_path), profile=prof, engine=engine)
    cases = plan(faces, workers, engine, [""] + list(profiles[1:]), placements)
    runs: Dict[str, List[Dict[str, Any]]] = {c.id: [] for c in cases}
    errors: Dict[str, str] = {}
    say = progress or (lambda s: log.info("%s", s))
    t0 = time.monotonic()

    def measure(case: Case, n: int, warm: int) -> Dict[str, Any]:
        cfg = case_config(lambda: load(config_path), case, engine, profile)
        if case.kind == "serial":
            return run_serial_case(cfg, n, warm)
        return run_pipeline_case(cfg, n)

    try:
        for rnd in range(repeats + (1 if warmup > 0 else 0)):
            is_warmup = warmup > 0 and rnd == 0
            for case in cases:
                if case.id in errors:
                    continue
                if is_warmup and case.kind == "serial":
                    continue  # the serial loop warms up inside its own measurement
                try:
                    if is_warmup:
                        measure(case, warmup, 0)
                        continue
                    s = measure(case, frames, warmup)
                except (RuntimeError, OSError, ValueError) as exc:  # an actor died, a socket failed
                    log.error("%s failed: %s", case.id, exc)
                    errors[case.id] = "%s: %s" % (type(exc).__name__, exc)
                    continue
                runs[case.id].append(record(case, s))
                say("%-34s %7.1f FPS  %4d/%-4d completed  %4d dropped  (round %d/%d, %.0f s)"
                    % (case.id, s["fps"], s["frames_completed"], s["frames_captured"], s["dropped_total"],
                       rnd + (0 if warmup > 0 else 1), repeats, time.monotonic() - t0))
    finally:
        shutil.rmtree(ipc_dir(), ignore_errors=True)  # sockets unlink their own files; the folder is ours
    return report(cases, runs, errors, engine=engine, frames=frames, warmup=warmup, repeats=repeats,
                  profile=base_cfg.pipeline.profile, base_cfg=base_cfg, elapsed=time.monotonic() - t0,
                  profiles=profiles)


def memory_check(profiles: Sequence[str], config_path: Optional[str] = None,
                 frames: int = 300) -> List[Dict[str, Any]]:
    """Whole-system RSS: each profile run as a user runs it (``run.py`` in a fresh process, 3 faces, fake
    engine), alone and with the TPU actors in a dual-Python child group; the peak RSS of every process."""
    out = []
    tmp = tempfile.mkdtemp(prefix="edgepipe-mem-")
    try:
        for prof in profiles:
            for layout in ("one process", "dual-Python"):
                summary = os.path.join(tmp, "s.json")
                cfg_path = config_path or os.path.join(REPO, "config.toml")
                if layout == "dual-Python":  # the same config with the detector and FER in the TPU venv's Python
                    gcfg = os.path.join(tmp, "groups.toml")
                    with open(cfg_path, encoding="utf-8") as src, open(gcfg, "w", encoding="utf-8") as dst:
                        dst.write(src.read() + '\n[groups.tpu]\nactors = ["detector", "fer"]\npython = "%s"\n'
                                  % tpu_python())
                    cfg_path = gcfg
                cmd = [sys.executable, os.path.join(REPO, "run.py"), "--config", cfg_path, "--profile", prof,
                       "--engine", "fake", "--source", "synthetic:faces=3,fps=0", "--frames", str(frames),
                       "--summary", summary,  # no TCP port: another pipeline may hold the default one
                       "--metrics-endpoint", "ipc://%s" % os.path.join(tmp, "metrics")]
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      universal_newlines=True, timeout=600)
                row: Dict[str, Any] = {"profile": prof, "layout": layout}
                if proc.returncode != 0:
                    row["error"] = (proc.stderr.strip().splitlines() or ["rc %d" % proc.returncode])[-1]
                else:
                    with open(summary, encoding="utf-8") as fh:
                        s = json.load(fh)
                    row.update({"rss_mb": s["rss_mb"]["total"], "by_process": s["rss_mb"]["by_process"],
                                "fps": s["fps"]})
                out.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_pipeline_main(args: argparse.Namespace) -> int:
    frames = args.frames or (QUICK_FRAMES if args.quick else DEFAULT_FRAMES)
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick else DEFAULT_WARMUP)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    faces = [int(x) for x in args.faces.split(",")] if args.faces else list(FACES)
    workers = [int(x) for x in args.workers.split(",")] if args.workers else list(WORKERS)
    if frames < 1 or warmup < 0 or repeats < 1 or min(faces) < 1 or min(workers) < 1:
        print("error: --frames, --repeats, --faces and --workers must be at least 1, --warmup at least 0",
              file=sys.stderr)
        return 2
    if args.engine == "cpu":  # real photos against the serial two-process loop: pipeline/bench_cpu.py
        return main_cpu(args, frames, warmup, repeats)
    os.makedirs(args.out, exist_ok=True)  # fail now, not after minutes of measuring
    print("bench pipeline: engine %s, %d frames per configuration after a %d-frame warm-up, %d repeat%s, "
          "faces %s, FER workers %s" % (args.engine, frames, warmup, repeats, "s" if repeats > 1 else "",
                                        faces, workers), flush=True)
    result = bench_pipeline(engine=args.engine, frames=frames, warmup=warmup, repeats=repeats, faces=faces,
                            workers=workers, profile=args.profile, config_path=args.config,
                            progress=(lambda s: print("  " + s, flush=True)) if args.progress else None,
                            profiles=[p.strip() for p in args.profiles.split(",") if p.strip()]
                            if args.engine == "fake" else [],
                            placements=[p.strip() for p in args.placements.split(",") if p.strip()])
    if args.engine == "fake" and args.memory:
        result["memory"] = memory_check(list(result["profiles"]), args.config, frames)
    print()
    if result.get("devices"):
        print(render_devices(result))
    if result.get("memory"):
        print(render_memory(result["memory"]))
        print()
    print(render_pipeline(result))
    write_report(args.out, "bench_pipeline.json", result)
    for p in with_charts(lambda: charts.pipeline_charts(result, args.out)):
        print("wrote %s" % p)
    return 1 if result["errors"] else 0


# ---------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="run.py bench", description="Measure models alone and the whole pipeline; "
                                 "write JSON and PNG charts.")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="what", metavar="models|pipeline|cameras|bus|detectors|fer112-align")
    sub.required = True
    m = sub.add_parser("models", help="invoke FPS of each model on the CPU (1 and N threads) and the Edge TPU",
                       description="Model files come from models.paths, $EDGEPIPE_MODEL_PATH, then the cache; "
                       "for this repository's shared assets: EDGEPIPE_MODEL_PATH=%s" % SHARED_MODELS)
    m.add_argument("--models", help="comma-separated names (default: every model whose CPU file is here)")
    m.add_argument("--runs", type=int, default=50, help="timed invokes per model and engine (default 50)")
    m.add_argument("--warmup", type=int, default=5, help="untimed invokes first (default 5)")
    m.add_argument("--threads", help="CPU thread counts, comma-separated (default: 1 and the CPU count)")
    m.add_argument("--engines", default="cpu,edgetpu", help="cpu,edgetpu (default both; TPU is n/a without one)")
    m.add_argument("--config", help="config file (for models.paths and the Edge TPU device)")
    m.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./%s)" % DEFAULT_OUT)
    m.add_argument("--no-cache", dest="cache", action="store_false",
                   help="do not keep the table for `auto` placement (default: cached per machine)")
    p = sub.add_parser("pipeline", help="whole-pipeline FPS: FER pool, encoder, endpoints, vs the serial loop")
    p.add_argument("--engine", choices=("fake", "cpu"), default="fake",
                   help="fake (default: emulates the Edge TPU's per-model latency) or cpu (real models)")
    p.add_argument("--frames", type=int, help="captured frames per configuration (default %d, --quick %d)"
                   % (DEFAULT_FRAMES, QUICK_FRAMES))
    p.add_argument("--warmup", type=int, help="warm-up frames per configuration (default %d, --quick %d)"
                   % (DEFAULT_WARMUP, QUICK_WARMUP))
    p.add_argument("--repeats", type=int, help="measured runs per configuration, median reported (default %d, "
                   "--quick %d)" % (DEFAULT_REPEATS, QUICK_REPEATS))
    p.add_argument("--faces", help="face counts, comma-separated (default %s)" % ",".join(map(str, FACES)))
    p.add_argument("--workers", help="FER pool sizes, comma-separated (default %s)" % ",".join(map(str, WORKERS)))
    p.add_argument("--profile", help="a profile with a detector and FER (default from the config)")
    p.add_argument("--profiles", default="fd+fer64,fd+fer112",
                   help="fake engine: profiles measured on one device, auto and two devices "
                   "(default fd+fer64,fd+fer112; the first one also gets every comparison)")
    p.add_argument("--config", help="config file (default: config.toml beside run.py)")
    p.add_argument("--placements", default=",".join(PLACEMENTS),
                   help="fake engine: which of one (every role on one device), auto, two (devices) to run")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="fake engine: skip the whole-system RSS runs (one per profile, alone and dual-Python)")
    p.add_argument("--images", help="--engine cpu: the folder of real photos (default ../shared/assets/images "
                   "beside the repository, or $EDGEPIPE_ASSETS/images)")
    p.add_argument("--quick", action="store_true", help="fewer frames and one repeat")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no line per measured run")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./%s)" % DEFAULT_OUT)
    bench_cameras.add_parser(sub)
    bench_bus.add_parser(sub)
    bench_detectors.add_parser(sub)
    fer112_align.add_parser(sub)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose)
    try:
        if args.what == "models":
            return bench_models_main(args)
        if args.what == "cameras":
            return bench_cameras.main_args(args)
        if args.what == "bus":
            return bench_bus.main_args(args)
        if args.what == "detectors":
            return bench_detectors.main_args(args)
        if args.what == "fer112-align":
            return fer112_align.main_args(args)
        return bench_pipeline_main(args)
    except (ConfigError, EngineError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
