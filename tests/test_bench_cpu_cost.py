"""``pipeline/bench/cpu/cpu_cost.py``: the benchmarks' CPU meter (a process tree's CPU time, sampled; per frame
over a window, per thread) and the serial loop's pair of processes. The window arithmetic runs on samples the
tests feed; the live tests check only what holds on a loaded machine (CPU counted >= CPU burnt)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from edgepipe.pipeline.bench.cpu import cpu_cost

needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="no /proc")


def _spin(seconds: float) -> None:
    """Burn ``seconds`` of this thread's CPU time."""
    t0 = time.thread_time()
    while time.thread_time() - t0 < seconds:
        pass


class Fed:
    """What a meter reads, set by the test: the count, the tree's CPU seconds, the clock, each thread's CPU."""

    def __init__(self) -> None:
        self.count, self.cpu, self.t, self.threads = 0, 0.0, 0.0, {}

    def meter(self, threads: bool = False) -> cpu_cost.CpuMeter:
        return cpu_cost.CpuMeter(lambda: self.count, threads=threads, read=lambda: self.cpu, clock=lambda: self.t,
                                 read_threads=lambda: dict(self.threads))

    def step(self, meter, frames, cpu_s, wall_s, **threads) -> None:
        """``frames`` more results, ``cpu_s`` more CPU and ``wall_s`` more time (and more CPU of the named
        threads), then a sample."""
        self.count += frames
        self.cpu += cpu_s
        self.t += wall_s
        for name, v in threads.items():
            self.threads[name] = self.threads.get(name, 0.0) + v
        meter.sample()


def test_per_frame_counts_from_the_sample_that_reaches_the_warmup_to_the_last_before_the_last_result():
    fed = Fed()
    meter = fed.meter()
    fed.step(meter, 0, 0.0, 0.0)
    for _ in range(3):  # warm-up: 2 frames a sample, dearer (30 ms each); the third sample counts 6 >= 5
        fed.step(meter, 2, 0.06, 0.1)
    for _ in range(10):  # 4 frames a sample at 10 ms each
        fed.step(meter, 4, 0.04, 0.1)
    last_t = fed.t
    fed.step(meter, 0, 0.5, 0.1)  # the pipeline stopping after its last result: not counted
    r = meter.per_frame(5, last_t)
    assert r == {"core_ms_per_frame": 10.0, "cpu_frames": 40, "cpu_s": 0.4, "cores_busy": 0.4}
    assert "thread_core_ms_per_frame" not in r
    # the window reaches the last sample at or before last_t, not one after it
    assert meter.per_frame(5, last_t + 0.05)["cpu_frames"] == 40
    assert meter.per_frame(5, last_t - 0.05)["cpu_frames"] == 36


def test_per_frame_shares_the_cpu_among_the_threads_read_every_thread_every_tenth_sample():
    fed = Fed()
    meter = fed.meter(threads=True)
    for _ in range(cpu_cost.THREAD_EVERY * 2 + 1):  # threads read at samples 0, 10 and 20
        fed.step(meter, 1, 0.012, 0.02, MainThread=0.008, **{"?77": 0.004})
    assert sorted(meter.thread_samples) == [0, cpu_cost.THREAD_EVERY, 2 * cpu_cost.THREAD_EVERY]
    r = meter.per_frame(0, fed.t)
    assert r["cpu_frames"] == 2 * cpu_cost.THREAD_EVERY and r["core_ms_per_frame"] == 12.0
    # the thread figures span the thread samples inside the window (0 .. 20), the busiest first
    assert list(r["thread_core_ms_per_frame"].items()) == [("MainThread", 8.0), ("?77", 4.0)]
    # a window holding one thread sample has no share to give
    assert "thread_core_ms_per_frame" not in meter.per_frame(12, fed.t)


def test_per_frame_without_a_window_says_none():
    fed = Fed()
    meter = fed.meter()
    assert meter.per_frame(0, None) == {"core_ms_per_frame": None}
    assert meter.per_frame(0, 1.0) == {"core_ms_per_frame": None}  # no sample
    fed.step(meter, 3, 0.1, 1.0)
    fed.step(meter, 0, 0.1, 1.0)
    assert meter.per_frame(0, fed.t) == {"core_ms_per_frame": None}  # no result inside the window
    assert meter.per_frame(4, fed.t) == {"core_ms_per_frame": None}  # the warm-up never reached


def test_cpu_between_is_linear_between_the_samples_around_each_end():
    fed = Fed()
    meter = fed.meter()
    fed.t = 10.0
    for cpu in (0.0, 1.0, 2.0, 3.0):
        fed.step(meter, 0, cpu, 1.0 if cpu else 0.0)  # at 10, 11, 12, 13 s: 0, 1, 3, 6 CPU s
    assert meter.cpu_between(10.5, 12.5) == pytest.approx(4.0)  # 0.5 .. 4.5
    assert meter.cpu_between(9.0, 20.0) == 6.0  # clamped to the first and the last sample
    assert meter.cpu_between(12.0, 11.0) == 0.0  # never negative


