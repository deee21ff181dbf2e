"""``python run.py bench cameras [--quick] [--out DIR]``: 1 to N cameras in one pipeline.

Fake Edge TPU (``fd+fer64``): 1 to ``--cameras`` paced synthetic cameras at 30 FPS with 1 face each, for each
placement of ``bench pipeline`` (``one``: every role on one fake device; ``auto``: the placement the model
table chooses, FER64 on the CPU; ``two``: every role on two fake devices): per-camera FPS, total FPS against
the bound of the devices, latency p50/p99 per camera, device busy %, CPU % and core-ms per frame, frames
lost, wrong expressions. CPU engine (real models): 1 to ``--cpu-cameras`` cameras each playing the demo clip
at its own frame rate, against the serial two-process loop on the same clip in the same round: cameras served,
core-ms per frame of each. Round-robin over the configurations, ``--repeats`` rounds, the median run kept.
The goals (``cameras.goals``) are judged as ratios within the run. Writes ``bench_cameras.json`` (every run,
the machine, its load, the commit) and ``bench_cameras.png``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgepipe.actors.sources.demo import demo_path
from edgepipe.actors.sources.source_factory import source_rate
from edgepipe.models.engines.engine import EngineError
from edgepipe.pipeline.bench import charts
from edgepipe.pipeline.bench.cameras import goals
from edgepipe.pipeline.bench.cameras.measure import (CAMERA_FPS, DEMO, cpu_config, fake_config, run_measured,
                                                     run_serial_measured)
from edgepipe.pipeline.bench.cases import PLACEMENTS, ipc_dir
from edgepipe.pipeline.bench.common import DEFAULT_OUT, REPO, SHARED_MODELS, machine_info, with_charts, write_report
from edgepipe.pipeline.bench.fer112_align import cpu_model
from edgepipe.pipeline.config.loading import ConfigError, apply_overrides, load
from edgepipe.pipeline.plan.placement import device_bound

OUT_NAME = "bench_cameras.json"
CHART_NAME = "bench_cameras.png"
PROFILE = "fd+fer64"
CAMERAS, CPU_CAMERAS = 4, 3
FRAMES, QUICK_FRAMES = 300, 90  # per camera (10 s and 3 s at 30 FPS)
CPU_FRAMES, QUICK_CPU_FRAMES = 240, 72  # per camera (10 s and 3 s of the clip)
REPEATS, QUICK_REPEATS = 3, 1
WARMUP = 10  # frames of one untimed run before each engine's rounds (and of the serial loop's start)
ERRORS = (RuntimeError, OSError, ValueError, EngineError)


def clip_fps() -> Optional[float]:
    """The demo clip's own frame rate (its header; the ``demo`` cameras play at it)."""
    return round(source_rate(DEMO + ":unpaced"), 3) or None


def rounds(cases: Sequence[Any], repeats: int, measure: Callable[[Any, int], Dict[str, Any]],
           say: Callable[[str], None], errors: Dict[str, str], label: Callable[[Any], str],
           warm: Optional[Callable[[], Any]] = None) -> Dict[str, List[Dict[str, Any]]]:
    """Round-robin: every case once per round; a case that fails once is not run again."""
    runs: Dict[str, List[Dict[str, Any]]] = {label(c): [] for c in cases}
    if warm is not None:
        try:
            warm()
        except ERRORS as exc:
            errors["warm-up"] = "%s: %s" % (type(exc).__name__, exc)
    t0 = time.monotonic()
    for rnd in range(repeats):
        for c in cases:
            k = label(c)
            if k in errors:
                continue
            try:
                r = measure(c, rnd)
            except ERRORS as exc:  # an actor died, a socket failed, a model did not load
                errors[k] = "%s: %s" % (type(exc).__name__, exc)
                say("%-16s failed: %s" % (k, errors[k]))
                continue
            r["round"] = rnd
            runs[k].append(r)
            say("%-16s %6.1f FPS total, cameras %s, %s core-ms/frame  (round %d/%d, %.0f s)"
                % (k, r.get("fps") or 0.0, "/".join("%.1f" % v for v in r.get("camera_fps", {}).values()) or "-",
                   goals._f(r.get("core_ms_per_frame"), "%.2f"), rnd + 1, repeats, time.monotonic() - t0))
    return runs


