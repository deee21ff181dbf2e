"""The run's summary, from every actor's final metrics: what ran where, where each frame went, speed,
latency, devices, memory and each actor's figures (``run.py`` prints it; ``--summary`` writes it as JSON).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from edgepipe.actors.roles import BY_NAME, camera_actor, role_of
from edgepipe.actors.runtime.stats import percentile
from edgepipe.bus.messages import Metric
from edgepipe.pipeline.build import Pipeline
from edgepipe.pipeline.processes.groups import MAIN
from edgepipe.pipeline.processes.supervisor import GroupProcess
from edgepipe.pipeline.rss import peak_rss_mb


def device_summary(snaps: Dict[str, Metric]) -> Dict[str, Dict[str, Any]]:
    """Per accelerator device: invokes, switches and busy % over its active time (first to last invoke)."""
    out: Dict[str, Dict[str, Any]] = {}
    for m in snaps.values():
        for key, value in m.gauges.items():
            if not key.startswith("device."):
                continue
            name, _, stat = key[len("device."):].rpartition(".")
            if stat == "busy_pct":
                continue
            d = out.setdefault(name, {})
            d[stat] = max(d.get(stat, 0.0), value)  # every actor on the device reports the same counters
    for d in out.values():
        active = d.get("active_s", 0.0)
        d["busy_pct"] = round(100.0 * d.get("busy_s", 0.0) / active, 1) if active > 0 else 0.0
        for k in ("invokes", "switches"):
            d[k] = int(d.get(k, 0))
    return out


def rss_summary(groups: Sequence[GroupProcess] = ()) -> Dict[str, Any]:
    """Resident memory of every process of the run, MB (peak of this process; the groups' last)."""
    per = {MAIN: peak_rss_mb()}
    for g in groups:
        if g.rss_mb:
            per[g.name] = g.rss_mb
    return {"total": round(sum(per.values()), 1), "by_process": per}


def sink_summary(spec: str, m: Optional[Metric], results: int) -> Dict[str, Any]:
    """What a sink (the display, the recorder) did with the pipeline's results: written (shown, recorded),
    or dropped with a reason (``not_reached``: still on the way when the run stopped)."""
    if m is None:
        return {"sink": spec}
    c = m.counters
    by_reason = {k[8:]: v for k, v in c.items() if k.startswith("dropped.")}
    written = c.get("out", 0)
    left = results - written - sum(by_reason.values())
    if left > 0:
        by_reason["not_reached"] = left  # still on the way when the run stopped
    return {"sink": spec, "results": results, "written": written, "dropped": sum(by_reason.values()),
            "dropped_by_reason": by_reason}


def final_snapshots(p: Pipeline, groups: Sequence[GroupProcess]) -> Dict[str, Metric]:
    """Every actor's final metrics: the groups' final reports, else (a group that died first) the last
    metrics the hub saw of its actors, and the main process's actors' own."""
    snaps: Dict[str, Metric] = {}
    hub = p.one("metrics")
    for g in groups:
        snaps.update(g.final)
        if hub is not None:
            for name in (g.ready.actors if g.ready is not None else []):
                if name not in snaps and name in hub.latest:
                    snaps[name] = hub.latest[name]
    for a in p.actors:
        if a is not hub:
            snaps[a.name] = a.snapshot(final=True)
    return snaps


def frame_accounting(snaps: Dict[str, Metric]) -> Dict[str, Any]:
    """Where every captured frame went: completed, partial, dropped (by actor and by reason), unaccounted."""
    agg = snaps.get("aggregator", Metric("aggregator", 0, 0.0)).counters
    captured = sum(m.counters.get("out", 0) for name, m in snaps.items() if role_of(name) is BY_NAME["capture"])
    completed = agg.get("completed", 0)
    partial = agg.get("partial", 0)
    # the sinks' own drops are theirs (see ``sink_summary``): those frames were completed
    dropped = {name: m.counters.get("dropped", 0) for name, m in snaps.items() if name not in ("recorder", "display")}
    by_reason: Dict[str, int] = {}
    by_actor: Dict[str, Dict[str, int]] = {}
    for name in dropped:
        for k, v in snaps[name].counters.items():
            if k.startswith("dropped.") and v:
                by_reason[k[8:]] = by_reason.get(k[8:], 0) + v
                by_actor.setdefault(name, {})[k[8:]] = v
    total_dropped = sum(dropped.values())
    return {
        "frames_captured": captured,
        "frames_completed": completed,
        "frames_partial": partial,
        "frames_out_of_order": agg.get("out_of_order", 0),
        "dropped": dropped,
        "dropped_total": total_dropped,
        "dropped_by_reason": by_reason,
        "dropped_by_actor": by_actor,  # actor -> reason -> frames
        "unaccounted": captured - completed - partial - total_dropped,
    }


def actor_summary(snaps: Dict[str, Metric], elapsed: float) -> Dict[str, Dict[str, Any]]:
    """Per actor: its process, messages in and out, FPS over the run, busy time, drops and counters."""
    per_actor = {}
    for name, m in snaps.items():
        per_actor[name] = {
            "pid": m.pid,
            "in": m.counters.get("in", 0),
            "out": m.counters.get("out", 0),
            "fps": round(m.counters.get("out", 0) / elapsed, 2) if elapsed > 0 else 0.0,
            "busy_ms_p50": round(m.gauges.get("busy_ms_p50", 0.0), 3),
            "busy_ms_p99": round(m.gauges.get("busy_ms_p99", 0.0), 3),
            "dropped": m.counters.get("dropped", 0),
            "rejected": m.counters.get("rejected", 0),
            "counters": {k: v for k, v in m.counters.items() if k not in ("in", "out")},
        }
    return per_actor


def process_summary(p: Pipeline, groups: Sequence[GroupProcess]) -> List[Dict[str, Any]]:
    """The run's processes: the main one and each group, with pid, interpreter and actors."""
    procs = [{"name": MAIN, "pid": os.getpid(), "python": sys.executable, "version": sys.version.split()[0],
              "actors": [a.name for a in p.actors]}]
    for g in groups:
        r = g.ready
        procs.append({"name": g.name, "pid": r.pid if r else None, "python": r.python if r else g.python,
                      "version": r.version if r else None, "actors": list(r.actors) if r else [],
                      "exit_code": g.proc.returncode if g.proc is not None else None})
    return procs


def summarize(p: Optional[Pipeline], t_go: float, drained: bool, interrupted: bool,
              groups: Sequence[GroupProcess] = ()) -> Dict[str, Any]:
    """The run's summary: what ran where, where every frame went, speed, latency, each actor's figures."""
    assert p is not None
    cfg = p.cfg
    snaps = final_snapshots(p, groups)
    frames = frame_accounting(snaps)
    done = frames["frames_completed"] + frames["frames_partial"]
    rec = p.one("recorder")
    elapsed = (rec.last_t - t_go) if rec.last_t is not None else 0.0
    lat = rec.latency_ms
    procs = process_summary(p, groups)
    out = {
        "profile": cfg.pipeline.profile,
        "engine": cfg.pipeline.engine,
        "source": cfg.pipeline.source if not cfg.cameras else ", ".join(
            "%s=%s" % (name, cam.source) for name, cam in cfg.camera_list().items()),
        "models": p.models,
        "placement": {r: {"engine": pl.engine, "model": pl.model, "devices": pl.devices, "reason": pl.reason}
                      for r, pl in p.placement.items()},
        "devices": device_summary(snaps),
        "rss_mb": rss_summary(groups),
        "encoder": cfg.encoder.format,
        "fer_workers": cfg.fer.workers if "fer" in p.models else 0,
        "endpoints": {"frames": cfg.endpoints.frames, "encoded": cfg.endpoints.encoded,
                      "facejobs": cfg.endpoints.facejobs},
        "groups": procs,
        "interrupted": interrupted,
        "drained": drained,
        **frames,
        "display": sink_summary(cfg.pipeline.display, snaps.get("display"), done),
        "recorder": sink_summary("recorder", snaps.get("recorder"), done),  # "faces" counts what it recorded
        "faces": dict(rec.totals),
        **rec.expression_summary(),  # faces per expression, the dominant one, the longest face tracks
        "labels": rec.label_summary(),  # classification profiles: the most frequent top-1 labels
        "duration_s": round(elapsed, 3),
        "fps": round(done / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3),
                       "max": round(max(lat), 3) if lat else 0.0},
        "actors": actor_summary(snaps, elapsed),
        "cameras": camera_summary(p, snaps, frames, t_go),
    }
    out.update(_resources_and_source(p, snaps, procs, out["fps"]))
    return out


