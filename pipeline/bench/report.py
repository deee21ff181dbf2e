"""``bench pipeline``'s report: the numbers each run keeps, the median run, the comparisons and the
fake Edge TPU's device rows (``bench_pipeline.json``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from edgepipe.models.store import manifest
from edgepipe.pipeline.bench.cases import COMPARE_WORKERS, Case, tpu_python
from edgepipe.pipeline.bench.common import machine_info, ratio
from edgepipe.pipeline.config.loading import Config
from edgepipe.pipeline.plan.placement import device_bound


def record(case: Case, summary: Dict[str, Any]) -> Dict[str, Any]:
    """The numbers of one run that the report keeps."""
    rec: Dict[str, Any] = {k: summary.get(k) for k in (
        "fps", "duration_s", "frames_captured", "frames_completed", "frames_partial", "dropped_total",
        "dropped_by_reason", "unaccounted", "latency_ms", "models")}
    rec["face_stats"] = summary.get("faces")
    rec["placement"] = summary.get("placement")
    rec["devices"] = summary.get("devices") or {}
    captured = summary.get("frames_captured") or 0
    rec["drop_rate"] = round(summary.get("dropped_total", 0) / captured, 4) if captured else 0.0
    if case.kind == "pipeline":
        actors = summary.get("actors", {})
        rec["busy_ms_p50"] = {name: a["busy_ms_p50"] for name, a in actors.items()
                              if name not in ("recorder", "aggregator")}
        cap = actors.get("capture", {})
        rec["offered_fps"] = cap.get("fps")  # frames the unpaced source produced per second
        rec["drained"] = summary.get("drained")
        rec["leaked_sockets"] = summary.get("leaked_sockets", [])
    else:
        rec["busy_ms_p50"] = summary["stages_ms_p50"]
        rec["backend_fps"] = summary["backend_fps"]
        rec["offered_fps"] = summary["fps"]
    return rec


def _median_run(rs: List[Dict[str, Any]]) -> Dict[str, Any]:
    ordered = sorted(rs, key=lambda r: r["fps"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["fps_runs"] = [r["fps"] for r in rs]
    out["fps_spread"] = round(max(out["fps_runs"]) - min(out["fps_runs"]), 2)
    return out


def report(cases: List[Case], runs: Dict[str, List[Dict[str, Any]]], errors: Dict[str, str], *, engine: str,
           frames: int, warmup: int, repeats: int, profile: str, base_cfg: Config, elapsed: float,
           profiles: Sequence[str] = ()) -> Dict[str, Any]:
    out_cases = []
    by_id: Dict[str, Dict[str, Any]] = {}
    for c in cases:
        entry: Dict[str, Any] = {"id": c.id, "kind": c.kind, "faces": c.faces, "workers": c.workers or None,
                                 "encoder": c.encoder, "transport": c.transport if c.kind == "pipeline" else None,
                                 "placement_case": c.placement, "profile": c.profile or profile}
        if runs[c.id]:
            entry.update(_median_run(runs[c.id]))
        else:
            entry.update({"fps": None, "error": errors.get(c.id, "not run")})
        out_cases.append(entry)
        by_id[c.id] = entry
    base = [c for c in cases if c.placement == "one" and not c.profile]  # the comparisons' cases
    faces = sorted({c.faces for c in cases})
    workers = sorted({c.workers for c in base if c.kind == "pipeline"})
    ids = {"pipeline": {"f%d-w%d" % (c.faces, c.workers): c.id for c in base
                        if c.kind == "pipeline" and c.encoder == "raw" and c.transport == "inproc"},
           "serial": {"f%d" % c.faces + ("" if c.encoder == "raw" else "-" + c.encoder): c.id
                      for c in base if c.kind == "serial"}}
    base_ids = {c.id for c in base}
    names = base_cfg.profile().models(engine)
    latency = {}
    if engine == "fake":
        for n in (names.detector, names.fer, names.classifier):
            if n:
                latency[n] = base_cfg.engine.fake.latency_ms.get(n, manifest.get(n).tpu_ms)
    return {
        "machine": machine_info(),
        "tpu_python": tpu_python(),
        "settings": {"engine": engine, "profile": profile, "frames": frames, "warmup": warmup, "repeats": repeats,
                     "source": "synthetic:faces=K,fps=0", "fake_latency_ms": latency or None,
                     "max_in_flight": getattr(base_cfg.capture, "max_in_flight", None),
                     "elapsed_s": round(elapsed, 1),
                     "notes": ["fps: completed (and partial) frames per second, from the first frame to the last "
                               "result; unpaced source: the capture waits for results (at most max_in_flight "
                               "frames in flight), so drops are expected to be 0; dropped counts any there were",
                               "fps is the median over the repeats (fps_runs lists them all)",
                               "serial: the reference loop in one thread (read, encode, decode, detect, FER per "
                               "face); backend_fps leaves out read and encode, as the reference's own figure does"]},
        "grid": {"faces": faces, "workers": workers},
        "ids": ids,
        "cases": out_cases,
        "comparisons": comparisons({k: v for k, v in by_id.items() if k in base_ids}, ids, faces, workers),
        "devices": device_rows(out_cases, base_cfg) if engine == "fake" else [],
        "profiles": list(profiles) or [profile],
        "errors": errors,
    }


def device_rows(cases: List[Dict[str, Any]], cfg: Config) -> List[Dict[str, Any]]:
    """Per pipeline run on the fake engine: the bounds of one device and of its placement, FPS / bound,
    busy % per device and latency; and the ratio to the same profile, faces and pool on one device."""
    one: Dict[Any, Dict[str, Any]] = {}
    rows = []
    for c in cases:
        if c["kind"] != "pipeline" or c["encoder"] != "raw" or c["transport"] != "inproc" or not c.get("fps"):
            continue
        placement = c.get("placement") or {}
        b_case = device_bound(cfg, placement, c["faces"])
        row = {"id": c["id"], "profile": c["profile"], "placement": c["placement_case"], "faces": c["faces"],
               "workers": c["workers"], "fps": c["fps"], "bound_fps": round(b_case, 1) if b_case else None,
               "eta": round(c["fps"] / b_case, 3) if b_case else None,
               "where": {r: ", ".join(p["devices"]) or p["engine"] for r, p in placement.items()},
               "busy_pct": {d: v.get("busy_pct") for d, v in (c.get("devices") or {}).items()},
               "switches": sum(int(v.get("switches", 0)) for v in (c.get("devices") or {}).values()),
               "latency_ms": c.get("latency_ms")}
        all_on_one = {r: {"engine": "fake", "model": p["model"], "devices": ["fake:0"]} for r, p in placement.items()}
        b1 = device_bound(cfg, all_on_one, c["faces"])  # the same models, every one on one device
        row["bound_one_fps"] = round(b1, 1) if b1 else None
        row["eta_one"] = round(c["fps"] / b1, 3) if b1 else None
        if c["placement_case"] == "one":
            one[(c["profile"], c["faces"], c["workers"])] = row
        rows.append(row)
    for row in rows:
        base = one.get((row["profile"], row["faces"], row["workers"])) or one.get(
            (row["profile"], row["faces"], COMPARE_WORKERS))
        row["vs_one_device"] = round(row["fps"] / base["fps"], 3) if base and base.get("fps") else None
    return rows


def comparisons(by_id: Dict[str, Dict[str, Any]], ids: Dict[str, Dict[str, str]], faces: Sequence[int],
                workers: Sequence[int]) -> Dict[str, Any]:
    def fps(cid: Optional[str]) -> Optional[float]:
        return by_id[cid].get("fps") if cid in by_id else None

    out: Dict[str, Any] = {"fer_pool": [], "pipeline_vs_serial": []}
    if not workers:  # no every-role-on-one-engine runs (--placements without "one"): nothing to compare
        return out
    w0 = workers[0]
    out["fer_pool"] = [{"faces": f, "workers": w, "fps": fps(ids["pipeline"].get("f%d-w%d" % (f, w))),
                        "vs_%d_worker" % w0: ratio(fps(ids["pipeline"].get("f%d-w%d" % (f, w))),
                                                    fps(ids["pipeline"].get("f%d-w%d" % (f, w0))))}
                       for f in faces for w in workers]
    for key, attr, a, b in (("encoder", "encoder", "raw", "jpeg"), ("transport", "transport", "inproc", "ipc"),
                            ("group", "transport", "inproc", "group")):
        pairs = [(cid, e) for cid, e in by_id.items() if e["kind"] == "pipeline"]
        other = next((cid for cid, e in pairs if e[attr] == b), None)
        if other is None:
            continue
        o = by_id[other]
        same = "transport" if attr == "encoder" else "encoder"
        base = next((cid for cid, e in pairs if e[attr] == a and e["faces"] == o["faces"]
                     and e["workers"] == o["workers"] and e[same] == o[same]), None)
        if base is None:
            continue
        out[key] = {"faces": o["faces"], "workers": o["workers"], "base": base, "other": other,
                    "base_label": a, "other_label": b, "base_fps": fps(base), "other_fps": fps(other),
                    "ratio": ratio(fps(other), fps(base)),
                    "latency_p50_ms": [by_id[base].get("latency_ms", {}).get("p50"),
                                       o.get("latency_ms", {}).get("p50")]}
    rows = []
    for skey, sid in ids["serial"].items():
        s = by_id[sid]
        cands = [e for e in by_id.values() if e["kind"] == "pipeline" and e["faces"] == s["faces"]
                 and e["encoder"] == s["encoder"] and e["transport"] == "inproc" and e.get("fps")]
        if not cands or not s.get("fps"):
            continue
        best = max(cands, key=lambda e: e["fps"])
        rows.append({"faces": s["faces"], "encoder": s["encoder"], "pipeline": best["id"],
                     "pipeline_workers": best["workers"], "pipeline_fps": best["fps"],
                     "pipeline_latency_p50_ms": best["latency_ms"]["p50"], "serial": sid,
                     "serial_fps": s["fps"], "serial_backend_fps": s.get("backend_fps"),
                     "serial_latency_p50_ms": s["latency_ms"]["p50"], "speedup": ratio(best["fps"], s["fps"])})
    out["pipeline_vs_serial"] = rows
    return out
