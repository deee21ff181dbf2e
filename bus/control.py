"""The control link between the main process and its groups, both ways.

The main process binds a ROUTER on ``endpoints.control``; each group connects
a DEALER. A group sends ``Ready``, then at its end every actor's final
``Metric`` and ``Stopped``. The main process can answer a group by name: a
``Stopped`` from ``main`` asks the group to send its final report and stop.
That is how a group started by hand (``spawn = false``, maybe on another
host), which the main process cannot signal, learns that the run has ended.
A group started by hand also stops when the control link drops after it was
up (the main process ended without a word).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, Optional

import anyio
import zmq
from zmq.utils.monitor import recv_monitor_message

from edgepipe.bus.codec import DecodeError, encode
from edgepipe.bus.messages import Ready, Stopped
from edgepipe.bus.sockets import Bus, Channel

log = logging.getLogger("edgepipe.control")

MAIN = "main"


class ControlServer:
    """The main process's end: hears every group, and can ask one by name to stop."""

    def __init__(self, bus: Bus, endpoint: str, hwm: int = 1000) -> None:
        self.ch = bus.open(zmq.ROUTER, endpoint, bind=True, hwm=hwm, name="runner.control")
        self.peers: Dict[str, bytes] = {}  # group -> its DEALER's routing id, from its Ready
        self.rejected = 0
        self._seq = 0

    def _decode(self, frames: Any) -> Optional[Any]:
        if len(frames) < 2:
            self.rejected += 1
            return None
        try:
            msg, _ = self.ch.codec.decode_seq(frames[1:])
        except DecodeError as exc:
            self.rejected += 1
            if self.rejected <= 3:
                log.warning("control: a message that does not decode: %s", exc)
            return None
        if isinstance(msg, Ready):
            self.peers[msg.group] = bytes(frames[0].bytes)
        return msg

    async def recv(self) -> Any:
        while True:
            msg = self._decode(await self.ch.sock.recv_multipart(copy=False))
            if msg is not None:
                return msg

    def recv_nowait(self) -> Optional[Any]:
        while True:
            try:
                frames = self.ch.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                if hasattr(frames, "result"):  # zmq.asyncio returns a done future
                    frames = frames.result()
            except zmq.Again:
                return None
            msg = self._decode(frames)
            if msg is not None:
                return msg

    async def poll(self, timeout_ms: int) -> bool:
        return await self.ch.poll(timeout_ms)

    async def ask_to_stop(self, group: str) -> bool:
        """Ask a group that said ready to send its final report and stop; False if it cannot be reached."""
        peer = self.peers.get(group)
        if peer is None:
            return False
        self._seq += 1
        try:
            await self.ch.sock.send_multipart([peer] + list(encode(Stopped(MAIN, 0, []), self._seq)),
                                              flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("control: cannot reach group %s: %s", group, exc)
            return False
        return True

    def close(self) -> None:
        self.ch.close()


def open_client(bus: Bus, endpoint: str, name: str) -> Channel:
    """A group's end of the control link."""
    return bus.open(zmq.DEALER, endpoint, bind=False, hwm=100, name=name + ".control")


async def watch_main(ctl: Channel, stop: asyncio.Event, by_hand: bool) -> None:
    """Set ``stop`` when the main process asks; for a group started by hand, also when the link drops."""
    mon = None
    try:
        if by_hand:
            mon = ctl.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            await _either(_asked(ctl), _dropped(mon))
        else:
            await _asked(ctl)
        stop.set()
    finally:  # also when this watcher is cancelled
        if mon is not None:
            ctl.sock.disable_monitor()
            mon.close(0)


async def _either(*coros: Any) -> None:
    """Run ``coros`` until one of them returns (or raises); cancel the others. (An AnyIO task group: the
    package creates no bare task; an error leaves it in an ExceptionGroup.)"""
    async with anyio.create_task_group() as tg:
        for c in coros:
            tg.start_soon(_then_cancel, c, tg.cancel_scope)


async def _then_cancel(coro: Any, scope: anyio.CancelScope) -> None:
    await coro
    scope.cancel()


async def _asked(ctl: Channel) -> None:
    while True:
        msg = await ctl.recv()
        if isinstance(msg, Stopped) and msg.group == MAIN:
            log.info("the main process ended the run: sending the final report")
            return


async def _dropped(mon: Any) -> None:
    while True:
        event = await recv_monitor_message(mon)
        if event["event"] == zmq.EVENT_DISCONNECTED:
            log.warning("the main process went away (the control link dropped): stopping")
            return
