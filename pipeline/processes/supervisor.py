"""The main process's side of process groups: spawn, watch, stop.

Each group is a child process (``python -m edgepipe.pipeline.processes.group``) run by the
group's interpreter. Its log lines are forwarded with a ``[NAME]`` prefix and
the last ones are kept for error messages. A group that exits while the
pipeline runs, or that does not report ready within its start-up timeout,
stops the whole pipeline with an error naming it; so does a group started by
hand whose control link drops while the pipeline runs (``watch_by_hand``).

A group that runs cameras starts them when the main process's own cameras
start (``start_cameras``: ``Ready`` from ``main``, after ``Eos`` from
``main`` with ``--frames``' last frame id), and ends them when the run ends
early (``finish_cameras``: ``Eos`` with -1).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections import deque
from typing import Any, Deque, Dict, List, Optional

import anyio
import anyio.abc

from edgepipe import ROOT
from edgepipe.actors.runtime.tasks import first, owned_task, start_task, task_group
from edgepipe.bus.control import MAIN
from edgepipe.bus.messages import Eos, Metric, Ready, Stopped
from edgepipe.pipeline.config.loading import Config, to_dict
from edgepipe.pipeline.processes.groups import cameras_of
from edgepipe.pipeline.rss import peak_rss_mb

log = logging.getLogger("edgepipe.groups")


class GroupFailed(RuntimeError):
    user_facing = True


class GroupProcess:
    def __init__(self, name: str, cfg: Config, config_path: str) -> None:
        self.name = name
        self.gcfg = cfg.groups[name]
        python = self.gcfg.python or sys.executable
        self.python = python if os.path.isabs(python) or os.sep not in python else os.path.join(ROOT, python)
        self.config_path = config_path
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.lines: Deque[str] = deque(maxlen=20)
        self.ready: Optional[Ready] = None
        self.stopped: Optional[Stopped] = None
        self.final: Dict[str, Metric] = {}
        self.stopping = False
        self.rss_mb = 0.0  # peak resident memory, read just before the stop
        self.exited: Optional[asyncio.Task] = None  # the watch task: ends with the exit code

    @property
    def spawned(self) -> bool:
        return self.gcfg.spawn

    async def spawn(self) -> None:
        env = dict(os.environ)
        env.update(self.gcfg.env)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        level = ["-v"] if log.isEnabledFor(logging.INFO) else []
        if log.isEnabledFor(logging.DEBUG):
            level = ["-vv"]
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "edgepipe.pipeline.processes.group", "--name", self.name, "--config-json", self.config_path,
                "--child", *level, cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise GroupFailed("group %s: cannot start %s: %s" % (self.name, self.python, exc)) from None
        self.exited, _ = await start_task(self._watch, name="group " + self.name)

    async def _forward(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            sys.stderr.write("[%s] %s\n" % (self.name, line))

    async def _watch(self, task_status: anyio.abc.TaskStatus) -> int:
        """Forward the log lines and wait for the exit; the exit code once the last lines are in."""
        assert self.proc is not None
        async with task_group() as tg:  # the block ends after the last lines, for the error message
            tg.start_soon(self._forward, name="group %s logs" % self.name)
            task_status.started()
            rc = await self.proc.wait()
        return rc

    def describe_exit(self, rc: int) -> str:
        if not self.spawned:
            return ("group %s (started by hand) went away: its control link dropped while the pipeline ran"
                    % self.name)
        how = "was killed by signal %d" % -rc if rc < 0 else "exited with code %d" % rc
        tail = "\n".join("    " + x for x in list(self.lines)[-10:])
        return "group %s (%s) %s%s" % (self.name, self.python, how, ("; last lines:\n" + tail) if tail else "")

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; wait for the exit. Safe twice. (A group started by hand is
        asked over the control link instead: ``stop_by_hand``.)"""
        self.stopping = True
        if self.proc is None or self.exited is None:
            return
        if self.proc.returncode is None:
            self.rss_mb = peak_rss_mb(self.proc.pid)
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            done, _ = await asyncio.wait([self.exited], timeout=timeout)
            if not done:
                log.warning("group %s did not stop within %.0f s; killing it", self.name, timeout)
                self.proc.kill()
        await asyncio.wait([self.exited])


