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

Python 3.9 compatible.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from .config import Config, ConfigError, apply_overrides, endpoint_names, load

log = logging.getLogger("edgepipe.bench")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = "bench-out"
SHARED_MODELS = os.path.join("..", "shared", "assets", "models")

DEFAULT_FRAMES, QUICK_FRAMES = 300, 100
DEFAULT_WARMUP, QUICK_WARMUP = 30, 10
DEFAULT_REPEATS, QUICK_REPEATS = 3, 1
FACES = (1, 3, 5)
WORKERS = (1, 2, 4)
COMPARE_FACES = 3  # (b), (c) and the JPEG serial loop run at this many faces ...
COMPARE_WORKERS = 2  # ... with this FER pool size


# ---------------------------------------------------------------- machine description

def _git(*args: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git"] + list(args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", None) or getattr(mod, "pyzmq_version", lambda: None)() or "")


def machine_info() -> Dict[str, Any]:
    """What a reader needs to compare numbers from two runs."""
    try:
        usable = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load_avg: Optional[List[float]] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load_avg = None
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_avg": load_avg,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "versions": {m: _version(m) for m in ("numpy", "cv2", "zmq", "msgspec", "uvloop")},
    }


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _charts(fn: Callable[[], List[str]]) -> List[str]:
    """Draw charts, or say clearly why not (matplotlib is optional)."""
    from . import charts

    if not charts.available():
        print("note: no PNG charts written: %s (the JSON has every number)" % charts.INSTALL_HINT)
        return []
    return fn()


# ---------------------------------------------------------------- bench models

def bench_models_main(args: argparse.Namespace) -> int:
    from models import bench as mbench
    from models.engine import EngineError
    from models.fetch import ENV_PATH

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
    report = {"machine": machine_info(),
              "settings": {"runs": args.runs, "warmup": args.warmup, "threads": threads,
                           "engines": kinds, "model_paths": paths, ENV_PATH: os.environ.get(ENV_PATH, "")},
              "rows": rows, "errors": errors}
    _write_json(path, report)
    print("wrote %s" % path)
    if rows and args.cache:
        from .placement import load_table, save_table, table_path
        merged = {r["model"]: r for r in (_read_json(table_path()).get("rows", []))}
        merged.update({r["model"]: r for r in rows})  # a run of some models keeps the others' rows
        report["rows"] = list(merged.values())
        print("wrote %s (the table `auto` placement reads: %d models)"
              % (save_table(report), len(load_table())))
    if rows:
        from . import charts
        for p in _charts(lambda: [charts.models_chart(rows, os.path.join(args.out, "bench_models.png"))]):
            print("wrote %s" % p)
    return 1 if errors else 0


# ---------------------------------------------------------------- bench pipeline: configurations

PLACEMENTS = ("one", "auto", "two")  # fake engine: every role on one device; auto (FER may go to the CPU); 2 devices
TWO_DEVICE_WORKERS = (2, 4)


@dataclass(frozen=True)
class Case:
    kind: str  # "pipeline" | "serial"
    faces: int
    workers: int = 0  # FER pool size (pipeline only)
    encoder: str = "raw"
    transport: str = "inproc"
    placement: str = "one"  # one | auto | two (see PLACEMENTS); "one" is every role on pipeline.engine
    profile: str = ""  # "" = the benchmark's first profile

    @property
    def id(self) -> str:
        tail = ("" if self.placement == "one" else ":" + self.placement) + (":" + self.profile if self.profile else "")
        if self.kind == "serial":
            return "serial:f%d:%s%s" % (self.faces, self.encoder, tail)
        return "pipeline:f%d:w%d:%s:%s%s" % (self.faces, self.workers, self.encoder, self.transport, tail)


def plan(faces: Sequence[int] = FACES, workers: Sequence[int] = WORKERS, engine: str = "fake",
         profiles: Sequence[str] = ("",), placements: Sequence[str] = PLACEMENTS) -> List[Case]:
    """Every configuration of one benchmark, in run order.

    The first profile gets every comparison; on the fake engine each profile
    also runs with ``auto`` placement and on two devices (``placements``
    chooses which of one, auto, two run).
    """
    cases = _plan(faces, workers, engine, profiles)
    return [c for c in cases if c.placement in placements or engine != "fake"]


