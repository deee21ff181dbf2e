"""Run the pipeline: the main process's actors in one event loop, groups as child processes.

Start-up: the main process's actors start (consumers first; ``start()`` of
each returns when it is ready), then the groups are spawned and report ready
over the control endpoint, and every publisher waits until its subscribers
are attached (ZeroMQ's slow joiner). Only then does the source start. The run
ends when the source ends, ``--frames`` or ``--duration`` is reached, or
``stop`` is set (Ctrl-C); the pipeline then drains (every frame captured
comes out completed, partial or counted as dropped) and everything stops.
Any actor or group that dies stops the run with an error naming it.

The main process's actors are children of one (AnyIO) task group that ``run`` opens
(``await tg.start(actor.supervised)``, each ready before the next): an actor
that dies fails the group with ActorDied naming it, which cancels the run's
body and every actor. Each wait of the runner (``_until``) also watches the
groups' processes and raises GroupFailed naming a group that died.
Cancelling ``run`` cancels everything from the top. Shutdown order is
explicit, in the body's ``finally`` before the block ends (shielded from the
group's cancellation): the groups stop first (SIGTERM, or asked over the
control link), then the main process's actors one by one in reverse start
order.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Dict, List, Optional, Tuple

import anyio
import anyio.abc

from edgepipe.actors.monitoring.resources import reset_process_meter
from edgepipe.actors.runtime.base import Actor, ActorDied
from edgepipe.actors.runtime.tasks import first, task_group
from edgepipe.bus.control import ControlServer
from edgepipe.bus.rundir import PIPELINE, PipelineDir, RunDir
from edgepipe.pipeline.build import Pipeline, RunOptions, build, make_bus
from edgepipe.pipeline.config.loading import Config, endpoint_names, expand_endpoints
from edgepipe.pipeline.plan.source_auto import resolve_source
from edgepipe.pipeline.processes.groups import MAIN, assignment, group_of, plan, with_fer_processes
from edgepipe.pipeline.processes.supervisor import (GroupFailed, GroupProcess, cameras_end, finish_cameras,
                                                    handle_control, start_cameras, stop_by_hand, wait_ready,
                                                    watch_by_hand, write_config)
from edgepipe.pipeline.rss import reset_peak
from edgepipe.pipeline.summary import summarize

__all__ = ["RunOptions", "run", "summarize"]

log = logging.getLogger("edgepipe.runner")

PUBLIC = ("results", "metrics")  # the endpoints outside clients subscribe to
CLIENT_GRACE_S = 0.3  # from binding them to the first frame: a waiting client's reconnect (see docs/wire.md)


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


def _raise_failure(done, groups: List[GroupProcess]) -> None:
    for g in groups:
        if g.exited in done and not g.stopping:
            exc = GroupFailed(g.describe_exit(g.exited.result()))
            exc.group = g.name  # type: ignore[attr-defined]
            raise exc


async def _until(aw: Awaitable[Any], groups: List[GroupProcess]) -> Any:
    """Await ``aw``; raise GroupFailed if a group dies first (``aw`` is then cancelled). An actor that dies
    fails the run's task group, which cancels this wait."""
    watch = [g.exited for g in groups if g.exited is not None]
    out: List[Any] = []

    async def main(scope: anyio.CancelScope) -> None:
        out.append(await aw)
        scope.cancel()

    async with task_group() as tg:
        tg.start_soon(main, tg.cancel_scope)
        while watch:
            done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
            _raise_failure(done, groups)  # the group then cancels ``main``
            watch = [w for w in watch if w not in done]  # a group that stopped on purpose
        await anyio.sleep_forever()
    return out[0]


class _Started:
    """What a run has started so far, to stop in order: groups first, then actors in reverse."""

    def __init__(self) -> None:
        self.actors: List[Actor] = []
        self.groups: List[GroupProcess] = []
        self.control: Optional[ControlServer] = None
        self.watch: Optional[asyncio.Task] = None  # the control links of the groups started by hand