def bench_fake(base: Callable[[], Any], placements: Sequence[str], cameras: int, frames: int, repeats: int,
               say: Callable[[str], None], errors: Dict[str, str]) -> Dict[str, Any]:
    cases = [(p, n) for p in placements for n in range(1, cameras + 1)]

    def measure(c: Tuple[str, int], _rnd: int) -> Dict[str, Any]:
        cfg = fake_config(base, c[0], c[1], PROFILE)
        s = run_measured(cfg, frames)
        row = goals.camera_row(s, device_bound(cfg, s.get("placement") or {}, 1), CAMERA_FPS * c[1])
        row["placement"] = c[0]
        row["where"] = {r: ", ".join(p["devices"]) or p["engine"] for r, p in (s.get("placement") or {}).items()}
        return row

    try:
        runs = rounds(cases, repeats, measure, say, errors, lambda c: "%s:%d" % c,
                      warm=lambda: run_measured(fake_config(base, cases[0][0], 1, PROFILE), WARMUP))
    finally:
        shutil.rmtree(ipc_dir(), ignore_errors=True)
    rows = []
    for k, rs in runs.items():
        if rs:
            row = dict(goals.median_run(rs))
            row["fps_runs"] = [r["fps"] for r in rs]
            rows.append(row)
    goals.judge_fake(rows)
    return {"profile": PROFILE, "camera_fps": CAMERA_FPS, "frames": frames, "repeats": repeats,
            "source": "synthetic:faces=1,fps=%d,seed=I per camera" % CAMERA_FPS, "rows": rows, "runs": runs}


def bench_cpu(base: Callable[[], Any], cameras: int, frames: int, repeats: int, say: Callable[[str], None],
              errors: Dict[str, str]) -> Dict[str, Any]:
    try:
        clip = os.path.basename(demo_path())
    except EngineError as exc:  # no clip: the fake engine's figures still stand
        errors["cpu"] = "the demo clip: %s" % exc
        return {}
    cases: List[int] = list(range(1, cameras + 1)) + [0]  # 0: the serial loop

    def measure(n: int, rnd: int) -> Dict[str, Any]:
        if n == 0:
            # at the clip's rate, as the cameras play it: a serial loop on a camera waits for each frame too
            r = run_serial_measured(base(), DEMO, frames, WARMUP, pace_fps=clip_fps() or 0.0)
            return {"fps": r["fps"], "core_ms_per_frame": r["cpu"]["core_ms_per_frame"],
                    "cpu_pct": r["cpu"]["cpu_pct"], "frames": r["frames"], "faces_per_frame": r["faces_per_frame"],
                    "latency_ms": r["latency_ms"], "ms_p50": r["ms_p50"], "cpu": r["cpu"]}
        s = run_measured(cpu_config(base(), n, "cams%d-r%d" % (n, rnd)), frames)
        return goals.camera_row(s, None, 0.0)

    warm = lambda: run_measured(cpu_config(base(), 1, "warm"), WARMUP)  # noqa: E731  (loads the models once)
    runs = rounds(cases, repeats, measure, say, errors, lambda n: "cpu:%d" % n if n else "cpu:serial", warm=warm)
    serial = runs.pop("cpu:serial", [])
    rows = [goals.merge_cpu(rs, serial) for rs in runs.values() if rs]
    fps = clip_fps()
    goals.judge_cpu(rows, fps)
    names = base().profile().models("cpu")
    return {"profile": PROFILE, "models": [names.detector, names.fer], "clip": clip,
            "clip_fps": fps, "source": DEMO, "frames": frames, "repeats": repeats, "rows": rows,
            "serial_runs": serial, "serial_faces_per_frame": goals._med([s["faces_per_frame"] for s in serial]),
            "runs": runs}


