"""``bench pipeline``'s printed tables: every configuration, the comparisons, the fake Edge TPU's devices
and the whole-system memory.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Sequence

from edgepipe.pipeline.bench.table import text_table


def render_memory(rows: Sequence[Dict[str, Any]]) -> str:
    lines = ["whole-system RSS (peak of every process; run.py in a fresh process, fake engine, 3 faces):"]
    for r in rows:
        if r.get("error"):
            lines.append("  %s, %s: failed: %s" % (r["profile"], r["layout"], r["error"]))
        else:
            lines.append("  %s, %s: %.0f MB (%s)" % (r["profile"], r["layout"], r["rss_mb"], ", ".join(
                "%s %.0f" % kv for kv in r["by_process"].items())))
    return "\n".join(lines)


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
