"""ZeroMQ sockets with explicit high-water marks, ``linger=0`` and typed send/recv.

An actor never knows whether its peer is in the same event loop
(``inproc://``), another process (``ipc://``) or another host (``tcp://``):
the endpoint comes from the config. All sockets of one process share one
``Bus`` (one ZeroMQ context, required by ``inproc://``), which tracks every
socket it opened so that a test can fail when one leaks.

Python 3.9 compatible.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any, Iterable, List, Optional, Set, Tuple

import zmq
import zmq.asyncio

from .codec import Codec, DecodeError, encode, encode_relayed
from .messages import BY_KIND
from .rundir import RUN, ipc_in_use

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

# A subscription is one byte (1 subscribe, 0 cancel) and a topic, a prefix of a kind name: a publisher
# takes no message longer than this (ZMQ_MAXMSGSIZE: libzmq drops a peer that sends one).
MAX_SUBSCRIPTION = 64
MAX_SUBSCRIPTION_CURVE = 1024  # the same over CURVE, whose handshake commands go through the same limit
_TOPIC_PREFIXES = frozenset(k.encode("ascii")[:i] for k in BY_KIND for i in range(len(k) + 1))


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
        self._serving = False  # an actor's task reads this publisher's subscriptions (serve_subscriptions)
        self._subs_changed: Optional[asyncio.Event] = None

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

    async def recv_relay(self) -> Tuple[bytes, Any]:
        """The next message as (kind, undecoded body), for a relay (``Codec.relay``); bad ones are counted
        and skipped. Sequence numbers are not tracked: a relay renumbers what it forwards."""
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            try:
                return self.codec.relay(frames)
            except DecodeError as exc:
                self._reject(exc)

    async def forward(self, kind: bytes, body: Any, nowait: bool = False) -> bool:
        """Send a body that ``recv_relay`` gave, numbered in this channel's sequence of its kind (like ``send``)."""
        name = kind.decode("ascii")
        seq = self._sent.get(name, 0) + 1
        self._sent[name] = seq
        try:
            await self.sock.send_multipart(encode_relayed(kind, body, seq), flags=zmq.NOBLOCK if nowait else 0)
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

    def reject(self, exc: DecodeError) -> None:
        """Count (and log) a message refused after it was received (e.g. by a relay that reads part of it)."""
        self._reject(exc)

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
            if self._serving:  # the actor's task reads them: wait for it
                self._subs_changed = changed = asyncio.Event()
                await changed.wait()
            else:
                await self.sock.poll(None, zmq.POLLIN)
                self._drain_subscriptions()

    async def serve_subscriptions(self) -> None:
        """Read this bound publisher's subscriptions for as long as it lives (an actor runs it as a task).

        The socket is an XPUB with ZMQ_XPUB_MANUAL: a subscription takes effect only when it is read
        here and is a kind name or a prefix of one; any other is refused and counted in
        ``rejected["bad_subscription"]``. ZMQ_MAXMSGSIZE (``MAX_SUBSCRIPTION``) makes libzmq drop a
        peer that sends a longer one. So subscriptions cannot pile up unread, and a peer cannot grow
        the publisher's table of topics beyond the kinds' prefixes.
        """
        self._serving = True
        try:
            while True:
                await self.sock.poll(None, zmq.POLLIN)
                self._drain_subscriptions()
        finally:
            self._serving = False

    def _drain_subscriptions(self) -> None:
        # Synchronous on purpose: XPUB_MANUAL applies a SUBSCRIBE to the peer of the last message read,
        # so nothing may read in between.
        while True:
            try:
                event = self.sock.recv(flags=zmq.NOBLOCK)
                if hasattr(event, "result"):  # zmq.asyncio returns a done future
                    event = event.result()
            except zmq.Again:
                return
            self._on_subscription(event)

    def _on_subscription(self, event: bytes) -> None:
        topic = event[1:]
        if event[:1] == b"\x00" and topic not in _TOPIC_PREFIXES:
            return  # the cancel of a refused topic (libzmq sends one for each when its peer goes): nothing to do
        if event[:1] not in (b"\x00", b"\x01") or topic not in _TOPIC_PREFIXES:
            n = self.rejected.get("bad_subscription", 0) + 1
            self.rejected["bad_subscription"] = n
            if n <= 3 or n % 1000 == 0:
                log.warning("%s: refused subscription on %s (%d so far): %r%s", self.name, self.endpoint, n,
                            event[:40], "..." if len(event) > 40 else "")
            return
        if event[:1] == b"\x01":
            self.sock.setsockopt(zmq.SUBSCRIBE, topic)
            self.subscribers += 1
        else:
            self.sock.setsockopt(zmq.UNSUBSCRIBE, topic)
            self.subscribers -= 1
        if self._subs_changed is not None:
            self._subs_changed.set()

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
        # ZMQ_MAXMSGSIZE of a receiving socket: the size caps apply to each frame (header, image)
        self.max_frame = max(max_header, max_image)
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
        if kind in (zmq.SUB, zmq.PULL):  # libzmq refuses a larger frame from another process or host
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        elif kind in (zmq.XPUB, zmq.PUB):  # they receive subscriptions only (and CURVE's handshake, ~300 bytes)
            curve = endpoint.startswith("tcp://") and (self.curve_server if bind else self.curve_client)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_CURVE if curve else MAX_SUBSCRIPTION)
        if kind == zmq.XPUB:
            sock.setsockopt(zmq.XPUB_MANUAL, 1)  # see Channel.serve_subscriptions
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
            if RUN in endpoint:
                raise BusError("%s: %s names %s, the run directory that `python run.py` makes; a process started "
                               "alone needs an explicit endpoint" % (name, endpoint, RUN))
            if bind:
                if endpoint.startswith("ipc://"):
                    path = endpoint[len("ipc://"):]
                    if ipc_in_use(path):  # libzmq would take the path over from its owner without a word
                        raise zmq.ZMQError(errno.EADDRINUSE)
                    d = os.path.dirname(path)
                    if d:
                        os.makedirs(d, mode=0o700, exist_ok=True)
                sock.bind(endpoint)
            else:
                sock.connect(endpoint)
        except (zmq.ZMQError, BusError) as exc:
            sock.close(linger=0)
            if isinstance(exc, BusError):
                raise
            if exc.errno == errno.EADDRINUSE:
                raise BusError("%s: cannot bind %s: it is in use (another pipeline on this host?); choose another "
                               "endpoint (the metrics: --metrics-endpoint tcp://127.0.0.1:PORT or ipc://PATH; the "
                               "others: [endpoints] in a --config file); the default ipc://%s/... endpoints never "
                               "collide" % (name, endpoint, RUN)) from None
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
        """A publisher. A bound one is an XPUB (manual subscriptions, see ``Channel.serve_subscriptions``),
        so that it can wait for its subscribers and refuse topics that are no kind."""
        return self.open(zmq.XPUB if bind else zmq.PUB, endpoint, bind=bind, hwm=hwm, name=name)

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