@needs_proc
def test_a_live_meter_counts_at_least_the_cpu_burnt_between_its_start_and_stop_in_this_process_and_a_child():
    """What holds on any machine, however loaded: ``start`` and ``stop`` sample in this thread, so the CPU
    between the first and the last sample holds all this thread burnt between them, and the child's."""
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nsys.stdin.readline()\n"
                              "t0 = time.process_time()\nwhile time.process_time() - t0 < 0.2: pass\n"
                              "print('spun', flush=True)\nsys.stdin.readline()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    done = {"n": 0}
    try:
        with cpu_cost.CpuMeter(lambda: done["n"], period=0.005) as meter:  # start; stop at the end
            t0 = time.thread_time()
            child.stdin.write("go\n")
            child.stdin.flush()
            for _ in range(20):
                _spin(0.005)
                done["n"] += 1
            assert child.stdout.readline().strip() == "spun"  # its 0.2 s are spent
            burnt = time.thread_time() - t0
    finally:
        child.stdin.write("end\n")
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
    first, last = meter.samples[0], meter.samples[-1]
    assert (first[0], last[0]) == (0, 20)
    tick = 2.0 / cpu_cost._TICK  # the child's CPU is read in clock ticks (truncated at each end)
    assert last[1] - first[1] >= burnt + 0.2 - tick, (burnt, meter.samples)
    assert [s[2] for s in meter.samples] == sorted(s[2] for s in meter.samples)
    r = meter.per_frame(0, last[2])
    assert r["cpu_frames"] == 20 and r["core_ms_per_frame"] >= (burnt + 0.2 - tick) * 1000.0 / 20


@needs_proc
def test_a_thread_cpu_reading_names_this_thread_and_counts_what_it_burnt():
    before = cpu_cost.thread_cpu_s()
    _spin(0.05)
    after = cpu_cost.thread_cpu_s()
    name = threading.current_thread().name
    tick = 2.0 / cpu_cost._TICK
    assert after[name] - before[name] >= 0.05 - tick, (before, after)


@needs_proc
def test_the_tree_is_this_process_and_every_process_below_it():
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys\n"
                              "p = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.readline()'], "
                              "stdin=subprocess.PIPE)\nprint(p.pid, flush=True)\nsys.stdin.readline()\n"
                              "p.stdin.close()\np.wait()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        assert child.pid in cpu_cost.child_pids() and grandchild not in cpu_cost.child_pids()
        assert {child.pid, grandchild} <= set(cpu_cost.descendants())
        assert cpu_cost.child_pids(child.pid) == [grandchild]
        tree = cpu_cost.TreeCpu(rescan=1)
        theirs = cpu_cost.proc_cpu_s(child.pid) + cpu_cost.proc_cpu_s(grandchild)  # their start-up, in ticks
        mine = time.process_time()
        assert tree() >= mine + theirs
        assert tree.pids and set(tree.pids) >= {child.pid, grandchild}
    finally:
        child.stdin.write("end\n")
        child.stdin.close()
        child.wait(10)
        child.stdout.close()


@needs_proc
def test_pair_counts_this_process_and_a_child_process():
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nt0 = time.process_time()\n"
                              "sys.stdin.readline()\nwhile time.process_time() - t0 < 0.3: pass\n"
                              "print('spun', flush=True)\nsys.stdin.readline()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pair = cpu_cost.PairCpu(child.pid)
        pair.mark_start()
        child.stdin.write("go\n")
        child.stdin.flush()
        _spin(0.1)
        assert child.stdout.readline().strip() == "spun"  # its 0.3 s are spent
        pair.mark_end()
        r = pair.per_frame(10)
    finally:
        child.stdin.write("end\n")
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
    assert 9.0 <= r["front_core_ms_per_frame"] <= 13.0, r
    assert 25.0 <= r["back_core_ms_per_frame"] <= 36.0, r
    assert r["core_ms_per_frame"] == pytest.approx(r["front_core_ms_per_frame"] + r["back_core_ms_per_frame"], abs=0.01)
    assert cpu_cost.proc_cpu_s(child.pid) is None  # gone: no time, no exception


def test_cost_command_refuses_an_unknown_frame_set(capsys):
    from edgepipe.pipeline.bench.cpu import cost

    assert cost.main(["--sets", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sets" in err[0]


def test_cost_command_measures_both_sides_and_the_pipeline_threads(tmp_path, capsys):
    from test_bench_cpu import IMAGES, _why_skip

    if _why_skip():
        pytest.skip(_why_skip())
    from edgepipe.pipeline.bench.cpu import cost

    out = tmp_path / "out"
    assert cost.main(["--frames", "40", "--warmup", "5", "--rounds", "1", "--threads", "--models",
                      "--images", str(IMAGES), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / cost.OUT_NAME).read_text())
    row = data["pipeline_vs_serial"][0]
    assert row["frames"] == "seed640" and row["same_frames"]
    assert row["serial_core_ms_per_frame"] > 0 and row["core_ms_ratio"] > 0
    assert row["pipeline_core_ms_per_frame"] > 0
    assert "core-ms" in printed and "pipeline threads" in printed
    threads = data["threads"]["median"]
    assert any(name.startswith("detector") for name in threads) and "MainThread" in threads
    alone = {(m["model"], m["threads"]): m for m in data["models_alone"]}
    assert set(alone) == {(m, t) for m in ("blazeface-full", "fer64") for t in (1, 2)}
    assert all(m["wall_ms"] > 0 and m["core_ms"] > 0 for m in alone.values())
