"""``pipeline/bench/cpu/cpu_cost.py``: CPU time per frame from process and thread CPU times."""
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


@needs_proc
def test_run_meter_counts_the_cpu_of_the_frames_after_the_warmup_and_before_the_last_result():
    done = {"n": 0}
    meter = cpu_cost.RunCpuMeter(lambda: done["n"], interval_s=0.005, threads=True).start()
    try:
        for _ in range(5):  # warm-up frames: dearer, excluded
            _spin(0.03)
            done["n"] += 1
        for _ in range(40):
            _spin(0.01)
            done["n"] += 1
        last_t = time.monotonic()
        _spin(0.2)  # after the last result (a pipeline stopping): not counted
    finally:
        meter.stop()
    r = meter.per_frame(5, last_t)
    assert 30 <= r["cpu_frames"] <= 40
    # 10 ms of this thread per frame, plus the sampler's own few microseconds per sample
    assert 9.0 <= r["core_ms_per_frame"] <= 13.0, r
    per_thread = r["thread_core_ms_per_frame"]
    # from /proc in clock ticks (10 ms: a frame's worth here), over the samples that read every thread
    assert 7.0 <= per_thread[threading.current_thread().name] <= 13.0, per_thread
    assert per_thread.get("benchcpu-meter", 0.0) < 2.0


def test_run_meter_without_a_window_says_none():
    meter = cpu_cost.RunCpuMeter(lambda: 0)
    assert meter.per_frame(0, None) == {"core_ms_per_frame": None}
    assert meter.per_frame(0, time.monotonic()) == {"core_ms_per_frame": None}


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
