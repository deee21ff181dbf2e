"""``bench cameras``' rows, goals and tables: what one run of N cameras shows, the goals it is judged by (as
ratios within one run), and the printed tables.

Fake Edge TPU, per placement and camera count N (cameras at ``CAMERA_FPS``, offered 30 N FPS, bound B of the
run's placement: ``plan.placement.device_bound``):

- under capacity (30 N <= ``UNDER`` x B): every camera >= ``EACH_FPS`` FPS, and each camera's p99 latency
  <= ``P99_RATIO`` x the single-camera p99 of the same placement;
- over capacity: total >= ``TOTAL_RATIO`` x min(30 N, B), and the slowest camera >= ``FAIR_RATIO`` x the fastest;
- always: nothing lost (every camera: captured = completed + partial + dropped) and no wrong expression where
  the FER model runs on the fake engine (it reads the synthetic truth; a real CPU model, as ``auto`` places
  FER64, is not judged on drawn faces).

CPU engine (the demo clip per camera): core-ms per frame <= ``CPU_COST_RATIO`` x the serial loop's on the same
clip in the same round; a camera is served when it completes >= ``SERVED_RATIO`` x the clip's frame rate.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence

from edgepipe.pipeline.bench.common import ratio
from edgepipe.pipeline.bench.table import text_table

EACH_FPS = 29.0
UNDER = 0.95
TOTAL_RATIO = 0.9
FAIR_RATIO = 0.9
P99_RATIO = 1.5
CPU_COST_RATIO = 0.85
SERVED_RATIO = 0.97


def median_run(runs: Sequence[Dict[str, Any]], key: str = "fps") -> Dict[str, Any]:
    """The run with the median ``key`` (the lower one of an even count)."""
    return sorted(runs, key=lambda r: r.get(key) or 0.0)[(len(runs) - 1) // 2]


def _med(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def camera_row(summary: Dict[str, Any], bound: Optional[float], offered: float) -> Dict[str, Any]:
    """The figures of one run of N cameras (a runner's summary with ``run_measured``'s ``cpu``)."""
    cams = summary.get("cameras") or {}
    fps = {n: c["fps"] for n, c in cams.items()}
    lost = sum(abs(c["frames_captured"] - c["frames_completed"] - c["frames_partial"] - c["frames_dropped"])
               for c in cams.values())  # frames neither completed nor dropped (or counted twice)
    fer = (summary.get("placement") or {}).get("fer") or {}
    faces = summary.get("faces") or {}
    total = summary.get("fps")
    return {
        "cameras": len(cams), "offered_fps": offered, "fps": total, "camera_fps": fps,
        "fps_min": min(fps.values()) if fps else None, "fps_max": max(fps.values()) if fps else None,
        "bound_fps": round(bound, 1) if bound else None, "total_over_bound": ratio(total, bound),
        "slowest_over_fastest": ratio(min(fps.values()), max(fps.values())) if fps else None,
        "p50_ms_max": max((c["latency_ms"]["p50"] for c in cams.values()), default=None),
        "p99_ms_max": max((c["latency_ms"]["p99"] for c in cams.values()), default=None),
        "camera_p99_ms": {n: c["latency_ms"]["p99"] for n, c in cams.items()},
        "busy_pct": {d: v.get("busy_pct") for d, v in sorted((summary.get("devices") or {}).items())},
        "cpu_pct": (summary.get("cpu") or {}).get("cpu_pct"),
        "core_ms_per_frame": (summary.get("cpu") or {}).get("core_ms_per_frame"),
        "captured": sum(c["frames_captured"] for c in cams.values()),
        "completed": sum(c["frames_completed"] for c in cams.values()),
        "partial": sum(c["frames_partial"] for c in cams.values()),
        "dropped": sum(c["frames_dropped"] for c in cams.values()),
        "lost": lost,
        "faces_per_frame": round(faces["faces"] / faces["frames"], 3) if faces.get("frames") else None,
        "fer_engine": fer.get("engine"),
        "wrong_expressions": (faces.get("matched", 0) - faces.get("expression_correct", 0))
        if fer.get("engine") == "fake" and "matched" in faces else None,
        "faces_missed": faces.get("truth", 0) - faces.get("matched", 0) if "truth" in faces else None,
        "cameras_detail": cams,
    }


def _goal(name: str, met: bool, value: str) -> Dict[str, Any]:
    return {"goal": name, "met": bool(met), "value": value}


def judge_fake(rows: List[Dict[str, Any]]) -> None:
    """Add ``goals`` (and ``p99_over_single``) to each fake-engine row, in place."""
    single = {r["placement"]: r["p99_ms_max"] for r in rows if r["cameras"] == 1}
    for r in rows:
        goals = []
        bound, offered = r.get("bound_fps"), r["offered_fps"]
        base = single.get(r["placement"])
        r["p99_over_single"] = ratio(r["p99_ms_max"], base)
        under = not bound or offered <= UNDER * bound
        r["under_capacity"] = under
        if under:
            goals.append(_goal("each >= %.0f FPS" % EACH_FPS, (r["fps_min"] or 0) >= EACH_FPS,
                               "%.1f" % (r["fps_min"] or 0)))
            if r["cameras"] > 1 and r["p99_over_single"] is not None:
                goals.append(_goal("p99 <= %.1fx 1 camera" % P99_RATIO, r["p99_over_single"] <= P99_RATIO,
                                   "x%.3f" % r["p99_over_single"]))
        else:
            cap = min(offered, bound)
            goals.append(_goal("total >= %.1f x %.1f" % (TOTAL_RATIO, cap), (r["fps"] or 0) >= TOTAL_RATIO * cap,
                               "%.1f" % (r["fps"] or 0)))
            fair = r["slowest_over_fastest"] or 0.0
            goals.append(_goal("slowest >= %.1fx fastest" % FAIR_RATIO, fair >= FAIR_RATIO, "%.3f" % fair))
        goals.append(_goal("nothing lost", r["lost"] == 0, str(r["lost"])))
        if r["wrong_expressions"] is not None:
            goals.append(_goal("0 wrong expressions", r["wrong_expressions"] == 0, str(r["wrong_expressions"])))
        r["goals"] = goals


def judge_cpu(rows: List[Dict[str, Any]], clip_fps: Optional[float]) -> None:
    """Add ``served``, ``goals`` to each CPU-engine row (``vs_serial``: the median per-round cost ratio)."""
    for r in rows:
        need = SERVED_RATIO * clip_fps if clip_fps else None
        r["served"] = sum(1 for v in r["camera_fps"].values() if need is not None and v >= need)
        goals = []
        if r.get("vs_serial") is not None:
            goals.append(_goal("core-ms <= %.2fx serial" % CPU_COST_RATIO, r["vs_serial"] <= CPU_COST_RATIO,
                               "x%.3f" % r["vs_serial"]))
        goals.append(_goal("nothing lost", r["lost"] == 0, str(r["lost"])))
        r["goals"] = goals


def cost_ratios(pipeline_runs: Sequence[Dict[str, Any]], serial_runs: Sequence[Dict[str, Any]]) -> List[float]:
    """Pipeline core-ms per frame over the serial loop's, per round (both measured in the same round)."""
    serial = {s["round"]: s["core_ms_per_frame"] for s in serial_runs}
    return [v for v in (ratio(p["core_ms_per_frame"], serial.get(p["round"])) for p in pipeline_runs) if v]