def _open_run(cfg: Config) -> Tuple[Config, RunDir]:
    """The run's private folder (mode 0700; ipc://{run}/NAME endpoints live there), the folder of the
    pipeline's name when an endpoint is in it (ipc://{pipeline}/NAME: the public ones; a pipeline of that name
    running already refuses this one), and its endpoints."""
    if cfg.pipeline.source == "auto":
        cfg.pipeline.source, why = resolve_source(cfg.pipeline.source)
        log.info("source auto: %s (%s)", cfg.pipeline.source, why)
    for name, cam in cfg.cameras.items():
        if cam.source == "auto":
            cam.source, why = resolve_source(cam.source)
            log.info("camera %s: source auto: %s (%s)", name, cam.source, why)
    named = any(PIPELINE in getattr(cfg.endpoints, k) for k in endpoint_names())
    pipeline_dir = PipelineDir.claim(cfg.pipeline.name) if named else None
    try:
        rundir = RunDir.create()
    except BaseException:
        if pipeline_dir is not None:
            pipeline_dir.release()
        raise
    rundir.pipeline = pipeline_dir
    try:
        cfg = with_fer_processes(expand_endpoints(cfg, rundir))  # fer.processes: a group per FER worker
        if cfg.groups:
            cfg = plan(cfg, rundir.path)
    except BaseException:
        rundir.remove()
        raise
    log.debug("results at %s, metrics at %s", cfg.endpoints.results, cfg.endpoints.metrics)  # run.py prints them
    return cfg, rundir


async def _start(p: Pipeline, cfg: Config, bus: Any, run_dir: str, st: _Started, tg: anyio.abc.TaskGroup) -> None:
    """Start the main process's actors in ``tg`` (each ready before the next), then the groups; wait until
    every group said it is ready and every publisher has its subscribers."""
    if cfg.groups:
        st.control = ControlServer(bus, cfg.endpoints.control)
    for actor in p.actors:
        await tg.start(actor.supervised, name=actor.name)
        st.actors.append(actor)
    if cfg.groups:
        path = write_config(cfg, run_dir)
        st.groups = [GroupProcess(name, cfg, path) for name in cfg.groups]
        for g in st.groups:
            if g.spawned:
                await g.spawn()
            else:
                log.warning("waiting for group %s, started by hand: python run.py group %s --config ...",
                            g.name, g.name)
        assert st.control is not None
        await wait_ready(st.groups, st.control, [a.task for a in st.actors if a.task is not None])
        st.watch = watch_by_hand(st.groups, st.control)
    t_bound = time.monotonic()  # every endpoint is bound now, the public ones too
    await _until(asyncio.gather(*p.subscriber_waits()), st.groups)
    if any(not getattr(cfg.endpoints, k).startswith("inproc://") for k in PUBLIC):
        # an outside client that connected before the start (to a path not bound yet) is retrying: ZeroMQ
        # retries every ZMQ_RECONNECT_IVL (100 ms) plus up to as much again; the first frame waits for it
        await anyio.sleep(max(0.0, t_bound + CLIENT_GRACE_S - time.monotonic()))
    log.info("pipeline ready: profile %s, source %s; %s", cfg.pipeline.profile, cfg.pipeline.source,
             "; ".join(pl.describe() for pl in p.placement.values()))


async def _stop(st: _Started, bus: Any) -> List[str]:
    """Stop what started: the groups (with their final reports), then the actors in reverse start order.
    Returns the sockets an actor left open. Shielded by the caller: when an actor died, or the run was
    cancelled, the task group's cancellation (level-triggered) would cancel every await here, and no group
    process may be left behind."""
    for actor in st.actors:
        actor.stopping = True  # from here on an actor that ends is not a failure of the run
    if st.watch is not None:
        st.watch.cancel()
        await asyncio.gather(st.watch, return_exceptions=True)  # its end awaited: no task outlives the run
    try:
        for g in st.groups:
            await g.stop()
        if st.control is not None:
            await stop_by_hand(st.groups, st.control)
            _collect_reports(st.control, st.groups)
    finally:
        for actor in reversed(st.actors):
            await actor.stop()
        leaked = bus.open_channels()
        if st.control is not None:
            leaked = [x for x in leaked if not x.startswith("runner.control")]
            st.control.close()
        if leaked:
            log.error("sockets left open by actors: %s", leaked)
        bus.close()
    return leaked