def write_config(cfg: Config, run_dir: str) -> str:
    path = os.path.join(run_dir, "config.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(to_dict(cfg), fh)
    return path


async def wait_ready(groups: List[GroupProcess], control: Any, watch: List["asyncio.Future[Any]"]) -> None:
    """Wait until every group said ready; raise GroupFailed naming a group that died or timed out."""
    loop = asyncio.get_running_loop()
    deadline = {g.name: loop.time() + g.gcfg.startup_timeout_s for g in groups}
    pending = {g.name: g for g in groups}
    while pending:
        for g in pending.values():
            if g.exited is not None and g.exited.done():
                raise GroupFailed(g.describe_exit(g.exited.result()) + " before it was ready")
        now = loop.time()
        late = [n for n in pending if now >= deadline[n]]
        if late:
            g = pending[late[0]]
            tail = "\n".join("    " + x for x in list(g.lines)[-10:]) or "    (no output)"
            raise GroupFailed("group %s did not become ready within %.0f s; last lines:\n%s"
                              % (g.name, g.gcfg.startup_timeout_s, tail))
        ends = [g.exited for g in pending.values() if g.exited is not None] + list(watch)
        msg: List[Any] = []
        with anyio.move_on_after(min(deadline[n] for n in pending) - now):
            which, value = await first(control.recv(), _one_of(ends))
            if which == 0:
                msg.append(value)
        for f in watch:
            if f.done():
                f.result()  # an actor of the main process failed: raise it
        if msg:
            handle_control(msg[0], {g.name: g for g in groups})
        for n in [n for n, g in pending.items() if g.ready is not None]:
            del pending[n]


async def _one_of(futures: List["asyncio.Future[Any]"]) -> None:
    """Until one of ``futures`` is done (forever when there is none)."""
    if futures:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    else:
        await anyio.sleep_forever()


async def stop_by_hand(groups: List[GroupProcess], control: Any, timeout: float = 5.0) -> None:
    """Ask the groups started by hand that said ready to stop; wait for their final reports."""
    waiting = []
    for g in groups:
        if g.spawned or g.stopped is not None or (g.exited is not None and g.exited.done()):
            continue
        g.stopping = True
        if g.ready is not None and await control.ask_to_stop(g.name):
            waiting.append(g)
    by_name = {g.name: g for g in groups}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(g.stopped is None for g in waiting):
        left = deadline - loop.time()
        if left <= 0:
            for g in waiting:
                if g.stopped is None:
                    log.warning("group %s (started by hand) sent no final report within %.0f s; its actors' last "
                                "metrics stand in", g.name, timeout)
            return
        if await control.poll(int(left * 1000) + 1):
            msg = control.recv_nowait()
            if msg is not None:
                handle_control(msg, by_name)


def watch_by_hand(groups: List[GroupProcess], control: Any) -> Optional["asyncio.Task[None]"]:
    """For each group started by hand, an ``exited`` that is done when its control link drops (the main
    process's waits then fail naming it, as for a spawned group's exit); the task that watches (None when no
    group is started by hand)."""
    by_hand = {g.name: g for g in groups if not g.spawned}
    if not by_hand:
        return None
    loop = asyncio.get_running_loop()
    for g in by_hand.values():
        g.exited = loop.create_future()

    async def watch() -> None:
        while True:
            name = await control.dropped()
            g = by_hand.get(name)
            if g is not None and g.exited is not None and not g.exited.done():
                g.exited.set_result(0)
    return owned_task(watch, name="watch-groups-by-hand")  # the runner cancels and awaits it at the stop


async def start_cameras(cfg: Config, control: Any, frames: Optional[int]) -> None:
    """Start the cameras that groups run, each limited to ``frames`` (None: the source's end)."""
    for name, cameras in cameras_of(cfg).items():
        if frames is not None:
            for cam in cameras:
                await control.send(name, Eos(MAIN, frames - 1, 0, camera=cam))
        await control.send(name, Ready(MAIN, os.getpid(), sys.executable, sys.version.split()[0]))


async def finish_cameras(cfg: Config, control: Any) -> None:
    """End the streams of the cameras that groups run, now (Ctrl-C, --duration)."""
    for name, cameras in cameras_of(cfg).items():
        for cam in cameras:
            await control.send(name, Eos(MAIN, -1, 0, camera=cam))


async def cameras_end(cfg: Config, control: Any, drained: asyncio.Event, duration_s: Optional[float]) -> None:
    """Until the cameras that groups run have ended: the pipeline has drained, every camera's stream ended
    (at once when groups run none). After ``duration_s`` they are asked to end."""
    if control is None or not cameras_of(cfg):
        return
    if duration_s is not None:
        with anyio.move_on_after(duration_s):
            await drained.wait()
        await finish_cameras(cfg, control)
    await drained.wait()


def handle_control(msg: Any, groups: Dict[str, GroupProcess]) -> None:
    """A message from a group on the control endpoint: ``Ready``, an actor's final ``Metric``, ``Stopped``."""
    if isinstance(msg, Metric):
        if not msg.final:
            return
        for g in groups.values():  # the group that announced this actor in its Ready
            if g.ready is not None and msg.actor in g.ready.actors:
                g.final[msg.actor] = msg
                return
        log.warning("a final metric for %s, an actor no ready group runs", msg.actor)
        return
    g = groups.get(getattr(msg, "group", None))
    if g is None:
        return
    if isinstance(msg, Ready):
        g.ready = msg
        log.info("group %s ready: pid %s, Python %s (%s)", g.name, msg.pid, msg.version, msg.python)
    elif isinstance(msg, Stopped):
        g.stopped = msg
        missing = [a for a in msg.actors if a not in g.final]
        if missing:
            log.warning("group %s stopped (exit code %d) without the final metrics of %s", g.name, msg.rc,
                        ", ".join(missing))
