"""The text report of ``bench pipeline --engine cpu`` (``compare.bench_cpu``'s result, rendered)."""
from __future__ import annotations

from typing import Any, Dict, Optional


def f(v: Optional[float], fmt: str = "%.1f") -> str:
    """A figure for the report, or n/a."""
    return fmt % v if v is not None else "n/a"


def render(result: Dict[str, Any]) -> str:
    out = ["machine: %s, %s CPUs usable, Python %s, load %s"
           % (result["machine"]["machine"], result["machine"]["cpus_usable"], result["machine"]["python"],
              result["machine"]["load_avg"]),
           "models: %(detector)s + %(fer)s on the CPU" % result["settings"]["models"]
           + ", %d thread(s) per interpreter, ai-edge-litert %s" % (result["settings"]["cpu_threads"],
                                                                    result["settings"]["litert"])]
    for r in result["pipeline_vs_serial"]:
        fs = result["frame_sets"].get(r["frames"], {})
        out.append("%s (%s, %dx%d, %d faces in the photo): pipeline %s FPS (%d FER workers, %d frames in flight) "
                   "vs serial two-process loop %s FPS (1 in flight) = x%s (per round %s); faces/frame "
                   "pipeline %s, serial %s"
                   % (r["frames"], fs.get("what", ""), fs.get("size", [0, 0])[0], fs.get("size", [0, 0])[1],
                      r["expected_faces"], f(r["pipeline_fps"]), r["pipeline_fer_workers"],
                      r["pipeline_max_in_flight"], f(r["serial_fps"]), f(r["ratio"], "%.2f"),
                      "/".join("%.2f" % x for x in r["ratio_runs"]) or "n/a",
                      f(r["pipeline_faces_per_frame"], "%.2f"), f(r["serial_faces_per_frame"], "%.2f")))
        if r.get("pipeline_busy_ms_p50"):
            out.append("    pipeline busy p50 ms: " + ", ".join("%s %.2f" % kv for kv in
                                                               sorted(r["pipeline_busy_ms_p50"].items())))
        out.append("    vs the serial loop sending a frame kept in memory (a camera's decoded frame, no per-frame "
                   "decode): %s FPS = x%s (per round %s); faces/frame %s"
                   % (f(r["serial_in_memory_fps"]), f(r["ratio_vs_in_memory"], "%.2f"),
                      "/".join("%.2f" % x for x in r["ratio_vs_in_memory_runs"]) or "n/a",
                      f(r["serial_in_memory_faces_per_frame"], "%.2f")))
        if r.get("pipeline_core_ms_per_frame") is not None:
            out.append("    CPU per frame (every process, warm-up excluded): pipeline %s core-ms, serial loop %s "
                       "(front %s + back %s), in memory %s; pipeline / serial = x%s (per round %s), / in memory x%s"
                       % (f(r["pipeline_core_ms_per_frame"], "%.2f"), f(r["serial_core_ms_per_frame"], "%.2f"),
                          f(r["serial_front_core_ms_per_frame"], "%.2f"), f(r["serial_back_core_ms_per_frame"], "%.2f"),
                          f(r["serial_in_memory_core_ms_per_frame"], "%.2f"), f(r["core_ms_ratio"], "%.2f"),
                          "/".join("%.2f" % x for x in r["core_ms_ratio_runs"]) or "n/a",
                          f(r["core_ms_ratio_vs_in_memory"], "%.2f")))
        for label, k in (("serial", "serial_ms_p50"), ("serial, in memory", "serial_in_memory_ms_p50")):
            if r.get(k):
                out.append("    %s p50 ms: " % label + ", ".join("%s %.2f" % kv for kv in r[k].items()))
    p = result.get("fer_pool")
    if p:
        out.append("FER pool on %s (%s faces/frame found): %s; goal >= 1.7)"
                   % (p["frames"], "/".join(f(x, "%.2f") for x in p["faces_per_frame"]), _one_vs_two(p)))
    st = (p or {}).get("stage_only")
    if st:
        out.append("FER stage alone (the pool's FerWorker actors fed %d real face crops per frame over inproc://, no "
                   "capture or detector): %s)" % (st["faces_per_frame"], _one_vs_two(st)))
        out.append("    this process's CPU (the feeder and both workers): %s%% with 1 worker, %s%% with 2"
                   % tuple(f(x, "%.0f") for x in st["this_process_cpu_pct"]))
    sp = (p or {}).get("stage_processes")
    if sp:
        out.append("FER stage in processes (each FerWorker in its own child process, fer.processes = true, fed the "
                   "same crops over ipc://): %s; goal >= 1.7)" % _one_vs_two(sp))
        out.append("    the feeder's process CPU: %s%% with 1 worker, %s%% with 2 (the workers run beside it)"
                   % tuple(f(x, "%.0f") for x in sp["this_process_cpu_pct"]))
    pp = (p or {}).get("pipeline_processes")
    if pp:
        out.append("FER pool in processes (the pipeline on %s with fer.processes = true): %s); 2 worker processes "
                   "vs 1 worker in the main process x%s"
                   % (p["frames"], _one_vs_two(pp), f(pp["vs_one_worker_in_process"], "%.2f")))
    if result.get("errors"):
        out.append("failed: " + "; ".join("%s: %s" % kv for kv in result["errors"].items()))
    return "\n".join(out)


def _one_vs_two(d: Dict[str, Any]) -> str:
    """"1 worker N faces/s, 2 workers M faces/s = xR (per round ..." of a pool measurement."""
    return "1 worker %s faces/s, 2 workers %s faces/s = x%s (per round %s" % (
        f(d["faces_per_s"][0]), f(d["faces_per_s"][1]), f(d["ratio"], "%.2f"),
        "/".join("%.2f" % x for x in d["ratio_runs"]) or "n/a")
