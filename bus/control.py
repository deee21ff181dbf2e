"""The control link between the main process and its groups, both ways.

The main process binds a ROUTER on ``endpoints.control``; each group connects
a DEALER. A group sends ``Ready``, then at its end every actor's final
``Metric`` and ``Stopped``. The main process can answer a group by name: a
``Stopped`` from ``main`` asks the group to send its final report and stop.
That is how a group started by hand (``spawn = false``, maybe on another
host), which the main process cannot signal, learns that the run has ended.
A group started by hand also stops when the control link drops after it was
up (the main process ended without a word). The main process can also tell a
group that runs cameras to start them (``Ready`` from ``main``) and when each
one's stream ends (``Eos`` from ``main``), and it learns when the link of a
group started by hand drops (``dropped``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional

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
        self.fds: Dict[str, int] = {}  # group -> the file descriptor of its connection, from its Ready
        self.rejected = 0
        self._seq = 0
        # every disconnection from the start: a group that goes right after its Ready is not missed
        # accepts too: a file descriptor is reused, so a disconnect counts only when no later accept of the
        # same descriptor follows it (an earlier connection's end is not the end of the group's)
        self._monitor = self.ch.sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)

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
            try:
                self.fds[msg.group] = frames[1].get(zmq.SRCFD)
            except zmq.ZMQError:  # no file descriptor (inproc)
                pass
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
        return await self.send(group, Stopped(MAIN, 0, []))

    async def send(self, group: str, msg: Any) -> bool:
        """Send ``msg`` to a group that said ready; False if it cannot be reached."""
        peer = self.peers.get(group)
        if peer is None:
            return False
        self._seq += 1
        try:
            await self.ch.sock.send_multipart([peer] + list(encode(msg, self._seq)), flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("control: cannot reach group %s: %s", group, exc)
            return False
        return True

    async def dropped(self) -> str:
        """Until the connection of a group that said ready drops (it stopped, or went away); its name.

        The monitor's events are read in order, with every one already queued behind the first: the last
        event of a descriptor says whether it is open (a disconnect of an earlier connection on the same
        descriptor, followed by the accept of the group's, is not the group's)."""
        while True:
            events = [await recv_monitor_message(self._monitor)]
            while True:
                try:
                    events.append(await recv_monitor_message(self._monitor, flags=zmq.NOBLOCK))
                except zmq.Again:
                    break
            group = gone(events, self.fds)
            if group is not None:
                del self.fds[group]
                return group

    def close(self) -> None:
        self.ch.sock.disable_monitor()
        self._monitor.close(0)
        self.ch.close()


def gone(events: List[Dict[str, Any]], fds: Dict[str, int]) -> Optional[str]:
    """The group whose connection ``events`` (monitor events, in order) leave closed: the last event of its
    descriptor is a disconnect; None if there is none (a disconnect followed by an accept of the same
    descriptor is an earlier connection's end, the descriptor reused by the group's)."""
    last: Dict[int, int] = {}
    for event in events:
        last[int(event["value"])] = event["event"]
    return next((group for group, fd in fds.items() if last.get(fd) == zmq.EVENT_DISCONNECTED), None)


def open_client(bus: Bus, endpoint: str, name: str) -> Channel:
    """A group's end of the control link."""
    return bus.open(zmq.DEALER, endpoint, bind=False, hwm=100, name=name + ".control")


async def link_dropped(ctl: Channel) -> None:
    """Return when the control link to the main process drops (for a group started by hand)."""
    mon = ctl.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        while True:
            event = await recv_monitor_message(mon)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                log.warning("the main process went away (the control link dropped): stopping")
                return
    finally:  # also when this watcher is cancelled
        ctl.sock.disable_monitor()
        mon.close(0)
