"""A virtual clock for ``edgepipe.actors.runtime.backoff.Clock``: its time moves only when a test says so.

Every ``sleep`` (asyncio) and ``wait`` (a thread holding a condition) on it is a ``Sleeper`` with a number
(``index``, from 1, in the order they began), a ``duration`` and a ``deadline`` in virtual seconds. A test
waits for "someone is sleeping now" with ``sleeper()`` (asyncio) or ``sleeper_blocking()`` (a thread),
on an event, never on real time, then moves the time with ``advance()``/``advance_to()``: the sleepers
whose deadline has come wake at once. ``step()`` does both: it waits for a sleeper and moves the time to
its deadline. ``slept`` lists every duration asked for, in order.

With ``auto=True`` a sleep or a wait moves the time to its own deadline at once and returns (nothing
ever blocks); for code whose waits a test does not care to step.

It may be shared by threads and an event loop: its state is under one lock, a sleeper in asyncio is woken
with ``call_soon_threadsafe``, a thread's by notifying the condition it waits on (never while holding the
clock's lock: a waiter takes its condition, then the clock's).
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable, List, Optional, Tuple

GUARD_S = 60.0  # real seconds: a test that never wakes a sleeper fails instead of hanging


class Sleeper:
    def __init__(self, index: int, duration: float, deadline: float, wake: Callable[[], None]) -> None:
        self.index = index
        self.duration = duration
        self.deadline = deadline
        self.wake = wake

    def __repr__(self) -> str:
        return "Sleeper(#%d, %.3f s, until %.3f)" % (self.index, self.duration, self.deadline)


def _resolve(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _notify(cond: threading.Condition) -> None:
    with cond:
        cond.notify_all()


class FakeClock:
    def __init__(self, start: float = 1000.0, auto: bool = False) -> None:
        self.auto = auto
        self.slept: List[float] = []
        self._now = start
        self._begun = 0
        self._pending: List[Sleeper] = []
        self._lock = threading.Condition()
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]] = []

    # ------------------------------------------------------------ the Clock
    def monotonic(self) -> float:
        with self._lock:
            return self._now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        s = self._begin(seconds, lambda: loop.call_soon_threadsafe(_resolve, fut))
        if s is None:
            await asyncio.sleep(0)  # a sleep yields, even one that takes no time
            return
        try:
            await fut
        finally:
            self._end(s)

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        s = self._begin(seconds, lambda: _notify(cond))
        if s is None:
            return
        try:
            if not cond.wait(GUARD_S):
                raise AssertionError("fake clock: %r was never woken (no advance, no notify)" % s)
        finally:
            self._end(s)

    # ------------------------------------------------------------ the test's side
    @property
    def begun(self) -> int:
        """How many sleeps and waits have begun so far (the index of the latest)."""
        with self._lock:
            return self._begun

    @property
    def pending(self) -> List[Sleeper]:
        with self._lock:
            return list(self._pending)

    def advance(self, seconds: float) -> None:
        with self._lock:
            target = self._now + seconds
        self.advance_to(target)

    def advance_to(self, t: float) -> None:
        """Move the time to ``t`` (never back); wake the sleepers whose deadline has come."""
        with self._lock:
            self._now = max(self._now, t)
            due = [s for s in self._pending if s.deadline <= self._now]
            self._pending = [s for s in self._pending if s.deadline > self._now]
        for s in due:
            s.wake()

    async def sleeper(self, begun_after: int = 0) -> Sleeper:
        """The first sleeper still asleep whose index is above ``begun_after``, once there is one."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                s = self._first_after(begun_after)
                if s is not None:
                    return s
                fut = loop.create_future()
                self._waiters.append((loop, fut))
            await fut

    def sleeper_blocking(self, begun_after: int = 0, timeout: float = GUARD_S) -> Sleeper:
        """``sleeper()`` for a thread; fails after ``timeout`` real seconds."""
        with self._lock:
            found = self._lock.wait_for(lambda: self._first_after(begun_after), timeout)
        assert found is not None, "fake clock: nobody slept after #%d within %.0f s" % (begun_after, timeout)
        return found

    async def step(self, begun_after: int = 0) -> Sleeper:
        """Wait for a sleeper (index above ``begun_after``) and move the time to its deadline."""
        s = await self.sleeper(begun_after)
        self.advance_to(s.deadline)
        return s

    def step_blocking(self, begun_after: int = 0) -> Sleeper:
        s = self.sleeper_blocking(begun_after)
        self.advance_to(s.deadline)
        return s

    # ------------------------------------------------------------ inside
    def _first_after(self, begun_after: int) -> Optional[Sleeper]:
        return next((s for s in self._pending if s.index > begun_after), None)

    def _begin(self, seconds: float, wake: Callable[[], None]) -> Optional[Sleeper]:
        """A new sleeper, or None when it has nothing to wait for (no time to wait, or ``auto``)."""
        with self._lock:
            self._begun += 1
            self.slept.append(seconds)
            if seconds <= 0 or self.auto:
                self._now += max(seconds, 0.0)
                return None
            s = Sleeper(self._begun, seconds, self._now + seconds, wake)
            self._pending.append(s)
            self._lock.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():  # a waiter of a loop that has ended is forgotten
                loop.call_soon_threadsafe(_resolve, fut)
        return s

    def _end(self, s: Sleeper) -> None:
        with self._lock:
            if s in self._pending:
                self._pending.remove(s)


class Stepper:
    """In a thread of its own: moves ``clock`` to the deadline of each new sleeper, until ``until()`` holds
    when one comes (checked before it is stepped) or the ``with`` block ends. ``steps``: what it stepped.

    For code that waits on the clock at moments the test cannot see (a read between two frames): every wait
    ends as if its whole time had passed.
    """

    def __init__(self, clock: FakeClock, until: Callable[[], bool] = lambda: False) -> None:
        self.clock = clock
        self.until = until
        self.steps: List[Sleeper] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fake-clock-stepper", daemon=True)

    def __enter__(self) -> "Stepper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        lock = self.clock._lock
        with lock:
            self._stopping = True
            lock.notify_all()
        self._thread.join(GUARD_S)
        assert not self._thread.is_alive(), "the stepper did not stop"

    def _run(self) -> None:
        clock, lock, last = self.clock, self.clock._lock, 0
        while True:
            with lock:
                lock.wait_for(lambda: self._stopping or clock._first_after(last) is not None)
                s = clock._first_after(last)
                if self._stopping or s is None:
                    return
            if self.until():
                return
            clock.advance_to(s.deadline)
            self.steps.append(s)
            last = s.index
