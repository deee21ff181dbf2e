"""``bench cameras``' measurements: one in-process run of N cameras with the CPU it cost, and the serial loop's
CPU on the same clip.

CPU is the user + system time of this process (every thread) and of every process below it (a FER worker
process, the serial loop's back end), sampled by ``CpuMeter`` in a thread every ``PERIOD_S``; the CPU of a
window is read between two samples, so that a run's window is what the summary times: from the go to the last
result, leaving out building the pipeline, loading the models and stopping. ``core_ms_per_frame``: the CPU of
the window in milliseconds over the frames completed in it (partial ones included); ``cpu_pct``: that CPU over
the window's wall time (100 = one core).
"""
from __future__ import annotations

import bisect
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgepipe.pipeline.bench.cases import Case, case_config
from edgepipe.pipeline.bench.cpu.compare import pipeline_config
from edgepipe.pipeline.bench.cpu.serial_loop import SerialLoop
from edgepipe.pipeline.config.loading import Config
from edgepipe.pipeline.config.sections import CameraConfig
from edgepipe.pipeline.loop import event_loop_run
from edgepipe.pipeline.runner import RunOptions, run

PERIOD_S = 0.02
CAMERA_FPS = 30  # the synthetic cameras' rate (fake engine)
DEMO = "demo"  # the demo clip, paced at its own frame rate (CPU engine)
PROC = "/proc"


def camera_names(n: int) -> List[str]:
    return ["cam%d" % (i + 1) for i in range(n)]


def _stat_cpu_s(pid: int, tick: float) -> float:
    """User + system CPU seconds of one process from /proc (0.0 when it is gone)."""
    try:
        with open(os.path.join(PROC, str(pid), "stat"), encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return 0.0


def _descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (Linux: /proc/PID/task/TID/children); none where /proc has no such file."""
    out: List[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(os.path.join(PROC, str(p), "task"))
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(os.path.join(PROC, str(p), "task", tid, "children"), encoding="ascii") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def tree_cpu_s() -> float:
    """CPU seconds so far of this process (every thread) and of the processes below it."""
    tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    return time.process_time() + sum(_stat_cpu_s(pid, tick) for pid in _descendants(os.getpid()))


class CpuMeter:
    """Samples ``tree_cpu_s`` in a thread every ``period`` seconds while it is open (``with``); ``cpu_between``
    reads the CPU of a window from the samples (linear between the two around each end)."""

    def __init__(self, period: float = PERIOD_S, read: Callable[[], float] = tree_cpu_s) -> None:
        self.period = period
        self.read = read
        self.times: List[float] = []
        self.cpu: List[float] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def sample(self) -> None:
        cpu = self.read()
        self.times.append(time.monotonic())
        self.cpu.append(cpu)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self) -> "CpuMeter":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="bench-cpu-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def cpu_at(self, t: float) -> float:
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return self.cpu[0]
        if i >= len(self.times):
            return self.cpu[-1]
        t0, t1, c0, c1 = self.times[i - 1], self.times[i], self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    def cpu_between(self, t0: float, t1: float) -> float:
        return max(0.0, self.cpu_at(t1) - self.cpu_at(t0))


def cpu_figures(cpu_s: float, wall_s: float, frames: int) -> Dict[str, Optional[float]]:
    return {"cpu_s": round(cpu_s, 4), "cpu_pct": round(100.0 * cpu_s / wall_s, 1) if wall_s > 0 else None,
            "core_ms_per_frame": round(1000.0 * cpu_s / frames, 3) if frames else None}


def run_measured(cfg: Config, frames: int) -> Dict[str, Any]:
    """One in-process run of ``frames`` captured frames per camera: the runner's summary, with ``cpu``
    (``cpu_figures`` of the window from the go to the last result)."""
    marks: Dict[str, float] = {}

    def ready(_p: Any) -> None:
        marks["go"] = time.monotonic()  # the runner tells the captures to go right after this

    with CpuMeter() as meter:
        s = event_loop_run(run(cfg, RunOptions(frames=frames), on_ready=ready))
    t0 = marks.get("go", meter.times[0])
    t1 = t0 + float(s.get("duration_s") or 0.0)
    done = int(s.get("frames_completed") or 0) + int(s.get("frames_partial") or 0)
    s["cpu"] = cpu_figures(meter.cpu_between(t0, t1), t1 - t0, done)
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


def run_serial_measured(cfg: Config, source: str, frames: int, warmup: int) -> Dict[str, Any]:
    """The serial two-process loop (``bench.cpu.serial_loop``, the config's CPU models and threads) on
    ``source``: ``warmup`` frames, then ``frames`` timed ones with the CPU of both processes over them."""
    names = cfg.profile().models("cpu")
    loop = SerialLoop(names.detector, names.fer, threads=cfg.engine.cpu.threads, model_paths=cfg.models.paths,
                      score_threshold=cfg.detector.score_threshold, max_faces=cfg.detector.max_faces)
    try:
        loop.start()
        if warmup:
            loop.run(source, warmup)
        with CpuMeter() as meter:
            t0 = time.monotonic()
            r = loop.run(source, frames)  # the clip from its first frame, as each camera plays it
            t1 = time.monotonic()
    finally:
        loop.close()
    r["cpu"] = cpu_figures(meter.cpu_between(t0, t1), t1 - t0, int(r["frames"]))
    r["backend_exit_code"] = loop.exit_code
    return r


def window(summary: Dict[str, Any]) -> Tuple[int, int]:
    """(frames completed and partial, frames captured) of a run."""
    return (int(summary.get("frames_completed") or 0) + int(summary.get("frames_partial") or 0),
            int(summary.get("frames_captured") or 0))