def merge_cpu(runs: Sequence[Dict[str, Any]], serial_runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The median run of N CPU cameras, with the serial loop's cost beside it."""
    row = dict(median_run(runs))
    ratios = cost_ratios(runs, serial_runs)
    row["fps_runs"] = [r["fps"] for r in runs]
    row["serial_core_ms_per_frame"] = _med([s["core_ms_per_frame"] for s in serial_runs])
    row["vs_serial"] = _med(ratios)
    row["vs_serial_runs"] = ratios
    return row


def verdict(row: Dict[str, Any]) -> str:
    goals = row.get("goals") or []
    missed = [g for g in goals if not g["met"]]
    if not goals:
        return "-"
    return "met" if not missed else "MISSED: " + "; ".join("%s (%s)" % (g["goal"], g["value"]) for g in missed)


def _f(v: Optional[float], fmt: str = "%.1f") -> str:
    return fmt % v if v is not None else "n/a"


def render_fake(rows: Sequence[Dict[str, Any]]) -> List[str]:
    head = ["placement", "cams", "FPS min", "FPS max", "total", "bound", "total/bound", "slow/fast", "p50 ms",
            "p99 ms", "p99/1cam", "busy %", "CPU %", "core-ms/f", "dropped", "lost", "wrong", "goals"]
    cells = [[r["placement"], str(r["cameras"]), _f(r["fps_min"]), _f(r["fps_max"]), _f(r["fps"]),
              _f(r["bound_fps"]), _f(r["total_over_bound"], "%.2f"), _f(r["slowest_over_fastest"], "%.2f"),
              _f(r["p50_ms_max"]), _f(r["p99_ms_max"]), _f(r.get("p99_over_single"), "%.2f"),
              "/".join("%.0f" % v for v in r["busy_pct"].values() if v is not None) or "-",
              _f(r["cpu_pct"], "%.0f"), _f(r["core_ms_per_frame"], "%.2f"), str(r["dropped"]), str(r["lost"]),
              str(r["wrong_expressions"]) if r["wrong_expressions"] is not None else "n/a (%s FER)" % r["fer_engine"],
              verdict(r)] for r in rows]
    return text_table(head, cells)


def render_cpu(rows: Sequence[Dict[str, Any]], clip_fps: Optional[float]) -> List[str]:
    head = ["cams", "served", "FPS min", "FPS max", "total", "p50 ms", "p99 ms", "CPU %", "core-ms/f",
            "serial core-ms/f", "vs serial", "faces/f", "dropped", "lost", "goals"]
    cells = [[str(r["cameras"]), "%d/%d" % (r["served"], r["cameras"]), _f(r["fps_min"]), _f(r["fps_max"]),
              _f(r["fps"]), _f(r["p50_ms_max"]), _f(r["p99_ms_max"]), _f(r["cpu_pct"], "%.0f"),
              _f(r["core_ms_per_frame"], "%.2f"), _f(r["serial_core_ms_per_frame"], "%.2f"),
              "x" + _f(r["vs_serial"], "%.2f"), _f(r["faces_per_frame"], "%.2f"), str(r["dropped"]), str(r["lost"]),
              verdict(r)] for r in rows]
    return ["served: cameras completing >= %.2f x the clip's %s FPS" % (SERVED_RATIO, _f(clip_fps, "%.2f"))] + \
        text_table(head, cells)


def render(result: Dict[str, Any]) -> str:
    m = result["machine"]
    out = ["machine: %s, %s (%s CPUs usable), Python %s, load %s; commit %s"
           % (m.get("cpu_model") or m.get("processor") or "?", m["machine"], m["cpus_usable"], m["python"],
              m["load_avg"], (m.get("git_commit") or "?")[:10])]
    fake = result.get("fake") or {}
    if fake.get("rows"):
        out.append("")
        out.append("fake Edge TPU, %s, cameras at %d FPS with 1 face each (synthetic), %d frames per camera, "
                   "median of %d run(s):" % (fake["profile"], fake["camera_fps"], fake["frames"], fake["repeats"]))
        out += render_fake(fake["rows"])
    cpu = result.get("cpu") or {}
    if cpu.get("rows"):
        out.append("")
        out.append("CPU engine, %s (%s), the demo clip per camera at its own %s FPS, %d frames per camera; serial "
                   "two-process loop on the same clip at the same rate: %s faces/frame, %d frames, median of %d round(s):"
                   % (cpu["profile"], "+".join(cpu["models"]), _f(cpu["clip_fps"], "%.2f"), cpu["frames"],
                      _f(cpu["serial_faces_per_frame"], "%.2f"), cpu["frames"], cpu["repeats"]))
        out += render_cpu(cpu["rows"], cpu["clip_fps"])
    for k, v in (result.get("errors") or {}).items():
        out.append("failed: %s: %s" % (k, v))
    return "\n".join(out)
