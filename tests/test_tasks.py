"""What actors/runtime/tasks.py adds to AnyIO's task groups: errors unwrapped at the group's boundary,
spawn() handing over a child's task, cancellable() children, first(), start_task(); no bare task creation
elsewhere. (AnyIO's own semantics are AnyIO's tests.)"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import anyio
import pytest
from helpers import run_async

from edgepipe.actors.runtime.tasks import cancellable, first, spawn, start_task, task_group

ROOT = Path(__file__).resolve().parents[1]


class Boom(RuntimeError):
    pass


async def _forever(log: list, name: str, started: "asyncio.Event") -> None:
    try:
        started.set()
        await asyncio.Event().wait()
    finally:
        log.append(name + " finally")


def test_a_child_error_leaves_the_group_unwrapped_and_the_siblings_are_cancelled():
    log: list = []

    async def main():
        up = asyncio.Event()

        async def fail():
            await up.wait()
            raise Boom("child failed")

        with pytest.raises(Boom, match="child failed") as err:
            async with task_group() as tg:
                tg.start_soon(_forever, log, "sibling", up)
                tg.start_soon(fail)
        assert err.value.__suppress_context__  # no ExceptionGroup printed above it
        return log

    assert run_async(main()) == ["sibling finally"]


def test_a_body_error_leaves_the_group_unwrapped_with_its_cause():
    async def main():
        with pytest.raises(Boom, match="body") as err:
            async with task_group():
                try:
                    raise KeyError("why")
                except KeyError as exc:
                    raise Boom("body") from exc
        assert isinstance(err.value.__cause__, KeyError)
        return "raised"

    assert run_async(main()) == "raised"


def test_the_same_error_from_a_child_and_the_body_is_raised_once():
    async def main():
        async def fail(task_status):
            task_status.started(asyncio.current_task())
            raise Boom("once")

        with pytest.raises(Boom, match="once"):
            async with task_group() as tg:
                task = await tg.start(fail)
                await asyncio.wait([task])
                task.result()  # the body raises the child's error too (as wait_ready does with an actor's)
        return "raised"

    assert run_async(main()) == "raised"


def test_an_error_from_a_nested_group_is_unwrapped():
    async def main():
        async def inner():
            async with anyio.create_task_group() as tg:  # AnyIO's own: it wraps
                tg.start_soon(_raise, Boom("deep"))

        with pytest.raises(Boom, match="deep"):
            async with task_group() as tg:
                tg.start_soon(inner)
        return "raised"

    assert run_async(main()) == "raised"


async def _raise(exc: BaseException) -> None:
    raise exc


def test_two_errors_at_once_raise_the_first_with_the_group_as_its_cause():
    async def main():
        with pytest.raises(Boom) as err:
            async with task_group() as tg:
                tg.start_soon(_raise, Boom("one"))
                tg.start_soon(_raise, Boom("two"))
        group = err.value.__cause__
        assert sorted(str(e) for e in group.exceptions) == ["one", "two"]
        return str(err.value)

    assert run_async(main()) in ("one", "two")


def test_cancellation_from_outside_leaves_the_group_as_cancellation():
    log: list = []

    async def main():
        up = asyncio.Event()

        async def host():
            async with task_group() as tg:
                tg.start_soon(_forever, log, "child", up)
                await asyncio.Event().wait()

        task = asyncio.ensure_future(host())
        await up.wait()
        task.cancel()
        await asyncio.wait([task])
        return task.cancelled(), log

    assert run_async(main()) == (True, ["child finally"])


def test_spawn_hands_over_the_running_child_task():
    async def main():
        async def child():
            return asyncio.current_task().get_name()

        async with task_group() as tg:
            task = await spawn(tg, child(), name="worker")
            await asyncio.wait([task])
        return task.result()

    assert run_async(main()) == "worker"


def test_a_cancellable_child_ends_alone_and_the_group_goes_on():
    log: list = []

    async def child(name, up, ended):
        try:
            await _forever(log, name, up)
        finally:
            ended.set()

    async def main():
        one, two, one_ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
        async with task_group() as tg:
            scope = await tg.start(cancellable, child, "one", one, one_ended)
            await tg.start(cancellable, child, "two", two, asyncio.Event())
            await one.wait()
            await two.wait()
            scope.cancel()
            await one_ended.wait()
            log.append("body goes on, cancelled=%s" % tg.cancel_scope.cancel_called)
            tg.cancel_scope.cancel()
        return log

    assert run_async(main()) == ["one finally", "body goes on, cancelled=False", "two finally"]


def test_first_returns_the_first_result_and_cancels_the_rest():
    log: list = []

    async def main():
        up = asyncio.Event()
        go = asyncio.Event()

        async def soon():
            await up.wait()
            return "soon"

        value = await first(_forever(log, "slow", up), soon(), go.wait())
        await asyncio.sleep(0)  # no cancellation left pending for the caller
        return value

    assert run_async(main()) == (1, "soon")
    assert log == ["slow finally"]


def test_first_raises_the_first_error_unwrapped():
    async def main():
        async def bad():
            raise Boom("first failed")

        with pytest.raises(Boom, match="first failed"):
            await first(asyncio.Event().wait(), bad())
        return "raised"

    assert run_async(main()) == "raised"


def test_cancelling_first_cancels_every_awaitable():
    log: list = []

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        task = asyncio.ensure_future(first(_forever(log, "a", a), _forever(log, "b", b)))
        await a.wait()
        await b.wait()
        task.cancel()
        await asyncio.wait([task])
        return task.cancelled()

    assert run_async(main()) is True
    assert sorted(log) == ["a finally", "b finally"]


def test_start_task_hands_over_the_task_and_the_started_value():
    async def child(task_status):
        task_status.started(7)
        await asyncio.Event().wait()

    async def main():
        task, value = await start_task(child, name="worker")
        assert task.get_name() == "worker" and not task.done()
        task.cancel()
        await asyncio.wait([task])
        return value

    assert run_async(main()) == 7


def test_start_task_raises_when_the_child_fails_or_returns_before_started():
    async def bad(task_status):
        raise Boom("setup failed")

    async def quiet(task_status):
        return None

    async def main():
        with pytest.raises(Boom, match="setup failed"):
            await start_task(bad)
        with pytest.raises(RuntimeError, match="without calling task_status.started"):
            await start_task(quiet)
        return "ok"

    assert run_async(main()) == "ok"


def test_cancelling_start_task_cancels_the_child():
    log: list = []

    async def slow(up, task_status):
        await _forever(log, "child", up)

    async def main():
        up = asyncio.Event()
        waiter = asyncio.ensure_future(start_task(slow, up))
        await up.wait()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return log

    assert run_async(main()) == ["child finally"]


def test_no_bare_task_creation_outside_the_helper():
    pattern = re.compile(r"\b(ensure_future|create_task)\(")  # not AnyIO's create_task_group
    found = []
    for package in ("actors", "bus", "models", "pipeline"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "actors" / "runtime" / "tasks.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    found.append("%s:%d: %s" % (path.relative_to(ROOT), n, line.strip()))
    assert found == []


def test_the_helpers_work_under_uvloop():
    uvloop = pytest.importorskip("uvloop")
    log: list = []

    async def main():
        up = asyncio.Event()

        async def child(task_status):
            task_status.started("up")
            await _forever(log, "child", up)

        task, value = await start_task(child)
        assert value == "up"
        with pytest.raises(Boom, match="under uvloop"):
            async with task_group() as tg:
                tg.start_soon(_raise, Boom("under uvloop"))
                await asyncio.Event().wait()
        assert await first(up.wait(), asyncio.Event().wait()) == (0, True)
        task.cancel()
        await asyncio.wait([task])
        return log

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == ["child finally"]
    finally:
        loop.close()
