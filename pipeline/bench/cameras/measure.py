"""``bench cameras``' measurements: one in-process run of N cameras with the CPU it cost, and the serial loop's
CPU on the same clip.

CPU is the user + system time of this process (every thread) and of every process below it (a FER worker
process, the serial loop's back end), sampled by ``cpu_cost.CpuMeter`` in a thread every ``PERIOD_S``; the
CPU of a window is read between two samples, so that a run's window is what the summary times: from the go to
the last result, leaving out building the pipeline, loading the models and stopping. ``core_ms_per_frame``: the CPU of
the window in milliseconds over the frames completed in it (partial ones included); ``cpu_pct``: that CPU over
the window's wall time (100 = one core).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgepipe.pipeline.bench.cases import Case, case_config
from edgepipe.pipeline.bench.cpu.compare import pipeline_config
from edgepipe.pipeline.bench.cpu.cpu_cost import CpuMeter
from edgepipe.pipeline.bench.cpu.serial_loop import SerialLoop
from edgepipe.pipeline.config.loading import Config
from edgepipe.pipeline.config.sections import CameraConfig
from edgepipe.pipeline.loop import event_loop_run
from edgepipe.pipeline.runner import RunOptions, run

PERIOD_S = 0.02
CAMERA_FPS = 30  # the synthetic cameras' rate (fake engine)
DEMO = "demo"  # the demo clip, paced at its own frame rate (CPU engine)


def camera_names(n: int) -> List[str]:
    return ["cam%d" % (i + 1) for i in range(n)]


def meter() -> CpuMeter:
    """The meter of a run's window: the processes below looked up at every sample, so that one started while
    the pipeline is built (a FER worker loading its model) is counted from the sample that sees it."""
    return CpuMeter(period=PERIOD_S, rescan=1)


def cpu_figures(cpu_s: float, wall_s: float, frames: int) -> Dict[str, Optional[float]]:
    return {"cpu_s": round(cpu_s, 4), "cpu_pct": round(100.0 * cpu_s / wall_s, 1) if wall_s > 0 else None,
            "core_ms_per_frame": round(1000.0 * cpu_s / frames, 3) if frames else None}


def run_measured(cfg: Config, frames: int) -> Dict[str, Any]:
    """One in-process run of ``frames`` captured frames per camera: the runner's summary, with ``cpu``
    (``cpu_figures`` of the window from the go to the last result)."""
    marks: Dict[str, float] = {}

    def ready(_p: Any) -> None:
        marks["go"] = time.monotonic()  # the runner tells the captures to go right after this

    with meter() as m:
        s = event_loop_run(run(cfg, RunOptions(frames=frames), on_ready=ready))
    t0 = marks.get("go", m.samples[0][2])
    t1 = t0 + float(s.get("duration_s") or 0.0)
    done = int(s.get("frames_completed") or 0) + int(s.get("frames_partial") or 0)
    s["cpu"] = cpu_figures(m.cpu_between(t0, t1), t1 - t0, done)
    return s


def fake_config(base: Callable[[], Config], placement: str, cameras: int, profile: Optional[str]) -> Config:
    """``bench pipeline``'s configuration of ``placement`` (one, auto, two) with ``cameras`` paced synthetic
    cameras of 1 face each at ``CAMERA_FPS`` (each its own seed)."""
    cfg = case_config(base, Case("pipeline", 1, placement=placement), "fake", profile)
    cfg.cameras = {name: CameraConfig(source="synthetic:faces=1,fps=%d,seed=%d" % (CAMERA_FPS, i + 1))
                   for i, name in enumerate(camera_names(cameras))}
    return cfg


def cpu_config(base: Config, cameras: int, tag: str) -> Config:
    """``bench pipeline --engine cpu``'s pipeline (every actor in this process, inproc://) with ``cameras``
    cameras each playing the demo clip at its own frame rate."""
    cfg = pipeline_config(base, DEMO, None, tag)
    cfg.cameras = {name: CameraConfig(source=DEMO) for name in camera_names(cameras)}
    return cfg


def run_serial_measured(cfg: Config, source: str, frames: int, warmup: int, pace_fps: float = 0.0) -> Dict[str, Any]:
    """The serial two-process loop (``bench.cpu.serial_loop``, the config's CPU models and threads) on
    ``source``: ``warmup`` frames, then ``frames`` timed ones with the CPU of both processes over them;
    ``pace_fps``: the frames come at that rate, as from a camera (0: as fast as the loop goes)."""
    names = cfg.profile().models("cpu")
    loop = SerialLoop(names.detector, names.fer, threads=cfg.engine.cpu.threads, model_paths=cfg.models.paths,
                      score_threshold=cfg.detector.score_threshold, max_faces=cfg.detector.max_faces)
    try:
        loop.start()
        if warmup:
            loop.run(source, warmup)
        with meter() as m:
            t0 = time.monotonic()
            r = loop.run(source, frames, pace_fps=pace_fps)  # the clip from its first frame, as each camera plays it
            t1 = time.monotonic()
    finally:
        loop.close()
    r["cpu"] = cpu_figures(m.cpu_between(t0, t1), t1 - t0, int(r["frames"]))
    r["backend_exit_code"] = loop.exit_code
    return r


def window(summary: Dict[str, Any]) -> Tuple[int, int]:
    """(frames completed and partial, frames captured) of a run."""
    return (int(summary.get("frames_completed") or 0) + int(summary.get("frames_partial") or 0),
            int(summary.get("frames_captured") or 0))
