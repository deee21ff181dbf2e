"""The task-group helper (actors/tasks.py): errors, cancellation, start(), no leaks; no bare task creation."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from helpers import run_async

from edgepipe.actors.runtime.tasks import TaskGroup, first, start_task

ROOT = Path(__file__).resolve().parents[1]


class Boom(RuntimeError):
    pass


async def _forever(log: list, name: str, started: "asyncio.Event") -> None:
    try:
        started.set()
        await asyncio.Event().wait()
    finally:
        log.append(name + " finally")


def test_error_in_a_child_cancels_siblings_and_body_and_propagates():
    log: list = []

    async def main():
        up = asyncio.Event()
        go = asyncio.Event()

        async def fail():
            await go.wait()
            raise Boom("child failed")

        with pytest.raises(Boom, match="child failed"):
            async with TaskGroup() as tg:
                tg.start_soon(_forever(log, "sibling", up))
                tg.start_soon(fail())
                await up.wait()
                go.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    log.append("body finally")
        assert asyncio.current_task().cancelled() is False
        await asyncio.sleep(0)  # no cancellation left pending for the caller
        return log

    assert sorted(run_async(main())) == ["body finally", "sibling finally"]


def test_error_after_the_body_ended_cancels_siblings():
    log: list = []

    async def main():
        up = asyncio.Event()

        async def fail():
            await up.wait()
            raise Boom("late")

        with pytest.raises(Boom, match="late"):
            async with TaskGroup() as tg:
                tg.start_soon(_forever(log, "sibling", up))
                tg.start_soon(fail())
        return log

    assert run_async(main()) == ["sibling finally"]


def test_error_in_the_body_cancels_children_and_propagates():
    log: list = []

    async def main():
        up = asyncio.Event()
        with pytest.raises(Boom, match="body"):
            async with TaskGroup() as tg:
                tg.start_soon(_forever(log, "child", up))
                await up.wait()
                raise Boom("body")
        return log

    assert run_async(main()) == ["child finally"]


def test_cancellation_from_outside_reaches_children_and_their_finally_runs():
    log: list = []

    async def main():
        up = asyncio.Event()
        both = asyncio.Event()

        async def host():
            async with TaskGroup() as tg:
                tg.start_soon(_forever(log, "a", up))
                tg.start_soon(_forever(log, "b", both))
                await asyncio.Event().wait()

        task = asyncio.ensure_future(host())
        await up.wait()
        await both.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    assert sorted(run_async(main())) == ["a finally", "b finally"]


def test_cancellation_while_the_block_waits_for_children_propagates():
    log: list = []

    async def main():
        up = asyncio.Event()

        async def host():
            async with TaskGroup() as tg:
                tg.start_soon(_forever(log, "child", up))
            log.append("after the block")  # never: the cancellation propagates

        task = asyncio.ensure_future(host())
        await up.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    assert run_async(main()) == ["child finally"]


def test_cancel_ends_the_group_quietly():
    log: list = []

    async def main():
        up = asyncio.Event()
        async with TaskGroup() as tg:
            tg.start_soon(_forever(log, "child", up))
            await up.wait()
            tg.cancel()
            await asyncio.Event().wait()  # cancelled: the block ends here
        log.append("after")
        await asyncio.sleep(0)  # no cancellation left pending
        return log

    assert run_async(main()) == ["child finally", "after"]


def test_start_returns_the_value_passed_to_started():
    events: list = []

    async def child(tag, task_status):
        events.append("setup " + tag)
        task_status.started(tag + " ready")
        try:
            await asyncio.Event().wait()
        finally:
            events.append("child finally")

    async def main():
        async with TaskGroup() as tg:
            value = await tg.start(child, "x")
            events.append(value)
            tg.cancel()
        return events

    assert run_async(main()) == ["setup x", "x ready", "child finally"]


def test_start_raises_when_the_child_fails_before_started_and_the_group_goes_on():
    async def bad(task_status):
        raise Boom("setup failed")

    async def quiet(task_status):
        return None

    async def main():
        async with TaskGroup() as tg:
            with pytest.raises(Boom, match="setup failed"):
                await tg.start(bad)
            with pytest.raises(RuntimeError, match="without calling task_status.started"):
                await tg.start(quiet)
        return "ok"

    assert run_async(main()) == "ok"


def test_a_child_failing_after_started_fails_the_group():
    async def child(go, task_status):
        task_status.started()
        await go.wait()
        raise Boom("after started")

    async def main():
        go = asyncio.Event()
        with pytest.raises(Boom, match="after started"):
            async with TaskGroup() as tg:
                await tg.start(child, go)
                go.set()
                await asyncio.Event().wait()
        return "raised"

    assert run_async(main()) == "raised"


def test_cancelling_start_cancels_the_child():
    log: list = []

    async def slow(up, task_status):
        try:
            up.set()
            await asyncio.Event().wait()
        finally:
            log.append("child finally")

    async def main():
        up = asyncio.Event()
        waiter = asyncio.ensure_future(start_task(slow, up))
        await up.wait()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return log

    assert run_async(main()) == ["child finally"]


def test_start_task_hands_over_the_task():
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


def test_first_returns_the_first_result_and_cancels_the_rest():
    log: list = []

    async def main():
        up = asyncio.Event()
        go = asyncio.Event()

        async def soon():
            await up.wait()
            return "soon"

        return await first(_forever(log, "slow", up), soon(), go.wait())

    assert run_async(main()) == (1, "soon")
    assert log == ["slow finally"]


def test_first_raises_the_first_error():
    async def bad():
        raise Boom("first failed")

    async def main():
        with pytest.raises(Boom, match="first failed"):
            await first(asyncio.Event().wait(), bad())
        return "raised"

    assert run_async(main()) == "raised"


def test_no_bare_task_creation_outside_the_helper():
    pattern = re.compile(r"ensure_future|create_task")
    found = []
    for package in ("actors", "bus", "models", "pipeline"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "actors" / "runtime" / "tasks.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    found.append("%s:%d: %s" % (path.relative_to(ROOT), n, line.strip()))
    assert found == []


def test_the_group_works_under_uvloop():
    uvloop = pytest.importorskip("uvloop")
    log: list = []

    async def main():
        up = asyncio.Event()

        async def child(task_status):
            task_status.started("up")
            await _forever(log, "child", up)

        async def fail():
            await up.wait()
            raise Boom("under uvloop")

        async with TaskGroup() as tg:
            assert await tg.start(child) == "up"
            with pytest.raises(Boom, match="under uvloop"):
                async with TaskGroup() as inner:
                    inner.start_soon(fail())
                    await asyncio.Event().wait()
            tg.cancel()
        return log

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == ["child finally"]
    finally:
        loop.close()


def test_a_closed_group_refuses_new_tasks():
    async def main():
        async with TaskGroup() as tg:
            pass
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError, match="not running"):
                tg.start_soon(coro)
        finally:
            coro.close()
        return "refused"

    assert run_async(main()) == "refused"


def test_a_child_cancelled_on_purpose_is_not_a_failure():
    log: list = []

    async def child(tag, task_status):
        task_status.started(asyncio.current_task())
        try:
            await asyncio.Event().wait()
        finally:
            log.append(tag + " finally")

    async def main():
        async with TaskGroup() as tg:
            one = await tg.start(child, "one")
            await tg.start(child, "two")
            one.cancel()
            await asyncio.wait([one])
            log.append("body goes on, failed=%s" % tg.failed)
            tg.cancel()
        return log

    assert run_async(main()) == ["one finally", "body goes on, failed=False", "two finally"]


def test_failed_tells_the_body_a_child_failed():
    seen: list = []

    async def child(go, task_status):
        task_status.started()
        await go.wait()
        raise Boom("late")

    async def main():
        go = asyncio.Event()
        with pytest.raises(Boom, match="late"):
            async with TaskGroup() as tg:
                await tg.start(child, go)
                seen.append(tg.failed)
                go.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    seen.append(tg.failed)
        return seen

    assert run_async(main()) == [False, True]