def _plan(faces: Sequence[int], workers: Sequence[int], engine: str, profiles: Sequence[str]) -> List[Case]:
    cases: List[Case] = []
    for f in faces:
        cases += [Case("pipeline", f, w) for w in workers]
        cases.append(Case("serial", f))
    cf = COMPARE_FACES if COMPARE_FACES in faces else faces[len(faces) // 2]
    cw = COMPARE_WORKERS if COMPARE_WORKERS in workers else workers[len(workers) // 2]
    extra = [Case("pipeline", cf, cw), Case("pipeline", cf, cw, encoder="jpeg"),
             Case("pipeline", cf, cw, transport="ipc"), Case("pipeline", cf, cw, transport="group"),
             Case("serial", cf, encoder="jpeg")]
    cases += [c for c in extra if c not in cases]
    if engine != "fake":
        return cases
    for i, prof in enumerate(profiles):
        prof = prof if i else ""
        if i:
            for f in faces:
                cases += [Case("pipeline", f, w, profile=prof) for w in workers]
        for f in faces:
            cases.append(Case("pipeline", f, cw, placement="auto", profile=prof))
        for f in faces:
            cases += [Case("pipeline", f, w, placement="two", profile=prof) for w in TWO_DEVICE_WORKERS]
    return cases


def tpu_python() -> str:
    """The TPU venv's Python (``.venv-tpu``, Python 3.9 with LiteRT) if it exists, else this one."""
    venv = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-tpu", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def ipc_dir() -> str:
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()  # short: ipc paths max ~100 bytes
    return os.path.join(base, "edgepipe-bench-%d" % os.getpid())


def case_config(base: Callable[[], Config], case: Case, engine: str, profile: Optional[str]) -> Config:
    """A fresh typed config for one configuration; never a TCP port."""
    cfg = base()
    cfg = apply_overrides(cfg, profile=case.profile or profile, engine=engine, display="none",
                          source="synthetic:faces=%d,fps=0" % case.faces)
    cfg.placement.detector = cfg.placement.fer = cfg.placement.classifier = ""
    if case.placement == "auto":
        cfg.pipeline.engine = "auto"
        cfg.engine.auto.accelerator = "fake"
        cfg.engine.auto.faces = case.faces
        cfg.engine.fake.devices = 1
    elif case.placement == "two":
        cfg.engine.fake.devices = 2
    else:
        cfg.engine.fake.devices = 1
    shared = os.path.normpath(os.path.join(REPO, SHARED_MODELS))
    if os.path.isdir(shared) and shared not in cfg.models.paths:
        cfg.models.paths.append(shared)  # the CPU files `auto` may choose (FER112)
    cfg.encoder.format = case.encoder
    cfg.groups = {}  # every actor in this process, but for the "group" transport
    if case.transport == "group":
        # the detector and the FER pool in a child process (the TPU venv's Python when there is one):
        # the interpreter hop of the dual-Python set-up, over ipc://
        from .config import GroupConfig
        cfg.groups = {"tpu": GroupConfig(actors=["detector", "fer"], python=tpu_python())}
    if case.workers:
        cfg.fer.workers = case.workers
    for name in endpoint_names():
        if case.transport == "ipc":
            value = "ipc://%s/%s" % (ipc_dir(), name)
        elif case.transport == "group":
            value = "inproc://bench-%s" % name  # the runner makes the cross-process ones ipc://
        else:
            value = "inproc://bench-%s" % name
        setattr(cfg.endpoints, name, value)
    return cfg


# ---------------------------------------------------------------- bench pipeline: one measurement

def _ms(values: Sequence[float], q: float) -> float:
    from actors.stats import percentile
    return round(percentile(values, q), 3)


def run_pipeline_case(cfg: Config, frames: int) -> Dict[str, Any]:
    """The runner's summary of one in-process run of ``frames`` captured frames."""
    from .cli import event_loop_run  # the same event loop (uvloop when installed) as `run.py`
    from .runner import RunOptions, run

    return event_loop_run(run(cfg, RunOptions(frames=frames)))


def run_serial_case(cfg: Config, frames: int, warmup: int) -> Dict[str, Any]:
    """The reference project's loop: every stage of one frame, one after the other, in one thread.

    Read the source, encode (``cfg.encoder.format``), decode, detect, crop and
    run FER on each face in turn, with the engines the pipeline would build.
    ``warmup`` frames go through the loop first and are not timed.
    """
    import cv2

    from actors.frame_stage import decode_image
    from actors.sources import make_source
    from bus.messages import EncodedFrame
    from models import manifest

    from .build import engine_settings
    from .serial_loop import load_models

    names = cfg.profile().models(cfg.pipeline.engine)
    if not (names.detector and names.fer):
        raise ConfigError("the serial baseline needs a profile with a detector and a FER model (fd+fer64, fd+fer112)")
    settings = engine_settings(cfg)
    det_spec, fer_spec = manifest.get(names.detector), manifest.get(names.fer)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.encoder.jpeg_quality)]
    engines = []
    source = None
    try:
        detector, fer = load_models(settings, det_spec, fer_spec, engines, cfg.detector.score_threshold,
                                    cfg.detector.max_faces)
        source = make_source(cfg.pipeline.source, loop=cfg.capture.loop)
        source.open()
        stages: Dict[str, List[float]] = {k: [] for k in ("read", "encode", "decode", "detect", "fer", "backend")}
        latency: List[float] = []
        n_faces = 0
        done = 0
        t_start = time.monotonic()
        for i in range(warmup + frames):
            if i == warmup:
                t_start = time.monotonic()
                for v in stages.values():
                    v.clear()
                latency.clear()
                n_faces = 0
            t0 = time.monotonic()
            item = source.read()
            if item is None:
                break
            image, truth = item
            t1 = time.monotonic()  # the pipeline's capture time stamp is taken here too
            h, w = image.shape[:2]
            if cfg.encoder.format == "jpeg":
                ok, buf = cv2.imencode(".jpg", image, params)
                if not ok:
                    raise ValueError("JPEG encoding failed")
                payload: Any = buf.tobytes()
            else:
                payload = image
            t2 = time.monotonic()
            img = decode_image(EncodedFrame(i, t1, cfg.encoder.format, w, h, payload))
            t3 = time.monotonic()
            faces = detector.detect(img)
            crops = [fer.prepare(img, f) for f in faces]
            t4 = time.monotonic()
            for crop in crops:  # one face after the other, as the reference does
                fer.classify(crop)
            t5 = time.monotonic()
            for key, a, b in (("read", t0, t1), ("encode", t1, t2), ("decode", t2, t3), ("detect", t3, t4),
                              ("fer", t4, t5), ("backend", t2, t5)):
                stages[key].append((b - a) * 1000.0)
            latency.append((t5 - t1) * 1000.0)
            n_faces += len(faces)
            if i >= warmup:
                done += 1
        elapsed = time.monotonic() - t_start
    finally:
        for e in engines:
            e.close()
        if source is not None:
            source.close()
    backend_ms = sum(stages["backend"])
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
        "latency_ms": {"p50": _ms(latency, 50), "p99": _ms(latency, 99),
                       "max": round(max(latency), 3) if latency else 0.0},
        "faces": {"faces": n_faces, "frames": done},
        "stages_ms_p50": {k: _ms(v, 50) for k, v in stages.items()},
        "models": {"detector": det_spec.name, "fer": fer_spec.name},
    }


