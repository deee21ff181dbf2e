"""ZeroMQ sockets with explicit high-water marks, ``linger=0`` and typed send/recv.

An actor never knows whether its peer is in the same event loop
(``inproc://``), another process (``ipc://``) or another host (``tcp://``):
the endpoint comes from the config. All sockets of one process share one
``Bus`` (one ZeroMQ context, required by ``inproc://``), which tracks every
socket it opened so that a test can fail when one leaks.

Python 3.9 compatible.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, List, Optional, Set

import zmq
import zmq.asyncio

from .codec import Codec, DecodeError, encode
from .messages import BY_KIND

log = logging.getLogger(__name__)

SCHEMES = ("inproc://", "ipc://", "tcp://")


class BusError(RuntimeError):
    """A socket could not be opened (bad endpoint, address in use, ...)."""

    user_facing = True


def check_endpoint(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.startswith(SCHEMES) or len(endpoint.split("://", 1)[1]) == 0:
        raise BusError("endpoint %r must start with one of %s" % (endpoint, ", ".join(SCHEMES)))
    return endpoint


# Kinds whose loss on a PUB/SUB link is detected from the sender's sequence numbers.
TRACKED_KINDS = ("frame", "encoded", "detections", "result")


class Channel:
    """One socket: send and receive typed messages.

    ``recv`` returns the next valid message; a message that fails to decode is
    counted in ``rejected`` (by reason), logged, and skipped.

    Every message sent carries a per-kind sequence number; a receiver counts
    the messages of a tracked kind that never arrived in ``lost`` (a PUB socket
    drops silently for a subscriber whose queue is full). This assumes one
    sender per kind on a link, which holds for the pipeline's PUB links.
    """

    def __init__(self, bus: "Bus", sock: zmq.asyncio.Socket, kind: int, endpoint: str, bind: bool,
                 name: str) -> None:
        self.bus = bus
        self.sock = sock
        self.kind = kind
        self.endpoint = endpoint
        self.bind = bind
        self.name = name
        self.codec = Codec(bus.max_header, bus.max_image)
        self.rejected: dict = {}
        self.lost: dict = {}
        self._sent: dict = {}
        self._seen: dict = {}
        self.subscribers = 0
        self.closed = False

    async def send(self, msg: Any, nowait: bool = False) -> bool:
        """Send a message. ``nowait``: return False instead of waiting when the peer is full.

        PUB sockets never wait: ZeroMQ drops for a subscriber whose queue is full;
        receivers detect that as a gap in frame ids and count it.
        """
        kind = type(msg).KIND
        seq = self._sent.get(kind, 0) + 1
        self._sent[kind] = seq
        frames = encode(msg, seq)
        big = len(frames) > 2
        try:
            if nowait:
                await self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=not big)
            else:
                await self.sock.send_multipart(frames, copy=not big)
        except zmq.Again:
            return False
        return True

    async def recv(self) -> Any:
        """The next message that decodes; bad ones are counted and skipped."""
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            try:
                return self._accept(*self.codec.decode_seq(frames))
            except DecodeError as exc:
                self._reject(exc)

    def recv_nowait(self) -> Optional[Any]:
        """A message already queued, or None (bad ones are counted and skipped)."""
        while True:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                if hasattr(frames, "result"):  # zmq.asyncio returns a done future
                    frames = frames.result()
            except zmq.Again:
                return None
            try:
                return self._accept(*self.codec.decode_seq(frames))
            except DecodeError as exc:
                self._reject(exc)

    def _accept(self, msg: Any, seq: int) -> Any:
        kind = type(msg).KIND
        if kind in TRACKED_KINDS:
            last = self._seen.get(kind, 0)
            if seq > last + 1:
                self.lost[kind] = self.lost.get(kind, 0) + seq - last - 1
            self._seen[kind] = seq
        return msg

    def sent(self, kind: str) -> int:
        """How many messages of ``kind`` this channel has sent (its last sequence number)."""
        return self._sent.get(kind, 0)

    def seen(self, kind: str) -> int:
        """The last sequence number received for ``kind``."""
        return self._seen.get(kind, 0)

    def _reject(self, exc: DecodeError) -> None:
        n = self.rejected.get(exc.reason, 0) + 1
        self.rejected[exc.reason] = n
        if n <= 3 or n % 100 == 0:
            log.warning("%s: rejected message on %s (%d so far): %s", self.name, self.endpoint, n, exc)

    async def wait_subscribers(self, n: int) -> None:
        """Wait until ``n`` subscriptions have reached this (bound) publisher.

        ZeroMQ forwards a subscription asynchronously after ``connect``; a
        message published before it arrives is lost ("slow joiner"). The
        pipeline waits on this before the source starts.
        """
        if self.kind != zmq.XPUB:
            raise BusError("%s: only a bound publisher can wait for subscribers" % self.name)
        while self.subscribers < n:
            event = await self.sock.recv()
            if event[:1] == b"\x01":
                self.subscribers += 1
            elif event[:1] == b"\x00":
                self.subscribers -= 1

    async def poll(self, timeout_ms: int) -> bool:
        """True when a message is waiting (or arrives within ``timeout_ms``)."""
        return bool(await self.sock.poll(timeout_ms, zmq.POLLIN))

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; ``linger_ms`` > 0 lets queued messages go out first (a final report)."""
        if self.closed:
            return
        self.closed = True
        self.sock.close(linger=linger_ms)
        self.bus._forget(self)
        if self.bind and self.endpoint.startswith("ipc://"):
            path = self.endpoint[len("ipc://"):]
            if not path.startswith("@"):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


