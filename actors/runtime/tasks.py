"""What the package adds to AnyIO's task groups (``anyio.create_task_group``, asyncio backend).

- ``task_group()``: AnyIO's task group, whose errors reach the caller as they were raised. AnyIO wraps
  every error that leaves a group in an ExceptionGroup (on Python < 3.11 the ``exceptiongroup``
  backport); our callers catch ActorDied, GroupFailed, ActorFailed, so at this boundary a group of one
  error is unwrapped (nested groups flattened, the same error raised twice counted once). When several
  errors left the group at once, the first is raised and the group is its ``__cause__``.
- ``spawn(tg, aw)``: start an awaitable in a group and get its task (AnyIO's ``start_soon`` returns
  nothing), for the few callers that wait on the task itself. Cancelling such a task (asyncio's
  ``cancel()``) cancels its group too: AnyIO takes a child that ends cancelled for a failure. With
  ``shield=True`` the child runs shielded from the cancellation of its group's scope (a sink's
  sender that must drain its queue at stop), and only such a ``cancel()`` ends it.
- ``cancellable(fn, *args)``: for ``await tg.start(cancellable, fn, ...)``: runs ``fn(*args)`` in a cancel
  scope of its own and returns that scope, whose ``cancel()`` ends that child alone.
- ``first(*aws)``: run awaitables together, the first to end cancels the others.
- ``start_task(fn)``: ``tg.start`` for an object that keeps its own task (an actor's ``start()``/``stop()``,
  a group process's watch); AnyIO has no task outside a group, by design.

This is the only module of the package that creates tasks.
"""
from __future__ import annotations

import asyncio
import builtins
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, List, Optional, Tuple

import anyio
import anyio.abc

if sys.version_info >= (3, 11):
    _Group: Any = getattr(builtins, "BaseExceptionGroup")
else:  # what AnyIO raises there: the backport
    import exceptiongroup
    _Group = exceptiongroup.BaseExceptionGroup


def _leaves(exc: BaseException) -> List[BaseException]:
    if isinstance(exc, _Group):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


@asynccontextmanager
async def task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """``async with task_group() as tg``: AnyIO's group; a single error leaves it unwrapped."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except _Group as group:
        errors: List[BaseException] = []
        for e in _leaves(group):
            if not any(e is seen for seen in errors):
                errors.append(e)
        if len(errors) == 1:
            raise errors[0] from errors[0].__cause__
        raise errors[0] from group


async def _report_task(aw: Awaitable[Any], shield: bool, *, task_status: anyio.abc.TaskStatus) -> Any:
    with anyio.CancelScope(shield=shield):
        task_status.started(asyncio.current_task())
        return await aw


async def spawn(tg: anyio.abc.TaskGroup, aw: Awaitable[Any], name: Optional[str] = None,
                shield: bool = False) -> "asyncio.Task[Any]":
    """Run ``aw`` as a child of ``tg``; its task, once it runs."""
    return await tg.start(_report_task, aw, shield, name=name)


async def cancellable(fn: Callable[..., Awaitable[Any]], *args: Any,
                      task_status: anyio.abc.TaskStatus) -> None:
    """``scope = await tg.start(cancellable, fn, *args)``: ``scope.cancel()`` ends this child, not the group."""
    with anyio.CancelScope() as scope:
        task_status.started(scope)
        await fn(*args)


async def first(*aws: Awaitable[Any]) -> Tuple[int, Any]:
    """Run the awaitables together; when the first one ends, cancel the others. (its index, its result)

    The first error raised by any of them is raised.
    """
    out: List[Tuple[int, Any]] = []
    async with task_group() as tg:
        for i, aw in enumerate(aws):
            tg.start_soon(_race, i, aw, out, tg.cancel_scope)
    return out[0]


async def _race(i: int, aw: Awaitable[Any], out: List[Tuple[int, Any]], scope: anyio.CancelScope) -> None:
    value = await aw
    if not out:
        out.append((i, value))
        scope.cancel()


class _Status(anyio.abc.TaskStatus):
    def __init__(self, fut: "asyncio.Future[Any]") -> None:
        self._fut = fut

    def started(self, value: Any = None) -> None:
        if self._fut.done():
            raise RuntimeError("called 'started' twice on the same task status")
        self._fut.set_result(value)


def owned_task(fn: Callable[..., Awaitable[Any]], *args: Any, name: Optional[str] = None) -> "asyncio.Task[Any]":
    """``fn(*args)`` in a task of its own, started from synchronous code; the object that starts it owns it
    (cancels it when it closes, and sees its end). For a background job of an object, such as a re-probe
    of a device that went away."""
    return asyncio.get_running_loop().create_task(fn(*args), name=name)


async def start_task(fn: Callable[..., Awaitable[Any]], *args: Any,
                     name: Optional[str] = None) -> Tuple["asyncio.Task[Any]", Any]:
    """Run ``fn(*args, task_status=...)`` in a task of its own; (the task, the value passed to ``started()``)
    once it called ``started()``. Raises its error if it failed first (a RuntimeError if it returned or
    was cancelled first); cancelling the caller cancels it. The caller owns the task: cancel it, await it."""
    fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(fn(*args, task_status=_Status(fut)))
    if name is not None:
        task.set_name(name)

    def early_end(t: "asyncio.Task[Any]") -> None:
        if fut.done():
            return
        if t.cancelled():
            fut.set_exception(RuntimeError("%s was cancelled before it called task_status.started()" % t.get_name()))
        elif t.exception() is not None:
            fut.set_exception(t.exception())  # type: ignore[arg-type]
        else:
            fut.set_exception(RuntimeError("%s ended without calling task_status.started()" % t.get_name()))

    task.add_done_callback(early_end)
    try:
        value = await asyncio.shield(fut)
    except BaseException:
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
    finally:
        task.remove_done_callback(early_end)
    return task, value
