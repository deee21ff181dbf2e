"""Exponential backoff, and the clock that code which waits reads the time from and sleeps on.

- ``Backoff``: the delays of a retry loop. ``next()`` after each failure gives ``first_s``, then ``factor``
  times more each time, at most ``max_s``; ``reset()`` after a success starts again from ``first_s``.
  ``jitter`` (a fraction, off by default) shortens each delay by a random part of up to that fraction, so
  that many clients retrying together spread out.
- ``Clock``: ``monotonic()``, ``await sleep(s)`` (asyncio code) and ``wait(cond, s)`` (a thread that holds
  a ``threading.Condition`` and waits on it at most ``s`` seconds; it may return early, as
  ``Condition.wait`` does, so callers loop on a deadline read from the same clock). ``SYSTEM_CLOCK`` is the
  real one (``time.monotonic``, ``asyncio.sleep``, ``Condition.wait``); tests pass a virtual clock instead
  (``tests/fake_clock.py``) so that a backoff or a read timeout takes no real time.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Callable, Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (asyncio)."""

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        """With ``cond`` held: release it and wait until it is notified or ``seconds`` pass (a thread)."""


class SystemClock:
    """The real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        cond.wait(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


class Backoff:
    """Delays that grow by ``factor`` from ``first_s`` up to ``max_s``; ``reset()`` on success."""

    def __init__(self, first_s: float, max_s: float, factor: float = 2.0, jitter: float = 0.0,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0.0 < first_s <= max_s:
            raise ValueError("backoff: need 0 < first_s <= max_s, got %r and %r" % (first_s, max_s))
        if factor < 1.0 or not 0.0 <= jitter <= 1.0:
            raise ValueError("backoff: need factor >= 1 and 0 <= jitter <= 1, got %r and %r" % (factor, jitter))
        self.first_s = first_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self.rand = rand
        self.failures = 0  # next() calls since the last reset()
        self._next = first_s

    def next(self) -> float:
        """The delay before the next attempt (one more failure)."""
        delay = self._next
        self._next = min(delay * self.factor, self.max_s)
        self.failures += 1
        if self.jitter:
            delay *= 1.0 - self.jitter * self.rand()
        return delay

    def reset(self) -> None:
        """A success: the next failure waits ``first_s`` again."""
        self._next = self.first_s
        self.failures = 0
