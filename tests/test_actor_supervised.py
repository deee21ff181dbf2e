"""Actors as children of a supervising (AnyIO) task group (Actor.supervised), as the runner and a group process run them:
ready before the next starts, ActorFailed for a failed setup, ActorDied naming an actor that dies, stop() of
one actor not a failure, cleanup and sockets closed whatever happens. Real ZeroMQ sockets."""
from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import run_async

from edgepipe.actors.runtime.base import Actor, ActorDied, ActorFailed
from edgepipe.actors.runtime.context import Context
from edgepipe.actors.runtime.tasks import task_group


class Probe(Actor):
    """An actor with one bound publisher; its run waits for ``go``, then fails, returns or goes on."""

    kind = "probe"

    def __init__(self, name, bus, log, then="wait", setup_error=None, cleanup_error=None):
        super().__init__(name, bus, {}, Context())
        self.events = log
        self.then = then
        self.setup_error = setup_error
        self.cleanup_error = cleanup_error
        self.go = asyncio.Event()
        self.running = asyncio.Event()

    async def setup(self):
        self.channel(self.bus.pub("inproc://probe-" + self.name, hwm=10, name=self.name + ".out"))
        if self.setup_error:
            raise RuntimeError(self.setup_error)
        self.events.append("ready " + self.name)

    async def run(self):
        self.running.set()
        await self.go.wait()
        if self.then == "fail":
            raise RuntimeError("it broke")
        if self.then == "wait":
            await asyncio.Event().wait()

    async def cleanup(self):
        await asyncio.sleep(0)  # an await: it must run also while the group's (level-triggered) cancellation is on
        self.events.append("cleanup " + self.name)
        if self.cleanup_error:
            raise RuntimeError(self.cleanup_error)


def test_setup_failure_raises_actor_failed_naming_it_and_the_group_goes_on(bus):
    log: list = []

    async def main():
        a = Probe("a", bus, log)
        bad = Probe("bad", bus, log, setup_error="no camera")
        async with task_group() as tg:
            await tg.start(a.supervised)
            with pytest.raises(ActorFailed, match="bad did not start: no camera"):
                await tg.start(bad.supervised)
            assert not tg.cancel_scope.cancel_called  # the group goes on
            await a.stop()
        return log

    assert run_async(main()) == ["ready a", "cleanup bad", "cleanup a"]


@pytest.mark.parametrize("then, why", [("fail", "it broke"), ("return", "returned early")])
def test_an_actor_that_dies_fails_the_group_with_actor_died_naming_it(bus, then, why):
    log: list = []

    async def main():
        a = Probe("a", bus, log)
        b = Probe("b", bus, log, then=then)
        with pytest.raises(ActorDied, match="actor b stopped: %s" % why) as err:
            async with task_group() as tg:
                await tg.start(a.supervised)
                await tg.start(b.supervised)
                await b.running.wait()
                b.go.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    log.append("body cancelled")
        assert err.value.actor == "b"
        return log

    assert sorted(run_async(main())) == ["body cancelled", "cleanup a", "cleanup b", "ready a", "ready b"]


def test_stop_of_an_actor_in_a_group_is_not_a_failure_and_the_order_is_the_callers(bus):
    log: list = []

    async def main():
        actors = [Probe(n, bus, log) for n in ("a", "b", "c")]
        async with task_group() as tg:
            for a in actors:
                await tg.start(a.supervised, name=a.name)
            assert all(a.task is not None and not a.task.done() for a in actors)
            await actors[1].stop()  # one, mid-run: the others go on
            assert not tg.cancel_scope.cancel_called and not actors[0].task.done()
            for a in reversed(actors):
                await a.stop()
            log.append("stopped; cancelled=%s" % tg.cancel_scope.cancel_called)
        return log

    assert run_async(main()) == ["ready a", "ready b", "ready c", "cleanup b", "cleanup c", "cleanup a",
                                 "stopped; cancelled=False"]


def test_an_error_while_stopping_is_logged_not_a_failure(bus, caplog):
    log: list = []

    async def main():
        a = Probe("a", bus, log, cleanup_error="flush failed")
        async with task_group() as tg:
            await tg.start(a.supervised)
            await a.stop()
            log.append("cancelled=%s" % tg.cancel_scope.cancel_called)
        return log

    with caplog.at_level(logging.ERROR, logger="edgepipe.probe"):
        assert run_async(main()) == ["ready a", "cleanup a", "cancelled=False"]
    assert any("[a] failed while stopping: flush failed" in r.getMessage() for r in caplog.records)


def test_cancelling_the_owner_cancels_every_actor_and_propagates(bus):
    log: list = []

    async def owner(up):
        actors = [Probe(n, bus, log) for n in ("a", "b")]
        async with task_group() as tg:
            for a in actors:
                await tg.start(a.supervised)
            up.set()
            await asyncio.Event().wait()

    async def main():
        up = asyncio.Event()
        task = asyncio.ensure_future(owner(up))  # cancelled from outside: asyncio's cancellation of its task
        await up.wait()
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        return sorted(log)

    assert run_async(main()) == ["cleanup a", "cleanup b", "ready a", "ready b"]


class Stubborn(Probe):
    """Its run swallows one cancellation, as ``asyncio.wait_for`` does before Python 3.12 when its inner
    future finishes as the cancellation comes (the encoder's), then waits again."""

    async def run(self):
        try:
            self.running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.events.append("swallowed " + self.name)
        await asyncio.Event().wait()  # a stop sent once would leave the actor here for ever


@pytest.mark.parametrize("how", ["supervised", "on its own"])
def test_stop_ends_an_actor_that_swallows_one_cancellation(bus, how):
    log: list = []

    async def main():
        a = Stubborn("s", bus, log)
        if how == "on its own":
            await a.start()
            await a.running.wait()
            await a.stop()
        else:
            async with task_group() as tg:
                await tg.start(a.supervised)
                await a.running.wait()
                await a.stop()
                log.append("cancelled=%s" % tg.cancel_scope.cancel_called)
        assert a.task.done()
        return log

    expected = ["ready s", "swallowed s", "cleanup s"] + (["cancelled=False"] if how == "supervised" else [])
    assert run_async(main()) == expected
