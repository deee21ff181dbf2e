"""CPU time per frame (core-ms per frame) for ``bench pipeline --engine cpu``, from process CPU times.

Both sides are counted the same way, over their timed frames only (the warm-up excluded):

- the pipeline: every process of the run, this one (all its threads: the event loop, the engines'
  threads, ZeroMQ's I/O thread) and its child processes (``fer.processes = true``), from the moment the
  recorder has counted ``warmup`` results to its last result; a sampling thread reads the recorder's
  count and the CPU times every ``SAMPLE_S`` seconds, so the window starts and ends on a sample and
  counts the results recorded between the two (the sampler's own cost, a few microseconds per sample,
  is in the figure);
- the serial loop: its front end (this process) and its back end (a child process), from the first timed
  frame to the result of the last.

CPU times come from ``time.process_time()`` for this process and from ``/proc/PID/stat`` (utime + stime,
in clock ticks) for the others; where ``/proc`` is missing a child's time is ``None`` and so is the figure.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

SAMPLE_S = 0.01
THREAD_EVERY = 10
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> Optional[float]:
    """User + system CPU seconds of process ``pid`` so far (its threads included), or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / float(_TICK)  # utime, stime: fields 14 and 15


def child_pids(pid: Optional[int] = None) -> List[int]:
    """The direct children of ``pid`` (this process by default), from /proc; [] where unknown."""
    pid = os.getpid() if pid is None else pid
    out: List[int] = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return out


class TreeCpu:
    """CPU seconds of this process and of its live children (their own children not included); the
    children are looked up again every ``rescan`` calls (a /proc walk costs more than a sample)."""

    def __init__(self, rescan: int = 50) -> None:
        self.rescan, self.calls, self.children = rescan, 0, []  # type: int, int, List[int]

    def __call__(self) -> float:
        if self.calls % self.rescan == 0:
            self.children = child_pids()
        self.calls += 1
        total = time.process_time()
        for pid in self.children:
            total += proc_cpu_s(pid) or 0.0
        return total


def thread_cpu_s() -> Dict[str, float]:
    """CPU seconds of each live thread of this process, by its Python name (``?<tid>`` for a thread Python
    does not know, such as ZeroMQ's I/O thread or LiteRT's own); {} where /proc is missing."""
    names = {t.native_id: t.name for t in threading.enumerate() if getattr(t, "native_id", None)}
    out: Dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/self/task/%s/stat" % tid, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        name = names.get(int(tid), "?" + tid)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / float(_TICK)
    return out


class RunCpuMeter:
    """Samples (count, CPU seconds) in a thread while a pipeline runs; core-ms per counted frame.

    ``count`` is read from the sampling thread: a plain attribute read (an int) of the recorder."""

    def __init__(self, count: Callable[[], int], interval_s: float = SAMPLE_S, threads: bool = False) -> None:
        self.count = count
        self.interval_s = interval_s
        self.threads = threads  # also each thread's CPU, every THREAD_EVERY samples (a /proc walk each)
        self.samples: List[Tuple[int, float, float]] = []  # (count, cpu s, monotonic s)
        self.thread_samples: Dict[int, Dict[str, float]] = {}  # sample index -> CPU s of each thread
        self._tree = TreeCpu()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="benchcpu-meter", daemon=True)

    def start(self) -> "RunCpuMeter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            if self.threads and len(self.samples) % THREAD_EVERY == 0:
                self.thread_samples[len(self.samples)] = thread_cpu_s()
            self.samples.append((int(self.count()), self._tree(), time.monotonic()))
            if self._stop.wait(self.interval_s):
                return

    def per_frame(self, warmup: int, last_t: Optional[float]) -> dict:
        """core-ms per frame over the frames after the first ``warmup``: from the first sample that counts
        ``warmup`` or more to the last sample taken at or before ``last_t`` (the run's last result; later
        samples may see the pipeline stop)."""
        s = self.samples
        if not s or last_t is None:
            return {"core_ms_per_frame": None}
        start = next((x for x in s if x[0] >= warmup), None)
        end = next((x for x in reversed(s) if x[2] <= last_t), None)
        if start is None or end is None or end[0] <= start[0]:
            return {"core_ms_per_frame": None}
        n = end[0] - start[0]
        cpu_ms = (end[1] - start[1]) * 1000.0
        wall = end[2] - start[2]
        out: Dict[str, Any] = {"core_ms_per_frame": round(cpu_ms / n, 3), "cpu_frames": n,
                               "cpu_s": round(cpu_ms / 1000.0, 3),
                               "cores_busy": round(cpu_ms / 1000.0 / wall, 3) if wall > 0 else None}
        i0, i1 = s.index(start), s.index(end)
        marks = [i for i in sorted(self.thread_samples) if i0 <= i <= i1]
        if len(marks) > 1 and s[marks[-1]][0] > s[marks[0]][0]:
            a, b = self.thread_samples[marks[0]], self.thread_samples[marks[-1]]
            nt = s[marks[-1]][0] - s[marks[0]][0]
            per = {k: (v - a.get(k, 0.0)) * 1000.0 / nt for k, v in b.items()}
            out["thread_core_ms_per_frame"] = {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])
                                               if v > 0}
        return out


class PairCpu:
    """CPU seconds of this process (``process_time``) and of one other (``/proc``) between two marks."""

    def __init__(self, other_pid: Optional[int]) -> None:
        self.other_pid = other_pid
        self.t0: Optional[Tuple[float, Optional[float]]] = None
        self.t1: Optional[Tuple[float, Optional[float]]] = None

    def _now(self) -> Tuple[float, Optional[float]]:
        return time.process_time(), (proc_cpu_s(self.other_pid) if self.other_pid else None)

    def mark_start(self) -> None:
        self.t0 = self._now()

    def mark_end(self) -> None:
        self.t1 = self._now()

    def per_frame(self, frames: int) -> dict:
        if self.t0 is None or self.t1 is None or frames <= 0:
            return {"core_ms_per_frame": None}
        front = (self.t1[0] - self.t0[0]) * 1000.0
        back: Any = None
        if self.t0[1] is not None and self.t1[1] is not None:
            back = (self.t1[1] - self.t0[1]) * 1000.0
        return {"core_ms_per_frame": round((front + back) / frames, 3) if back is not None else None,
                "front_core_ms_per_frame": round(front / frames, 3),
                "back_core_ms_per_frame": round(back / frames, 3) if back is not None else None}
