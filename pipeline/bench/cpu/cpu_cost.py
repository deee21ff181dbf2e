"""CPU time of a process tree for the benchmarks (``bench pipeline --engine cpu``, ``bench cameras``,
``python -m edgepipe.pipeline.bench.cpu.cost``): the one place that reads and samples it.

``CpuMeter`` samples (count, CPU seconds, monotonic seconds) in a thread every ``period`` while it runs
(``start``/``stop`` or ``with``); ``start`` and ``stop`` each take a sample in the caller's thread, so the
first and the last sample bracket what the caller did between them. Two readings of a window:

- ``per_frame(warmup, last_t)`` (``bench pipeline --engine cpu``): every process of the run, this one (all its
  threads: the event loop, the engines' threads, ZeroMQ's I/O thread) and the processes below it
  (``fer.processes = true``), from the first sample whose count (the recorder's results) reaches ``warmup``
  to the last sample at or before the run's last result; the window starts and ends on a sample and counts
  the results recorded between the two (the sampler's own cost, a few microseconds per sample, is in the
  figure); with ``threads``, also each thread's share;
- ``cpu_between(t0, t1)`` (``bench cameras``): the CPU between two instants, linear between the samples
  around each end.

``PairCpu`` (the serial loop): its front end (this process) and its back end (a child process) between two
marks. CPU times come from ``time.process_time()`` for this process and from ``/proc/PID/stat`` (utime +
stime, in clock ticks) for the others; where ``/proc`` is missing a child's time is ``None`` (counted as 0 in
a tree) and so is the serial loop's figure.
"""
from __future__ import annotations

import bisect
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

SAMPLE_S = 0.01
THREAD_EVERY = 10
RESCAN = 50
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
        except (OSError, ValueError):
            continue
    return out


def descendants(pid: Optional[int] = None) -> List[int]:
    """Every process below ``pid`` (this process by default), children of children included."""
    out: List[int] = []
    todo = child_pids(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += child_pids(p)
    return out


class TreeCpu:
    """CPU seconds so far of this process (every thread) and of the live processes below it; those are looked
    up again every ``rescan`` calls (a /proc walk costs more than a sample; 1: every call)."""

    def __init__(self, rescan: int = RESCAN) -> None:
        self.rescan, self.calls, self.pids = max(1, rescan), 0, []  # type: int, int, List[int]

    def __call__(self) -> float:
        if self.calls % self.rescan == 0:
            self.pids = descendants()
        self.calls += 1
        return time.process_time() + sum(proc_cpu_s(pid) or 0.0 for pid in self.pids)


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


Sample = Tuple[int, float, float]  # (count, CPU s, monotonic s)


class CpuMeter:
    """Samples (count, CPU seconds, time) of a process tree, in a thread every ``period`` seconds and at
    ``start`` and ``stop``; ``sample()`` takes one now, from any thread.

    ``count`` (a plain attribute read, such as a recorder's count of results) is read from the sampling
    thread; ``read`` (default: ``TreeCpu(rescan)``), ``clock`` and ``read_threads`` may be given (a test
    feeds its own). ``threads``: also each thread's CPU, every ``THREAD_EVERY`` samples (a /proc walk each)."""

    def __init__(self, count: Optional[Callable[[], int]] = None, period: float = SAMPLE_S, threads: bool = False,
                 rescan: int = RESCAN, read: Optional[Callable[[], float]] = None,
                 clock: Callable[[], float] = time.monotonic,
                 read_threads: Callable[[], Dict[str, float]] = thread_cpu_s) -> None:
        self.count = count if count is not None else (lambda: 0)
        self.period = period
        self.threads = threads
        self.read = read if read is not None else TreeCpu(rescan)
        self.clock = clock
        self.read_threads = read_threads
        self.samples: List[Sample] = []
        self.thread_samples: Dict[int, Dict[str, float]] = {}  # sample index -> CPU s of each thread
        self._lock = threading.Lock()  # a sample is read and appended in one piece: samples stay in time order
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def sample(self) -> Sample:
        with self._lock:
            if self.threads and len(self.samples) % THREAD_EVERY == 0:
                self.thread_samples[len(self.samples)] = self.read_threads()
            s = (int(self.count()), self.read(), self.clock())
            self.samples.append(s)
            return s

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def start(self) -> "CpuMeter":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="benchcpu-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        self.sample()

    def __enter__(self) -> "CpuMeter":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def cpu_at(self, t: float) -> float:
        """CPU seconds at ``t``: linear between the samples around it, the first or last one outside them."""
        times = [s[2] for s in self.samples]
        i = bisect.bisect_left(times, t)
        if i <= 0:
            return self.samples[0][1]
        if i >= len(times):
            return self.samples[-1][1]
        (_, c0, t0), (_, c1, t1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    def cpu_between(self, t0: float, t1: float) -> float:
        return max(0.0, self.cpu_at(t1) - self.cpu_at(t0))

    def per_frame(self, warmup: int, last_t: Optional[float]) -> Dict[str, Any]:
        """core-ms per frame over the frames after the first ``warmup``: from the first sample that counts
        ``warmup`` or more to the last sample taken at or before ``last_t`` (the run's last result; later
        samples may see the pipeline stop)."""
        s = self.samples
        if not s or last_t is None:
            return {"core_ms_per_frame": None}
        i0 = next((i for i, x in enumerate(s) if x[0] >= warmup), None)
        i1 = next((i for i in range(len(s) - 1, -1, -1) if s[i][2] <= last_t), None)
        if i0 is None or i1 is None or s[i1][0] <= s[i0][0]:
            return {"core_ms_per_frame": None}
        start, end = s[i0], s[i1]
        n = end[0] - start[0]
        cpu_ms = (end[1] - start[1]) * 1000.0
        wall = end[2] - start[2]
        out: Dict[str, Any] = {"core_ms_per_frame": round(cpu_ms / n, 3), "cpu_frames": n,
                               "cpu_s": round(cpu_ms / 1000.0, 3),
                               "cores_busy": round(cpu_ms / 1000.0 / wall, 3) if wall > 0 else None}
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
