"""Structured concurrency for Python 3.9: a small task group in the spirit of AnyIO's.

``TaskGroup`` is an async context manager. Tasks started in it (``start_soon``,
``start``) belong to it: leaving the ``async with`` block waits for all of
them. The first task that fails cancels its siblings and the block's body,
and the group re-raises that first error. Cancelling the task that runs the
block cancels every child, whose ``finally`` then runs. ``start(fn)`` calls
``fn(..., task_status=...)`` and returns once the child called
``task_status.started(value)``; it raises the child's error if the child
failed (or returned) first. ``cancel()`` ends the group: children and body
are cancelled and the block exits quietly.
(On Python 3.9, which cannot tell two cancellations of a task apart, a
cancellation from outside that arrives in the same step as ``cancel()`` is
taken for the group's own; 3.11+ counts them, and it propagates.)

``start_task(fn)`` is ``start`` for an object that keeps its own task (an
actor's ``start()``/``stop()``): the caller owns the returned task.

This is the only module of the package that creates tasks.
"""
from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable, Optional, Set, Tuple


class TaskStatus:
    """Handed to a child started with ``start``: it calls ``started()`` once it is ready."""

    def __init__(self, fut: "asyncio.Future[Any]") -> None:
        self._fut = fut

    def started(self, value: Any = None) -> None:
        if not self._fut.done():
            self._fut.set_result(value)

    @property
    def is_started(self) -> bool:
        """``started()`` was called (or the start was abandoned)."""
        return self._fut.done()


class TaskGroup:
    def __init__(self) -> None:
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._host: Optional["asyncio.Task[Any]"] = None
        self._in_body = False
        self._error: Optional[BaseException] = None
        self._cancelled = False  # cancel() was called, or a child failed
        self._host_cancelled = False  # we cancelled the body: its CancelledError is ours to absorb
        self._open = False  # between entering the block and the end of its exit

    async def __aenter__(self) -> "TaskGroup":
        self._host = asyncio.current_task()
        self._in_body = self._open = True
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            return await self._exit(exc_type, exc)
        finally:
            self._open = False

    async def _exit(self, exc_type: Any, exc: Any) -> bool:
        self._in_body = False
        ours = exc_type is not None and issubclass(exc_type, asyncio.CancelledError) and self._host_cancelled
        outside = exc_type is not None and not ours
        if exc is not None and not isinstance(exc, asyncio.CancelledError) and self._error is None:
            self._error = exc  # the body failed: that is the group's error
        if outside:
            self._cancel_children()
        while self._tasks:
            try:
                await asyncio.wait(set(self._tasks))
            except asyncio.CancelledError:
                if self._host_cancelled and not ours:
                    ours = True  # the cancellation we sent to the body arrived here
                else:
                    outside = True
                self._cancel_children()
        if self._host_cancelled and not ours:
            try:  # the body ended before our cancellation reached it: take it now, not in the caller
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass
        if self._host_cancelled and self._host is not None and hasattr(self._host, "uncancel"):
            # Python 3.11+: take back our cancel request; one from outside remains counted
            if self._host.uncancel() > 0:
                outside = True
                ours = False
        if self._error is not None and self._error is not exc:
            raise self._error
        if outside and (exc_type is None or ours):
            raise asyncio.CancelledError()
        return ours and self._error is None

    # ------------------------------------------------------------ starting children
    def start_soon(self, aw: Awaitable[Any], name: Optional[str] = None) -> "asyncio.Task[Any]":
        """Run ``aw`` (a coroutine) as a child of this group."""
        if not self._open:
            raise RuntimeError("this task group is not running: start tasks inside its async with block")
        task = asyncio.ensure_future(aw)
        if name is not None:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._child_done)
        if self._cancelled:
            task.cancel()
        return task

    async def start(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: Optional[str] = None) -> Any:
        """Run ``fn(*args, task_status=...)`` as a child; return the value it passes to ``started()``."""
        task, value = await _start(fn, args, name, self)
        return value

    @property
    def failed(self) -> bool:
        """A child (or the body) failed: the group has cancelled, or is cancelling, its body."""
        return self._error is not None

    def cancel(self) -> None:
        """End the group: cancel every child and the body; the ``async with`` block then exits quietly."""
        self._cancelled = True
        self._cancel_children()
        self._cancel_host()

    # ------------------------------------------------------------ internals
    def _adopt(self, task: "asyncio.Task[Any]") -> None:
        if task.done():
            self._child_done(task)
            return
        self._tasks.add(task)
        task.add_done_callback(self._child_done)
        if self._cancelled:
            task.cancel()

    def _cancel_children(self) -> None:
        for t in self._tasks:
            t.cancel()

    def _cancel_host(self) -> None:
        if self._in_body and self._host is not None and not self._host_cancelled:
            self._host_cancelled = True
            self._host.cancel()

    def _child_done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._error is None:
            self._error = exc
            self._cancelled = True
            self._cancel_children()
            self._cancel_host()


async def _start(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], name: Optional[str],
                 group: Optional[TaskGroup]) -> Tuple["asyncio.Task[Any]", Any]:
    loop = asyncio.get_running_loop()
    fut: "asyncio.Future[Any]" = loop.create_future()
    task = asyncio.ensure_future(fn(*args, task_status=TaskStatus(fut)))
    if name is not None:
        task.set_name(name)

    def _early_end(t: "asyncio.Task[Any]") -> None:
        if fut.done():
            return
        if t.cancelled():
            fut.set_exception(RuntimeError("%s was cancelled before it called task_status.started()"
                                           % task.get_name()))
        elif t.exception() is not None:
            fut.set_exception(t.exception())  # type: ignore[arg-type]
        else:
            fut.set_exception(RuntimeError("%s ended without calling task_status.started()" % task.get_name()))

    task.add_done_callback(_early_end)
    try:
        value = await asyncio.shield(fut)
    except BaseException:
        task.remove_done_callback(_early_end)
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: it is raised here, not logged as never retrieved
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled():
            fut.exception()
        raise
    task.remove_done_callback(_early_end)
    if group is not None:
        group._adopt(task)  # from now on the child's failure is the group's
    return task, value


async def start_task(fn: Callable[..., Awaitable[Any]], *args: Any,
                     name: Optional[str] = None) -> Tuple["asyncio.Task[Any]", Any]:
    """Like ``TaskGroup.start`` for an object that owns its task: (task, value passed to ``started()``)."""
    return await _start(fn, args, name, None)


async def first(*aws: Awaitable[Any]) -> Tuple[int, Any]:
    """Run the awaitables together; when the first one ends, cancel the others. (its index, its result)

    The first error raised by any of them is raised.
    """
    out: list = []
    async with TaskGroup() as tg:
        for i, aw in enumerate(aws):
            tg.start_soon(aw).add_done_callback(functools.partial(_report, i, out, tg))
    return out[0]


def _report(i: int, out: list, tg: TaskGroup, task: "asyncio.Task[Any]") -> None:
    if not out and not task.cancelled() and task.exception() is None:
        out.append((i, task.result()))
        tg.cancel()