def bench_cameras(quick: bool = False, cameras: int = CAMERAS, cpu_cameras: Optional[int] = None,
                  frames: Optional[int] = None, cpu_frames: Optional[int] = None, repeats: Optional[int] = None,
                  placements: Sequence[str] = PLACEMENTS, config_path: Optional[str] = None,
                  progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Measure; return the report (``bench_cameras.json``). ``cpu_cameras`` 0: no CPU-engine runs."""
    say = progress or (lambda s: None)
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    cpu_cameras = (2 if quick else CPU_CAMERAS) if cpu_cameras is None else cpu_cameras
    load(config_path)  # a bad config fails now, in one line

    def base_fake() -> Any:
        return load(config_path)

    def base_cpu() -> Any:
        cfg = apply_overrides(load(config_path), profile=PROFILE, engine="cpu", display="none")
        shared = os.path.normpath(os.path.join(REPO, SHARED_MODELS))
        if os.path.isdir(shared) and shared not in cfg.models.paths:
            cfg.models.paths.append(shared)
        return cfg

    t0 = time.monotonic()
    errors: Dict[str, str] = {}
    result: Dict[str, Any] = {"machine": dict(machine_info(), cpu_model=cpu_model())}
    result["fake"] = bench_fake(base_fake, placements, cameras, frames or (QUICK_FRAMES if quick else FRAMES),
                                repeats, say, errors) if placements and cameras else {}
    result["cpu"] = bench_cpu(base_cpu, cpu_cameras, cpu_frames or (QUICK_CPU_FRAMES if quick else CPU_FRAMES),
                              repeats, say, errors) if cpu_cameras else {}
    result["settings"] = {
        "quick": quick, "elapsed_s": round(time.monotonic() - t0, 1), "load_avg_end": machine_info()["load_avg"],
        "goals": {"each_fps": goals.EACH_FPS, "under_capacity": "30 N <= %.2f x bound" % goals.UNDER,
                  "total_ratio": goals.TOTAL_RATIO, "fair_ratio": goals.FAIR_RATIO, "p99_ratio": goals.P99_RATIO,
                  "cpu_cost_ratio": goals.CPU_COST_RATIO, "served_ratio": goals.SERVED_RATIO},
        "notes": ["fps: completed (and partial) frames per second from the go to the last result; camera fps "
                  "likewise per camera; total = every camera's frames over the run's window",
                  "cpu: user + system CPU of this process and every process below it, sampled every 20 ms, over "
                  "the same window; core-ms/frame = that CPU in ms over the frames completed",
                  "bound: the most frames per second the run's placement's fake devices allow at 1 face "
                  "(plan.placement.device_bound)",
                  "lost: frames a camera captured that were neither completed, partial nor dropped",
                  "wrong: faces matched to the synthetic truth with the wrong expression, where FER runs on the "
                  "fake engine (a real CPU model is not judged on drawn faces)"]}
    result["errors"] = errors
    return result


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cameras", help="1 to N cameras in one pipeline: per-camera FPS, latency, cost per frame",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer frames, one round, 2 CPU cameras (all placements)")
    p.add_argument("--cameras", type=int, default=CAMERAS, help="fake engine: 1 to this many cameras (default %d)"
                   % CAMERAS)
    p.add_argument("--cpu-cameras", type=int, help="CPU engine: 1 to this many demo-clip cameras (default %d, "
                   "--quick 2; 0: none)" % CPU_CAMERAS)
    p.add_argument("--frames", type=int, help="fake engine: frames per camera (default %d, --quick %d)"
                   % (FRAMES, QUICK_FRAMES))
    p.add_argument("--cpu-frames", type=int, help="CPU engine: frames per camera and of the serial loop "
                   "(default %d, --quick %d)" % (CPU_FRAMES, QUICK_CPU_FRAMES))
    p.add_argument("--repeats", type=int, help="rounds, the median run reported (default %d, --quick %d)"
                   % (REPEATS, QUICK_REPEATS))
    p.add_argument("--placements", default=",".join(PLACEMENTS),
                   help="fake engine: which of one, auto, two (default all; empty: none)")
    p.add_argument("--config", help="config file (default: config.toml beside run.py)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no line per measured run")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./%s)" % DEFAULT_OUT)


def main_args(args: argparse.Namespace) -> int:
    placements = [p.strip() for p in args.placements.split(",") if p.strip()]
    bad = [p for p in placements if p not in PLACEMENTS]
    if bad:
        raise ConfigError("--placements: %s is not one of %s" % (", ".join(bad), ", ".join(PLACEMENTS)))
    for name, v, low in (("--cameras", args.cameras, 0), ("--cpu-cameras", args.cpu_cameras, 0),
                         ("--frames", args.frames, 1), ("--cpu-frames", args.cpu_frames, 1),
                         ("--repeats", args.repeats, 1)):
        if v is not None and v < low:
            raise ConfigError("%s must be at least %d" % (name, low))
    os.makedirs(args.out, exist_ok=True)  # fail now, not after minutes of measuring
    print("bench cameras%s: fake Edge TPU 1-%d cameras (%s), CPU engine 1-%s demo-clip cameras"
          % (" --quick" if args.quick else "", args.cameras, ", ".join(placements) or "none",
             args.cpu_cameras if args.cpu_cameras is not None else (2 if args.quick else CPU_CAMERAS)), flush=True)
    result = bench_cameras(quick=args.quick, cameras=args.cameras, cpu_cameras=args.cpu_cameras, frames=args.frames,
                           cpu_frames=args.cpu_frames, repeats=args.repeats, placements=placements,
                           config_path=args.config,
                           progress=(lambda s: print("  " + s, flush=True)) if args.progress else None)
    print()
    print(goals.render(result))
    write_report(args.out, OUT_NAME, result)
    for p in with_charts(lambda: [charts.cameras_chart(result, os.path.join(args.out, CHART_NAME))]):
        print("wrote %s" % p)
    return 1 if result["errors"] else 0