def _resources_and_source(p: Pipeline, snaps: Dict[str, Metric], procs: List[Dict[str, Any]],
                          fps: float) -> Dict[str, Any]:
    """The summary's ``resources`` (absent sensors absent), ``engines`` per role and ``source`` (reconnects)."""
    out: Dict[str, Any] = {"engines": {r: pl.engine for r, pl in p.placement.items()}}
    monitor = p.one("resources")
    if monitor is not None:
        names = {g["pid"]: g["name"] for g in procs if g.get("pid")}
        out["resources"] = monitor.summary(fps, snaps, names)
    caps = [m.counters for name, m in snaps.items() if role_of(name) is BY_NAME["capture"]]
    if any("source_reconnects" in c for c in caps):  # a camera or a stream (they reconnect)
        out["source_reconnects"] = sum(c.get("source_reconnects", 0) for c in caps)
    return out


def camera_summary(p: Pipeline, snaps: Dict[str, Metric], frames: Dict[str, Any], t_go: float) -> Dict[str, Any]:
    """Per camera: its source, frames captured, completed, partial, dropped (by reason) and unaccounted, FPS,
    latency and faces. One camera ``default``: the run's own figures; several: each actor's per-camera
    counters (``camera.NAME.*``)."""
    cameras = p.cfg.camera_list()
    rec = p.one("recorder")
    agg = snaps.get("aggregator", Metric("aggregator", 0, 0.0)).counters
    names = tuple(cameras)
    out: Dict[str, Any] = {}
    for cam, cc in cameras.items():
        cap = snaps.get(camera_actor("capture", cam, names), Metric("capture", 0, 0.0)).counters
        seen = rec.per_camera.get(cam, {}) if rec is not None else {}
        if names == ("default",):
            completed, partial = frames["frames_completed"], frames["frames_partial"]
            by_reason = dict(frames["dropped_by_reason"])
        else:
            completed, partial = agg.get("camera.%s.completed" % cam, 0), agg.get("camera.%s.partial" % cam, 0)
            by_reason = {}
            prefix = "camera.%s.dropped." % cam
            for m in snaps.values():
                for k, v in m.counters.items():
                    if k.startswith(prefix) and v:
                        by_reason[k[len(prefix):]] = by_reason.get(k[len(prefix):], 0) + v
        captured, dropped = cap.get("out", 0), sum(by_reason.values())
        done = completed + partial
        last_t = seen.get("last_t")
        elapsed = (last_t - t_go) if last_t is not None else 0.0
        lat = seen.get("latency_ms", [])
        out[cam] = {
            "source": cc.source,
            "frames_captured": captured,
            "frames_completed": completed,
            "frames_partial": partial,
            "frames_dropped": dropped,
            "dropped_by_reason": by_reason,
            "unaccounted": captured - done - dropped,
            "fps": round(done / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms": {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3)},
            "faces": seen.get("faces", 0),
            "frames_with_truth": seen.get("frames_with_truth", 0),
            "frames_exact": seen.get("frames_exact", 0),
        }
    return out
