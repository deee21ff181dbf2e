"""Run the pipeline: the main process's actors in one event loop, groups as child processes.

Start-up: the main process's actors start (consumers first; ``start()`` of
each returns when it is ready), then the groups are spawned and report ready
over the control endpoint, and every publisher waits until its subscribers
are attached (ZeroMQ's slow joiner). Only then does the source start. The run
ends when the source ends, ``--frames`` or ``--duration`` is reached, or
``stop`` is set (Ctrl-C); the pipeline then drains (every frame captured
comes out completed, partial or counted as dropped) and everything stops.
Any actor or group that dies stops the run with an error naming it.

Each wait of the runner runs in a task group (``_until``) with the actors'
and groups' tasks as watches; cancelling the run cancels it from the top.
Shutdown order is explicit: the groups stop first (SIGTERM, or asked over the
control link), then the main process's actors in reverse start order.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any, Awaitable, Dict, List, Optional, Tuple

from actors.base import Actor
from actors.resources import reset_process_meter
from actors.stats import percentile
from actors.tasks import TaskGroup, first
from bus.messages import Metric
from bus.rundir import RunDir

from .build import Pipeline, RunOptions, build, make_bus
from .config import Config, expand_endpoints
from .groups import MAIN, assignment, group_of, plan
from .rss import peak_rss_mb, reset_peak
from .source_auto import resolve_source
from .control import ControlServer
from .supervisor import GroupFailed, GroupProcess, handle_control, stop_by_hand, wait_ready, write_config

__all__ = ["RunOptions", "run", "summarize"]

log = logging.getLogger("edgepipe.runner")


class ActorDied(RuntimeError):
    pass


def _failure_report(exc: Exception, summary: Dict[str, Any], groups: List[GroupProcess]) -> Dict[str, Any]:
    """What a run that an actor's or a group's death ended lost: the process, its actors, the frames."""
    name = getattr(exc, "group", None)
    g = next((g for g in groups if g.name == name), None)
    actors = list(g.ready.actors) if g is not None and g.ready is not None else []
    if isinstance(exc, ActorDied):
        actors = [getattr(exc, "actor", "")]
    return {"group": name or MAIN, "error": str(exc).split("; last lines:")[0].split("\n")[0], "actors_lost": actors,
            "final_metrics_missing": [a for a in actors if g is not None and a not in g.final],
            "frames_lost": summary["unaccounted"]}


def _failure(actors: List[Actor], groups: List[GroupProcess]) -> List["asyncio.Future[Any]"]:
    """Futures that finish when an actor or a group dies."""
    futs: List["asyncio.Future[Any]"] = [a.task for a in actors if a.task is not None]
    futs += [g.exited for g in groups if g.exited is not None]
    return futs


def _raise_failure(done, actors: List[Actor], groups: List[GroupProcess]) -> None:
    for g in groups:
        if g.exited in done and not g.stopping:
            exc = GroupFailed(g.describe_exit(g.exited.result()))
            exc.group = g.name  # type: ignore[attr-defined]
            raise exc
    for a in actors:
        if a.task in done:
            t = a.task
            why = "cancelled" if t.cancelled() else (t.exception() or "returned early")
            died = ActorDied("actor %s stopped: %s" % (a.name, why))
            died.actor = a.name  # type: ignore[attr-defined]
            raise died


async def _until(aw: Awaitable[Any], actors: List[Actor], groups: List[GroupProcess]) -> Any:
    """Await ``aw``; raise if an actor or a group dies first (``aw`` is then cancelled)."""
    watch = _failure(actors, groups)
    async with TaskGroup() as tg:
        main = tg.start_soon(aw)
        while not main.done():
            done, _ = await asyncio.wait([main] + watch, return_when=asyncio.FIRST_COMPLETED)
            if main not in done:
                _raise_failure(done, actors, groups)  # the block cancels ``main``
    return main.result()


async def run(cfg: Config, opts: RunOptions, stop: Optional[asyncio.Event] = None,
              on_ready: Optional[Any] = None) -> Dict[str, Any]:
    """Run the pipeline to its end; return the summary (see ``summarize``)."""
    reset_peak()  # the summary's RSS is this run's peak, also when a benchmark runs many in one process
    reset_process_meter()  # and its CPU % this run's average
    if cfg.pipeline.source == "auto":
        cfg.pipeline.source, why = resolve_source(cfg.pipeline.source)
        log.info("source auto: %s (%s)", cfg.pipeline.source, why)
    rundir = RunDir.create()  # mode 0700; ipc://{run}/NAME endpoints live there
    run_dir = rundir.path
    try:
        cfg = expand_endpoints(cfg, rundir)
        if cfg.groups:
            cfg = plan(cfg, run_dir)
    except BaseException:
        rundir.remove()
        raise
    log.info("results at %s, metrics at %s", cfg.endpoints.results, cfg.endpoints.metrics)
    assign = assignment(cfg)
    bus = make_bus(cfg)
    p: Optional[Pipeline] = None
    started: List[Actor] = []
    groups: List[GroupProcess] = []
    control = None
    t_go = time.monotonic()
    drained = interrupted = False
    leaked: List[str] = []
    died: Optional[Exception] = None  # a group or an actor that died once the pipeline ran
    try:
        p = build(cfg, bus, opts, local=lambda role: group_of(role, assign) == MAIN)
        if cfg.groups:
            control = ControlServer(bus, cfg.endpoints.control)
        for actor in p.actors:
            await actor.start()
            started.append(actor)
        if cfg.groups:
            path = write_config(cfg, run_dir)
            groups = [GroupProcess(name, cfg, path) for name in cfg.groups]
            for g in groups:
                if g.spawned:
                    await g.spawn()
                else:
                    log.warning("waiting for group %s, started by hand: python run.py group %s --config ...",
                                g.name, g.name)
            assert control is not None
            await wait_ready(groups, control, [a.task for a in started if a.task is not None])
        await _until(asyncio.gather(*p.subscriber_waits()), started, groups)
        log.info("pipeline ready: profile %s, source %s; %s", cfg.pipeline.profile, cfg.pipeline.source,
                 "; ".join(pl.describe() for pl in p.placement.values()))
        if on_ready is not None:
            on_ready(p)
        capture, recorder = p.one("capture"), p.one("recorder")
        t_go = time.monotonic()
        capture.go()
        try:
            drained, interrupted = await _run_and_drain(cfg, capture, recorder, stop, started, groups)
        except (GroupFailed, ActorDied) as exc:  # the summary is still written, naming what died
            died = exc
    finally:
        try:
            for g in groups:
                await g.stop()
            if control is not None:
                await stop_by_hand(groups, control)
                _collect_reports(control, groups)
        finally:
            for actor in reversed(started):
                await actor.stop()
            leaked = bus.open_channels()
            if control is not None:
                leaked = [x for x in leaked if not x.startswith("runner.control")]
                control.close()
            if leaked:
                log.error("sockets left open by actors: %s", leaked)
            bus.close()
            rundir.remove()
    summary = summarize(p, t_go, drained, interrupted, groups)
    summary["leaked_sockets"] = leaked
    if died is not None:
        summary["failure"] = _failure_report(died, summary, groups)
        died.summary = summary  # type: ignore[attr-defined]
        raise died
    return summary


async def _run_and_drain(cfg: Config, capture: Any, recorder: Any, stop: Optional[asyncio.Event],
                         started: List[Actor], groups: List[GroupProcess]) -> Tuple[bool, bool]:
    """Run until the source ends or ``stop``; drain. (drained, interrupted)."""
    ends = [capture.done.wait()] + ([stop.wait()] if stop is not None else [])
    await _until(first(*ends), started, groups)
    interrupted = stop is not None and stop.is_set() and not capture.done.is_set()
    if interrupted:
        capture.finish()  # no new frames; what is in flight drains below
    timeout = cfg.pipeline.drain_timeout_s if not interrupted else min(1.5, cfg.pipeline.drain_timeout_s)
    try:
        await asyncio.wait_for(_until(recorder.drained.wait(), started, groups), timeout)
    except asyncio.TimeoutError:
        log.warning("pipeline did not drain within %.1f s; frames still in flight are reported as unaccounted",
                    timeout)
        return False, interrupted
    display = next((a for a in started if a.name == "display"), None)
    if display is not None and getattr(display, "every_frame", False):
        try:  # a video file: let it write the last results (what it cannot is counted as dropped)
            await asyncio.wait_for(_until(display.drained.wait(), started, groups), timeout)
        except asyncio.TimeoutError:
            log.warning("the display did not write its last results within %.1f s", timeout)
    return True, interrupted


def _collect_reports(control, groups: List[GroupProcess]) -> None:
    by_name = {g.name: g for g in groups}
    while True:
        msg = control.recv_nowait()
        if msg is None:
            return
        handle_control(msg, by_name)


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


def rss_summary(groups: List[GroupProcess] = ()) -> Dict[str, Any]:
    """Resident memory of every process of the run, MB (peak of this process; the groups' last)."""
    per = {MAIN: peak_rss_mb()}
    for g in groups:
        if g.rss_mb:
            per[g.name] = g.rss_mb
    return {"total": round(sum(per.values()), 1), "by_process": per}


def sink_summary(spec: str, m: Optional[Metric], results: int) -> Dict[str, Any]:
    """What the display did with the pipeline's results: written (shown), or dropped with a reason."""
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


def summarize(p: Optional[Pipeline], t_go: float, drained: bool, interrupted: bool,
              groups: List[GroupProcess] = ()) -> Dict[str, Any]:
    assert p is not None
    cfg = p.cfg
    snaps: Dict[str, Metric] = {}
    hub = p.one("metrics")
    for g in groups:
        snaps.update(g.final)
        if hub is not None:  # a group that died before its final report: its last metrics
            for name in (g.ready.actors if g.ready is not None else []):
                if name not in snaps and name in hub.latest:
                    snaps[name] = hub.latest[name]
    for a in p.actors:
        if a is not hub:
            snaps[a.name] = a.snapshot(final=True)
    agg = snaps.get("aggregator", Metric("aggregator", 0, 0.0)).counters
    captured = snaps["capture"].counters.get("out", 0)
    completed = agg.get("completed", 0)
    partial = agg.get("partial", 0)
    dropped = {name: m.counters.get("dropped", 0) for name, m in snaps.items() if name not in ("recorder", "display")}
    by_reason: Dict[str, int] = {}
    for name, m in snaps.items():
        if name not in dropped:
            continue  # the sinks' own drops are theirs (see ``sink_summary``): those frames were completed
        for k, v in m.counters.items():
            if k.startswith("dropped."):
                by_reason[k[8:]] = by_reason.get(k[8:], 0) + v
    total_dropped = sum(dropped.values())
    rec = p.one("recorder")
    elapsed = (rec.last_t - t_go) if rec.last_t is not None else 0.0
    lat = rec.latency_ms
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
    procs = [{"name": MAIN, "pid": os.getpid(), "python": sys.executable, "version": sys.version.split()[0],
              "actors": [a.name for a in p.actors]}]
    for g in groups:
        r = g.ready
        procs.append({"name": g.name, "pid": r.pid if r else None, "python": r.python if r else g.python,
                      "version": r.version if r else None, "actors": list(r.actors) if r else [],
                      "exit_code": g.proc.returncode if g.proc is not None else None})
    out = {
        "profile": cfg.pipeline.profile,
        "engine": cfg.pipeline.engine,
        "source": cfg.pipeline.source,
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
        "frames_captured": captured,
        "frames_completed": completed,
        "frames_partial": partial,
        "frames_out_of_order": agg.get("out_of_order", 0),
        "dropped": dropped,
        "dropped_total": total_dropped,
        "dropped_by_reason": by_reason,
        "unaccounted": captured - completed - partial - total_dropped,
        "display": sink_summary(cfg.pipeline.display, snaps.get("display"), completed + partial),
        "faces": dict(rec.totals),
        "labels": rec.label_summary(),  # classification profiles: the most frequent top-1 labels
        "duration_s": round(elapsed, 3),
        "fps": round((completed + partial) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3),
                       "max": round(max(lat), 3) if lat else 0.0},
        "actors": per_actor,
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
    cap = snaps["capture"].counters
    if "source_reconnects" in cap:  # a camera or a stream (they reconnect)
        out["source_reconnects"] = cap["source_reconnects"]
    return out
