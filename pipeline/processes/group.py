"""A group process: runs the actors the config assigns to one group.

Started by ``run.py`` as ``python -m edgepipe.pipeline.processes.group --name NAME --config-json PATH``
with the group's interpreter, or by hand as ``python run.py group NAME --config
PATH`` (on another host, or in another venv). It reports ``ready`` on the
control endpoint once its actors run and its publishers have their
subscribers, and every actor's final metrics then ``stopped`` when it ends:
on SIGTERM, on SIGINT when started by hand (a child of run.py ignores SIGINT:
Ctrl-C reaches the whole process group, and the main process drains first), when its parent dies, or when one of its actors fails
(exit code 1).

Its actors are children of one (AnyIO) task group that ``serve`` opens
(``await tg.start(actor.supervised)``, each ready before the next), with the
watch on the main process. A group that runs cameras starts them when the
main process says that the whole pipeline is ready, and ends each camera's
stream when it says so (``orders``). An actor that dies fails the group with ActorDied
naming it, which cancels everything in it. Shutdown order is explicit, before
the block ends (shielded from that cancellation): the watch, then the actors
one by one in reverse start order;
then the final metrics and ``stopped`` go to the main process.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
from typing import Awaitable, List, Optional

import anyio

from edgepipe.actors.runtime.base import Actor, ActorDied, ActorFailed
from edgepipe.actors.runtime.tasks import cancellable, first, task_group
from edgepipe.bus.control import MAIN, link_dropped, open_client
from edgepipe.bus.messages import Eos, Ready, Stopped
from edgepipe.bus.sockets import Channel
from edgepipe.pipeline.build import RunOptions, build, make_bus
from edgepipe.pipeline.config.loading import Config, ConfigError, from_dict, load
from edgepipe.pipeline.processes.groups import assignment, check_by_hand, group_of

log = logging.getLogger("edgepipe.group")


async def orders(ctl: Channel, captures: List[Actor]) -> None:
    """What the main process says, until it asks this group to stop: ``Ready`` (the whole pipeline is
    ready: start this group's cameras), ``Eos`` for a camera (its stream ends after that frame, -1: now)."""
    by_camera = {c.camera: c for c in captures}
    while True:
        msg = await ctl.recv()
        if getattr(msg, "group", getattr(msg, "sender", None)) != MAIN:
            continue
        if isinstance(msg, Stopped):
            log.info("the main process ended the run: sending the final report")
            return
        if isinstance(msg, Ready):
            for c in captures:
                c.go()
        elif isinstance(msg, Eos) and msg.camera in by_camera:
            cap = by_camera[msg.camera]
            if msg.last_frame_id < 0:
                cap.finish()
            elif cap.max_frames is None or msg.last_frame_id + 1 < cap.max_frames:
                cap.max_frames = msg.last_frame_id + 1


async def watch_main(ctl: Channel, stop: asyncio.Event, by_hand: bool, captures: List[Actor]) -> None:
    """Set ``stop`` when the main process asks; for a group started by hand, also when the link drops."""
    if by_hand:
        await first(orders(ctl, captures), link_dropped(ctl))
    else:
        await orders(ctl, captures)
    stop.set()


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent process dies, so that no group is left orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.debug("prctl is not available; relying on the parent to stop this group")


async def serve(cfg: Config, name: str, stop: asyncio.Event, by_hand: bool = False) -> int:
    """Run the group until ``stop`` is set, the main process asks it to stop, or an actor fails; 0 on a
    clean stop. ``by_hand``: started by hand (not by run.py), so it also stops when the main process goes."""
    assign = assignment(cfg)
    if name not in cfg.groups:
        raise ConfigError("group %r is not in the config (groups: %s)" % (name, ", ".join(cfg.groups) or "none"))
    if by_hand:
        check_by_hand(cfg, assign)
    bus = make_bus(cfg)
    started: List[Actor] = []
    ctl = None
    rc = 0
    try:
        p = build(cfg, bus, RunOptions(), local=lambda role: group_of(role, assign) == name,
                  group_tpu=cfg.groups[name].tpu)
        ctl = open_client(bus, cfg.endpoints.control, name)
        try:
            async with task_group() as tg:  # the group's actors, and the watch on the main process
                watcher = await tg.start(cancellable, watch_main, ctl, stop, by_hand, p.all("capture"),
                                         name="watch main")
                try:
                    for actor in p.actors:
                        await tg.start(actor.supervised, name=actor.name)
                        started.append(actor)
                    which, _ = await first(_all(p.subscriber_waits()), stop.wait())
                    if which == 0 and not stop.is_set():
                        await ctl.send(Ready(name, os.getpid(), sys.executable, sys.version.split()[0],
                                             [a.name for a in started], dict(p.models),
                                             {r: pl.describe() for r, pl in p.placement.items()}))
                        log.info("group %s ready: %s", name, ", ".join(a.name for a in started))
                        await stop.wait()
                finally:  # explicit order, before the block ends: the watch, then the actors in reverse
                    for a in started:
                        a.stopping = True
                    watcher.cancel()  # it cleans up also when cancelled after it set ``stop``
                    # shielded: when an actor died, the group's cancellation (level-triggered) would cancel
                    # every await here
                    with anyio.CancelScope(shield=True):
                        for actor in reversed(started):
                            await actor.stop()
        except ActorDied as exc:
            log.error("group %s: %s", name, exc)
            rc = 1
    finally:
        if ctl is not None:
            for a in started:  # one PUSH socket: these arrive before the Stopped that follows them
                await ctl.send(a.snapshot(final=True), nowait=True)
            await ctl.send(Stopped(name, rc, [a.name for a in started]), nowait=True)
            ctl.close(linger_ms=2000)  # let the final report reach the main process
        bus.close()
    return rc


async def _all(waits: List[Awaitable[None]]) -> None:
    await asyncio.gather(*waits)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgepipe.pipeline.processes.group", description="run one process group")
    ap.add_argument("--name", required=True)
    ap.add_argument("--config-json", help="the effective config written by run.py")
    ap.add_argument("--config", help="a config.toml (when started by hand)")
    ap.add_argument("--child", action="store_true", help="started by run.py: stop when the parent dies")
    ap.add_argument("-v", "--verbose", action="count", default=1)
    args = ap.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.config_json:
            with open(args.config_json, encoding="utf-8") as fh:
                cfg = from_dict(json.load(fh))
        else:
            cfg = load(args.config)
    except (ConfigError, OSError, ValueError) as exc:
        print("group %s: config error: %s" % (args.name, exc), file=sys.stderr)
        return 2
    if args.child:
        _die_with_parent()
        # Ctrl-C on a terminal reaches every process of its process group: the main process drains the
        # pipeline and then stops this group with SIGTERM, so a child ignores SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return asyncio.run(_main(cfg, args.name, child=args.child))


async def _main(cfg: Config, name: str, child: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in ((signal.SIGTERM,) if child else (signal.SIGINT, signal.SIGTERM)):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await serve(cfg, name, stop, by_hand=not child)
    except Exception as exc:
        if getattr(exc, "user_facing", False) or isinstance(exc, (ConfigError, ActorFailed)):
            log.error("group %s: %s", name, exc)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