def _record(case: Case, summary: Dict[str, Any]) -> Dict[str, Any]:
    """The numbers of one run that the report keeps."""
    rec: Dict[str, Any] = {k: summary.get(k) for k in (
        "fps", "duration_s", "frames_captured", "frames_completed", "frames_partial", "dropped_total",
        "dropped_by_reason", "unaccounted", "latency_ms", "models")}
    rec["face_stats"] = summary.get("faces")
    rec["placement"] = summary.get("placement")
    rec["devices"] = summary.get("devices") or {}
    captured = summary.get("frames_captured") or 0
    rec["drop_rate"] = round(summary.get("dropped_total", 0) / captured, 4) if captured else 0.0
    if case.kind == "pipeline":
        actors = summary.get("actors", {})
        rec["busy_ms_p50"] = {name: a["busy_ms_p50"] for name, a in actors.items()
                              if name not in ("recorder", "aggregator")}
        cap = actors.get("capture", {})
        rec["offered_fps"] = cap.get("fps")  # frames the unpaced source produced per second
        rec["drained"] = summary.get("drained")
        rec["leaked_sockets"] = summary.get("leaked_sockets", [])
    else:
        rec["busy_ms_p50"] = summary["stages_ms_p50"]
        rec["backend_fps"] = summary["backend_fps"]
        rec["offered_fps"] = summary["fps"]
    return rec


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
                runs[case.id].append(_record(case, s))
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


