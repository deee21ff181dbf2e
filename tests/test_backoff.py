"""``runtime.backoff``: the delays of ``Backoff``, the system clock, and the virtual clock the tests use."""
from __future__ import annotations

import asyncio
import threading
from typing import List

import pytest
from fake_clock import FakeClock
from helpers import run_async

from edgepipe.actors.runtime.backoff import SYSTEM_CLOCK, Backoff


def test_delays_double_up_to_the_cap_and_start_again_after_a_reset():
    b = Backoff(0.5, 10.0)
    assert [b.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert b.failures == 8
    b.reset()
    assert b.failures == 0
    assert [b.next() for _ in range(3)] == [0.5, 1.0, 2.0]
    b = Backoff(0.05, 0.5, factor=3.0)
    assert [b.next() for _ in range(4)] == pytest.approx([0.05, 0.15, 0.45, 0.5])
    b = Backoff(1.0, 1.0, factor=1.0)
    assert [b.next() for _ in range(3)] == [1.0, 1.0, 1.0]


def test_jitter_is_off_by_default_and_shortens_each_delay_by_up_to_its_fraction():
    b = Backoff(1.0, 8.0, jitter=0.5, rand=iter([0.0, 1.0, 0.5, 1.0]).__next__)
    assert [b.next() for _ in range(4)] == [1.0, 1.0, 3.0, 4.0]  # 1*(1-0), 2*(1-.5), 4*(1-.25), 8*(1-.5)
    b.reset()
    assert Backoff(1.0, 8.0).jitter == 0.0


@pytest.mark.parametrize("args", [(0.0, 1.0), (2.0, 1.0), (1.0, 2.0, 0.5), (1.0, 2.0, 2.0, 1.5)])
def test_bad_settings_are_refused(args):
    with pytest.raises(ValueError):
        Backoff(*args)


def test_the_system_clock_is_the_real_time():
    cond = threading.Condition()
    t0 = SYSTEM_CLOCK.monotonic()
    with cond:
        SYSTEM_CLOCK.wait(cond, 0.01)
    run_async(SYSTEM_CLOCK.sleep(0.01))
    assert SYSTEM_CLOCK.monotonic() - t0 >= 0.02


def test_a_retry_loop_on_the_fake_clock_takes_no_real_time():
    clock = FakeClock(auto=True)

    async def retry() -> int:
        b = Backoff(0.5, 4.0)
        for attempt in range(6):
            await clock.sleep(b.next())
        return attempt

    t0 = clock.monotonic()
    run_async(retry())
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert clock.monotonic() - t0 == 15.5


def test_the_fake_clock_wakes_a_sleeper_when_a_test_moves_it_to_its_deadline():
    clock = FakeClock()
    woke: List[float] = []

    async def main():
        async def nap() -> None:
            await clock.sleep(2.0)
            woke.append(clock.monotonic())
        task = asyncio.ensure_future(nap())
        s = await clock.sleeper()
        assert (s.index, s.duration, s.deadline) == (1, 2.0, 1002.0) and not woke
        clock.advance(1.5)  # not yet
        assert clock.pending == [s]
        clock.advance(0.5)
        await task
        assert woke == [1002.0] and clock.pending == []
    run_async(main())


def test_a_thread_waiting_on_a_condition_is_stepped_or_notified():
    clock = FakeClock()
    cond = threading.Condition()
    ended: List[str] = []

    def waiter(name: str, seconds: float) -> None:
        with cond:
            clock.wait(cond, seconds)
        ended.append(name)

    t = threading.Thread(target=waiter, args=("stepped", 3.0))
    t.start()
    s = clock.step_blocking()
    t.join(30)
    assert ended == ["stepped"] and s.duration == 3.0 and clock.monotonic() == 1003.0
    t = threading.Thread(target=waiter, args=("notified", 3.0))
    t.start()
    clock.sleeper_blocking(begun_after=s.index)
    with cond:
        cond.notify_all()  # a condition's own notify ends the wait too (the caller checks its deadline)
    t.join(30)
    assert ended == ["stepped", "notified"] and clock.pending == [] and clock.monotonic() == 1003.0