async def run(cfg: Config, opts: RunOptions, stop: Optional[asyncio.Event] = None,
              on_ready: Optional[Any] = None) -> Dict[str, Any]:
    """Run the pipeline to its end; return the summary (see ``summary.summarize``)."""
    reset_peak()  # the summary's RSS is this run's peak, also when a benchmark runs many in one process
    reset_process_meter()  # and its CPU % this run's average
    cfg, rundir = _open_run(cfg)
    assign = assignment(cfg)
    bus = make_bus(cfg)
    p: Optional[Pipeline] = None
    st = _Started()
    t_go = time.monotonic()
    drained = interrupted = False
    leaked: List[str] = []
    died: Optional[Exception] = None  # a group or an actor that died once the pipeline ran
    try:
        p = build(cfg, bus, opts, local=lambda role: group_of(role, assign) == MAIN)
        async with task_group() as tg:  # the main process's actors
            try:
                await _start(p, cfg, bus, rundir.path, st, tg)
                if on_ready is not None:
                    on_ready(p)
                captures, recorder = p.all("capture"), p.one("recorder")
                t_go = time.monotonic()
                for capture in captures:
                    capture.go()
                if st.control is not None:  # and the cameras that groups run
                    await start_cameras(cfg, st.control, opts.frames)
                drained, interrupted = await _run_and_drain(cfg, captures, recorder, stop, st, opts.duration_s)
            except GroupFailed as exc:  # the summary is still written, naming what died
                died = exc
            finally:
                with anyio.CancelScope(shield=True):  # in order, before the block ends; the actors' tasks end there
                    leaked = await _stop(st, bus)
    except ActorDied as exc:  # raised by the task group once the body has stopped what started
        died = exc
    finally:
        rundir.remove()
    summary = summarize(p, t_go, drained, interrupted, st.groups)
    summary["leaked_sockets"] = leaked
    if died is not None:
        summary["failure"] = _failure_report(died, summary, st.groups)
        died.summary = summary  # type: ignore[attr-defined]
        raise died
    return summary


async def _run_and_drain(cfg: Config, captures: List[Any], recorder: Any, stop: Optional[asyncio.Event],
                         st: _Started, duration_s: Optional[float]) -> Tuple[bool, bool]:
    """Run until every camera's source ends (those that groups run too) or ``stop``; drain.
    (drained, interrupted)."""
    started, groups = st.actors, st.groups
    ends = [asyncio.gather(_all_done(captures), cameras_end(cfg, st.control, recorder.drained, duration_s))]
    which, _ = await _until(first(*ends, *([stop.wait()] if stop is not None else [])), groups)
    interrupted = which == 1  # stopped before every camera ended (first() cancels the others' wait)
    if interrupted:
        for capture in captures:
            capture.finish()  # no new frames; what is in flight drains below
        if st.control is not None:
            await finish_cameras(cfg, st.control)
    timeout = cfg.pipeline.drain_timeout_s if not interrupted else min(1.5, cfg.pipeline.drain_timeout_s)
    try:
        await asyncio.wait_for(_until(recorder.drained.wait(), groups), timeout)
    except asyncio.TimeoutError:
        log.warning("pipeline did not drain within %.1f s; frames still in flight are reported as unaccounted",
                    timeout)
        return False, interrupted
    display = next((a for a in started if a.name == "display"), None)
    if display is not None and getattr(display, "every_frame", False):
        try:  # a video file: let it write the last results (what it cannot is counted as dropped)
            await asyncio.wait_for(_until(display.drained.wait(), groups), timeout)
        except asyncio.TimeoutError:
            log.warning("the display did not write its last results within %.1f s", timeout)
    return True, interrupted


async def _all_done(captures: List[Any]) -> None:
    """Until every camera's capture has sent its last frame."""
    for capture in captures:
        await capture.done.wait()


def _collect_reports(control, groups: List[GroupProcess]) -> None:
    by_name = {g.name: g for g in groups}
    while True:
        msg = control.recv_nowait()
        if msg is None:
            return
        handle_control(msg, by_name)