def render_memory(rows: Sequence[Dict[str, Any]]) -> str:
    lines = ["whole-system RSS (peak of every process; run.py in a fresh process, fake engine, 3 faces):"]
    for r in rows:
        if r.get("error"):
            lines.append("  %s, %s: failed: %s" % (r["profile"], r["layout"], r["error"]))
        else:
            lines.append("  %s, %s: %.0f MB (%s)" % (r["profile"], r["layout"], r["rss_mb"], ", ".join(
                "%s %.0f" % kv for kv in r["by_process"].items())))
    return "\n".join(lines)


def _median_run(rs: List[Dict[str, Any]]) -> Dict[str, Any]:
    ordered = sorted(rs, key=lambda r: r["fps"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["fps_runs"] = [r["fps"] for r in rs]
    out["fps_spread"] = round(max(out["fps_runs"]) - min(out["fps_runs"]), 2)
    return out


def report(cases: List[Case], runs: Dict[str, List[Dict[str, Any]]], errors: Dict[str, str], *, engine: str,
           frames: int, warmup: int, repeats: int, profile: str, base_cfg: Config, elapsed: float,
           profiles: Sequence[str] = ()) -> Dict[str, Any]:
    from models import manifest

    out_cases = []
    by_id: Dict[str, Dict[str, Any]] = {}
    for c in cases:
        entry: Dict[str, Any] = {"id": c.id, "kind": c.kind, "faces": c.faces, "workers": c.workers or None,
                                 "encoder": c.encoder, "transport": c.transport if c.kind == "pipeline" else None,
                                 "placement_case": c.placement, "profile": c.profile or profile}
        if runs[c.id]:
            entry.update(_median_run(runs[c.id]))
        else:
            entry.update({"fps": None, "error": errors.get(c.id, "not run")})
        out_cases.append(entry)
        by_id[c.id] = entry
    base = [c for c in cases if c.placement == "one" and not c.profile]  # the comparisons' cases
    faces = sorted({c.faces for c in cases})
    workers = sorted({c.workers for c in base if c.kind == "pipeline"})
    ids = {"pipeline": {"f%d-w%d" % (c.faces, c.workers): c.id for c in base
                        if c.kind == "pipeline" and c.encoder == "raw" and c.transport == "inproc"},
           "serial": {"f%d" % c.faces + ("" if c.encoder == "raw" else "-" + c.encoder): c.id
                      for c in base if c.kind == "serial"}}
    base_ids = {c.id for c in base}
    names = base_cfg.profile().models(engine)
    latency = {}
    if engine == "fake":
        for n in (names.detector, names.fer, names.classifier):
            if n:
                latency[n] = base_cfg.engine.fake.latency_ms.get(n, manifest.get(n).tpu_ms)
    return {
        "machine": machine_info(),
        "tpu_python": tpu_python(),
        "settings": {"engine": engine, "profile": profile, "frames": frames, "warmup": warmup, "repeats": repeats,
                     "source": "synthetic:faces=K,fps=0", "fake_latency_ms": latency or None,
                     "max_in_flight": getattr(base_cfg.capture, "max_in_flight", None),
                     "elapsed_s": round(elapsed, 1),
                     "notes": ["fps: completed (and partial) frames per second, from the first frame to the last "
                               "result; unpaced source: the capture waits for results (at most max_in_flight "
                               "frames in flight), so drops are expected to be 0; dropped counts any there were",
                               "fps is the median over the repeats (fps_runs lists them all)",
                               "serial: the reference loop in one thread (read, encode, decode, detect, FER per "
                               "face); backend_fps leaves out read and encode, as the reference's own figure does"]},
        "grid": {"faces": faces, "workers": workers},
        "ids": ids,
        "cases": out_cases,
        "comparisons": comparisons({k: v for k, v in by_id.items() if k in base_ids}, ids, faces, workers),
        "devices": device_rows(out_cases, base_cfg) if engine == "fake" else [],
        "profiles": list(profiles) or [profile],
        "errors": errors,
    }


def device_rows(cases: List[Dict[str, Any]], cfg: Config) -> List[Dict[str, Any]]:
    """Per pipeline run on the fake engine: the bounds of one device and of its placement, FPS / bound,
    busy % per device and latency; and the ratio to the same profile, faces and pool on one device."""
    from .placement import device_bound

    one: Dict[Any, Dict[str, Any]] = {}
    rows = []
    for c in cases:
        if c["kind"] != "pipeline" or c["encoder"] != "raw" or c["transport"] != "inproc" or not c.get("fps"):
            continue
        placement = c.get("placement") or {}
        b_case = device_bound(cfg, placement, c["faces"])
        row = {"id": c["id"], "profile": c["profile"], "placement": c["placement_case"], "faces": c["faces"],
               "workers": c["workers"], "fps": c["fps"], "bound_fps": round(b_case, 1) if b_case else None,
               "eta": round(c["fps"] / b_case, 3) if b_case else None,
               "where": {r: ", ".join(p["devices"]) or p["engine"] for r, p in placement.items()},
               "busy_pct": {d: v.get("busy_pct") for d, v in (c.get("devices") or {}).items()},
               "switches": sum(int(v.get("switches", 0)) for v in (c.get("devices") or {}).values()),
               "latency_ms": c.get("latency_ms")}
        all_on_one = {r: {"engine": "fake", "model": p["model"], "devices": ["fake:0"]} for r, p in placement.items()}
        b1 = device_bound(cfg, all_on_one, c["faces"])  # the same models, every one on one device
        row["bound_one_fps"] = round(b1, 1) if b1 else None
        row["eta_one"] = round(c["fps"] / b1, 3) if b1 else None
        if c["placement_case"] == "one":
            one[(c["profile"], c["faces"], c["workers"])] = row
        rows.append(row)
    for row in rows:
        base = one.get((row["profile"], row["faces"], row["workers"])) or one.get(
            (row["profile"], row["faces"], COMPARE_WORKERS))
        row["vs_one_device"] = round(row["fps"] / base["fps"], 3) if base and base.get("fps") else None
    return rows


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def comparisons(by_id: Dict[str, Dict[str, Any]], ids: Dict[str, Dict[str, str]], faces: Sequence[int],
                workers: Sequence[int]) -> Dict[str, Any]:
    def fps(cid: Optional[str]) -> Optional[float]:
        return by_id[cid].get("fps") if cid in by_id else None

    out: Dict[str, Any] = {"fer_pool": [], "pipeline_vs_serial": []}
    if not workers:  # no every-role-on-one-engine runs (--placements without "one"): nothing to compare
        return out
    w0 = workers[0]
    out["fer_pool"] = [{"faces": f, "workers": w, "fps": fps(ids["pipeline"].get("f%d-w%d" % (f, w))),
                        "vs_%d_worker" % w0: _ratio(fps(ids["pipeline"].get("f%d-w%d" % (f, w))),
                                                    fps(ids["pipeline"].get("f%d-w%d" % (f, w0))))}
                       for f in faces for w in workers]
    for key, attr, a, b in (("encoder", "encoder", "raw", "jpeg"), ("transport", "transport", "inproc", "ipc"),
                            ("group", "transport", "inproc", "group")):
        pairs = [(cid, e) for cid, e in by_id.items() if e["kind"] == "pipeline"]
        other = next((cid for cid, e in pairs if e[attr] == b), None)
        if other is None:
            continue
        o = by_id[other]
        same = "transport" if attr == "encoder" else "encoder"
        base = next((cid for cid, e in pairs if e[attr] == a and e["faces"] == o["faces"]
                     and e["workers"] == o["workers"] and e[same] == o[same]), None)
        if base is None:
            continue
        out[key] = {"faces": o["faces"], "workers": o["workers"], "base": base, "other": other,
                    "base_label": a, "other_label": b, "base_fps": fps(base), "other_fps": fps(other),
                    "ratio": _ratio(fps(other), fps(base)),
                    "latency_p50_ms": [by_id[base].get("latency_ms", {}).get("p50"),
                                       o.get("latency_ms", {}).get("p50")]}
    rows = []
    for skey, sid in ids["serial"].items():
        s = by_id[sid]
        cands = [e for e in by_id.values() if e["kind"] == "pipeline" and e["faces"] == s["faces"]
                 and e["encoder"] == s["encoder"] and e["transport"] == "inproc" and e.get("fps")]
        if not cands or not s.get("fps"):
            continue
        best = max(cands, key=lambda e: e["fps"])
        rows.append({"faces": s["faces"], "encoder": s["encoder"], "pipeline": best["id"],
                     "pipeline_workers": best["workers"], "pipeline_fps": best["fps"],
                     "pipeline_latency_p50_ms": best["latency_ms"]["p50"], "serial": sid,
                     "serial_fps": s["fps"], "serial_backend_fps": s.get("backend_fps"),
                     "serial_latency_p50_ms": s["latency_ms"]["p50"], "speedup": _ratio(best["fps"], s["fps"])})
    out["pipeline_vs_serial"] = rows
    return out


# ---------------------------------------------------------------- printing

def _busy(e: Dict[str, Any]) -> str:
    b = e.get("busy_ms_p50") or {}
    if e["kind"] == "serial":
        return " ".join("%s %.1f" % (k, b.get(k, 0.0)) for k in ("read", "encode", "decode", "detect", "fer"))
    fer = [v for k, v in b.items() if k.startswith("fer-")]
    parts = [("cap", b.get("capture")), ("enc", b.get("encoder")), ("det", b.get("detector")),
             ("fer", statistics.median(fer) if fer else None)]
    return " ".join("%s %.1f" % (k, v) for k, v in parts if v is not None)


def render_devices(result: Dict[str, Any]) -> str:
    """The fake Edge TPU table: per profile, placement, faces and pool, FPS against the device bound."""
    from models.bench import text_table

    out: List[str] = []
    for prof in result.get("profiles", []):
        rows = [r for r in result.get("devices", []) if r["profile"] == prof]
        if not rows:
            continue
        out.append("%s on the fake Edge TPU (B = the one-device bound; bound = that of the run's placement)"
                   % prof)
        cells = []
        for r in rows:
            lat = r.get("latency_ms") or {}
            where = "; ".join("%s %s" % kv for kv in sorted(r["where"].items()))
            cells.append([r["placement"], str(r["faces"]), str(r["workers"]), where,
                          "%.1f" % r["bound_one_fps"] if r.get("bound_one_fps") else "n/a",
                          "%.1f" % r["bound_fps"] if r.get("bound_fps") else "n/a", "%.1f" % r["fps"],
                          "%.2f" % r["eta_one"] if r.get("eta_one") else "n/a",
                          "%.2f" % r["eta"] if r.get("eta") else "n/a",
                          "x%.2f" % r["vs_one_device"] if r.get("vs_one_device") else "n/a",
                          " ".join("%.0f" % v for _, v in sorted(r["busy_pct"].items())) or "-",
                          str(r["switches"]), "%.1f" % lat.get("p50", 0), "%.1f" % lat.get("p99", 0)])
        out += text_table(["placement", "faces", "FER", "where", "B", "bound", "FPS", "FPS/B", "FPS/bound",
                       "vs one", "busy %", "switches", "p50 ms", "p99 ms"], cells)
        out.append("")
    return "\n".join(out)


def render_pipeline(result: Dict[str, Any]) -> str:
    from models.bench import text_table

    head = ["configuration", "FPS", "runs", "done/captured", "dropped", "p50 ms", "p99 ms", "busy p50 ms"]
    lines: List[List[str]] = []
    for e in result["cases"]:
        if e.get("fps") is None:
            lines.append([e["id"], "failed", "", "", "", "", "", e.get("error", "")])
            continue
        lines.append([e["id"], "%.1f" % e["fps"], "/".join("%.0f" % v for v in e["fps_runs"]),
                      "%d/%d" % (e["frames_completed"], e["frames_captured"]),
                      "%d (%.0f%%)" % (e["dropped_total"], 100 * e["drop_rate"]),
                      "%.1f" % e["latency_ms"]["p50"], "%.1f" % e["latency_ms"]["p99"], _busy(e)])
    out = text_table(head, lines)
    comp = result["comparisons"]
    out.append("")
    by_faces: Dict[int, List[Dict[str, Any]]] = {}
    for r in comp["fer_pool"]:
        by_faces.setdefault(r["faces"], []).append(r)
    w0 = (result["grid"]["workers"] or [0])[0]
    for f, rs in sorted(by_faces.items()):
        out.append("(a) FER pool, %d face%s: " % (f, "s" if f > 1 else "") + ", ".join(
            "%d worker%s %s FPS%s" % (r["workers"], "s" if r["workers"] > 1 else "",
                                      "%.1f" % r["fps"] if r["fps"] else "n/a",
                                      " (x%.2f)" % r["vs_%d_worker" % w0] if r["workers"] != w0 and
                                      r.get("vs_%d_worker" % w0) else "") for r in rs))
    for key, tag in (("encoder", "(b) encoder"), ("transport", "(c) endpoints"),
                     ("group", "(e) TPU actors in a child process %s" % result.get("tpu_python", ""))):
        c = comp.get(key)
        if c:
            out.append("%s (%d faces, %d FER workers): %s %.1f FPS vs %s %.1f FPS = x%s; latency p50 %.1f vs %.1f ms"
                       % (tag, c["faces"], c["workers"], c["other_label"], c["other_fps"] or 0, c["base_label"],
                          c["base_fps"] or 0, "%.2f" % c["ratio"] if c["ratio"] else "n/a",
                          c["latency_p50_ms"][1] or 0, c["latency_p50_ms"][0] or 0))
    for r in comp["pipeline_vs_serial"]:
        out.append("(d) %d face%s, %s: pipeline %.1f FPS (%d FER worker%s) vs serial %.1f FPS = %.2f times; "
                   "latency p50 %.1f vs %.1f ms; serial back-end only %.1f FPS"
                   % (r["faces"], "s" if r["faces"] > 1 else "", r["encoder"], r["pipeline_fps"],
                      r["pipeline_workers"], "s" if r["pipeline_workers"] > 1 else "", r["serial_fps"], r["speedup"] or 0, r["pipeline_latency_p50_ms"],
                      r["serial_latency_p50_ms"], r["serial_backend_fps"] or 0))
    if result.get("errors"):
        out.append("failed: " + "; ".join("%s: %s" % kv for kv in result["errors"].items()))
    return "\n".join(out)


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
        from .bench_cpu import main_cpu
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
    path = os.path.join(args.out, "bench_pipeline.json")
    _write_json(path, result)
    print("\nwrote %s" % path)
    from . import charts
    for p in _charts(lambda: charts.pipeline_charts(result, args.out)):
        print("wrote %s" % p)
    return 1 if result["errors"] else 0


# ---------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="run.py bench", description="Measure models alone and the whole pipeline; "
                                 "write JSON and PNG charts.")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="what", metavar="models|pipeline|bus|detectors")
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
    from . import bench_bus
    bench_bus.add_parser(sub)
    from . import bench_detectors
    bench_detectors.add_parser(sub)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from .cli import setup_logging

    setup_logging(args.verbose)
    from models.engine import EngineError

    try:
        if args.what == "models":
            return bench_models_main(args)
        if args.what == "bus":
            from .bench_bus import main_args
            return main_args(args)
        if args.what == "detectors":
            from .bench_detectors import main_args as detectors_main
            return detectors_main(args)
        return bench_pipeline_main(args)
    except (ConfigError, EngineError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
