"""Soak: the pipeline at a steady source rate for a while; resident memory and throughput over time.

CI runs 60 s (``test_soak_short``); ``pytest -m soak`` runs 30 minutes. Both record the RSS drift and the
FPS decay in the fault report; the long one also holds the pipeline to a drift under 5%.
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest
from faults_report import read_results, record, wrong_joins
from helpers import inproc_config, run_async

from edgepipe.pipeline.runner import RunOptions, run

RATE = 20  # frames per second from the source


def rss_mb() -> float:
    with open("/proc/%d/status" % os.getpid(), encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def soak(duration_s: float, results_path: str, samples_wanted: int = 60):
    """Run the pipeline for ``duration_s`` and sample (seconds, RSS MB, results) along the way."""
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=%d" % RATE})
    interval = max(1.0, duration_s / samples_wanted)
    samples = []

    async def main():
        ready = asyncio.Event()
        holder = {}

        def on_ready(p):
            holder["recorder"] = p.one("recorder")
            ready.set()

        runner = asyncio.ensure_future(run(cfg, RunOptions(duration_s=duration_s, results_path=results_path),
                                         on_ready=on_ready))
        waiter = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait([runner, waiter], return_when=asyncio.FIRST_COMPLETED)
            t0 = time.monotonic()
            while ready.is_set() and not runner.done():
                rec = holder["recorder"]
                samples.append((time.monotonic() - t0, rss_mb(), rec.stats.counters.get("in", 0)))
                await asyncio.wait([runner], timeout=interval)  # the sampling period; ends with the run
        finally:
            waiter.cancel()
            await asyncio.wait([waiter])
            summary = await runner
        return summary

    s = run_async(main(), timeout=duration_s + 120)
    return s, samples


def figures(samples):
    """RSS drift and FPS decay, after a warm-up of the first 20% of the run."""
    warm = [x for x in samples if x[0] >= samples[-1][0] * 0.2]
    third = max(2, len(warm) // 3)
    first, last = warm[:third], warm[-third:]

    def fps(part):
        return (part[-1][2] - part[0][2]) / max(1e-9, part[-1][0] - part[0][0])

    rss_first = sum(x[1] for x in first) / len(first)
    rss_last = sum(x[1] for x in last) / len(last)
    return {
        "rss_mb_after_warmup": round(rss_first, 1),
        "rss_mb_at_end": round(rss_last, 1),
        "rss_mb_peak": round(max(x[1] for x in samples), 1),
        "rss_drift_pct": round(100.0 * (rss_last - rss_first) / rss_first, 2),
        "fps_first_third": round(fps(first), 2),
        "fps_last_third": round(fps(last), 2),
        "fps_decay_pct": round(100.0 * (fps(first) - fps(last)) / max(1e-9, fps(first)), 2),
        "samples": len(samples),
    }


def check_and_record(name, duration_s, s, samples, results):
    assert s["drained"] and s["unaccounted"] == 0 and s["leaked_sockets"] == []
    assert s["frames_captured"] == s["frames_completed"] + s["frames_partial"] + s["dropped_total"]
    assert wrong_joins(read_results(results)) == 0
    assert len(samples) >= 6
    fig = figures(samples)
    record("soak", name, dict(fig, duration_s=duration_s, source_fps=RATE, frames=s["frames_captured"],
                              completed=s["frames_completed"], partial=s["frames_partial"],
                              dropped=s["dropped_total"], dropped_by_reason=s["dropped_by_reason"],
                              false_positives=s["faces"].get("false_positives", 0)))
    return fig


def test_soak_short(tmp_path):
    results = tmp_path / "r.jsonl"
    s, samples = soak(60.0, str(results))
    check_and_record("60s", 60.0, s, samples, results)


@pytest.mark.soak
@pytest.mark.timeout(1800 + 600)
def test_soak_long(tmp_path):
    results = tmp_path / "r.jsonl"
    s, samples = soak(1800.0, str(results), samples_wanted=180)
    fig = check_and_record("30min", 1800.0, s, samples, results)
    assert fig["rss_drift_pct"] < 5.0, fig