class Bus:
    """One ZeroMQ context and every socket opened on it."""

    def __init__(self, max_header: int = 1 << 20, max_image: int = 64 << 20,
                 context: Optional[zmq.asyncio.Context] = None) -> None:
        self._own_ctx = context is None
        self.ctx = context or zmq.asyncio.Context()
        self.max_header = max_header
        self.max_image = max_image
        self.channels: Set[Channel] = set()
        self.curve_server: Optional[tuple] = None  # (public, secret) for tcp binds
        self.curve_client: Optional[tuple] = None  # (public, secret, server_public) for tcp connects
        self.on_close: List[Any] = []  # called before the context ends (e.g. a ZAP authenticator's stop)

    def open(self, kind: int, endpoint: str, *, bind: bool, hwm: int, name: str,
             topics: Iterable[str] = ()) -> Channel:
        check_endpoint(endpoint)
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if endpoint.startswith("tcp://"):
            self._secure(sock, bind)
        if kind == zmq.SUB:
            topics = list(topics) or [""]
            for t in topics:
                if t and t not in BY_KIND:
                    sock.close(linger=0)
                    raise BusError("unknown topic %r" % t)
                sock.setsockopt(zmq.SUBSCRIBE, t.encode("ascii"))
        try:
            if bind:
                if endpoint.startswith("ipc://"):
                    d = os.path.dirname(endpoint[len("ipc://"):])
                    if d:
                        os.makedirs(d, exist_ok=True)
                sock.bind(endpoint)
            else:
                sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise BusError("%s: cannot %s %s: %s" % (name, "bind" if bind else "connect", endpoint, exc)) from None
        ch = Channel(self, sock, kind, endpoint, bind, name)
        self.channels.add(ch)
        return ch

    def _secure(self, sock: zmq.Socket, bind: bool) -> None:
        if bind and self.curve_server:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve_server[0])
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve_server[1])
        elif not bind and self.curve_client:
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve_client[0])
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve_client[1])
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.curve_client[2])

    # typed shortcuts -------------------------------------------------------
    def pub(self, endpoint: str, *, hwm: int, name: str, bind: bool = True) -> Channel:
        """A publisher. A bound one is an XPUB, so that it can wait for its subscribers."""
        ch = self.open(zmq.XPUB if bind else zmq.PUB, endpoint, bind=bind, hwm=hwm, name=name)
        if bind:
            ch.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        return ch

    def sub(self, endpoint: str, *, hwm: int, name: str, topics: Iterable[str] = (), bind: bool = False) -> Channel:
        return self.open(zmq.SUB, endpoint, bind=bind, hwm=hwm, name=name, topics=topics)

    def push(self, endpoint: str, *, hwm: int, name: str, bind: bool) -> Channel:
        return self.open(zmq.PUSH, endpoint, bind=bind, hwm=hwm, name=name)

    def pull(self, endpoint: str, *, hwm: int, name: str, bind: bool) -> Channel:
        return self.open(zmq.PULL, endpoint, bind=bind, hwm=hwm, name=name)

    def _forget(self, ch: Channel) -> None:
        self.channels.discard(ch)

    def open_channels(self) -> List[str]:
        return sorted("%s %s" % (c.name, c.endpoint) for c in self.channels)

    def close(self) -> None:
        """Close every socket still open, then the context (if this bus made it). Safe twice."""
        for ch in list(self.channels):
            ch.close()
        while self.on_close:
            self.on_close.pop()()
        if self._own_ctx and not self.ctx.closed:
            self.ctx.term()
