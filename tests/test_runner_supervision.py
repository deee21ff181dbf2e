"""The runner's task group of actors (pipeline/runner.py): an actor that dies mid-run ends the run with ActorDied
naming it and the summary attached; cancelling the run from outside cancels every actor (their ``finally`` runs)
and propagates. In one event loop over inproc:// with the fake engine; the fault is real: the aggregator's
publisher is closed under it, so its next send fails."""
from __future__ import annotations

import asyncio

import pytest
import zmq
from helpers import inproc_config, run_async

from edgepipe.actors.runtime.base import ActorDied
from edgepipe.pipeline.runner import RunOptions, run


def _close_output(actor) -> None:
    for ch in actor._channels:
        if ch.socket_type == zmq.XPUB:
            ch.close()


def test_an_actor_that_dies_mid_run_ends_it_with_actor_died_naming_it():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=0"})
    seen = {}

    def on_ready(p):
        seen["p"] = p
        _close_output(p.one("aggregator"))

    with pytest.raises(ActorDied, match="actor aggregator stopped: ") as err:
        run_async(run(cfg, RunOptions(frames=50), on_ready=on_ready))
    s = err.value.summary
    assert err.value.actor == "aggregator"
    assert s["failure"]["group"] == "main" and s["failure"]["actors_lost"] == ["aggregator"]
    assert s["failure"]["frames_lost"] == s["unaccounted"]
    assert s["leaked_sockets"] == []
    p = seen["p"]
    assert all(a.task.done() for a in p.actors)
    hub = p.one("metrics")
    assert set(a.name for a in p.actors if a is not hub) <= set(s["actors"])  # every actor's final figures


def test_cancelling_the_run_from_outside_cancels_every_actor_and_propagates():
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1,fps=30"})
    seen = {}

    async def main():
        ready = asyncio.Event()

        def on_ready(p):
            seen["p"] = p
            ready.set()

        runner = asyncio.ensure_future(run(cfg, RunOptions(duration_s=600.0), on_ready=on_ready))
        await ready.wait()
        runner.cancel()
        await asyncio.wait([runner])
        return runner.cancelled()

    assert run_async(main()) is True
    p = seen["p"]
    assert all(a.task.done() for a in p.actors)
    assert all(ch.closed for a in p.actors for ch in a._channels)  # each actor's finally ran
