"""One socket's typed messages: ``Channel`` sends and receives them, counts what it refused and what a
PUB link lost, and reads a bound publisher's subscriptions. ``Bus`` (``bus/sockets.py``) opens channels.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import zmq
import zmq.asyncio

from edgepipe.bus.codec import CAMERA_KINDS, WITH_CAMERA, Codec, DecodeError, encode, encode_relayed
from edgepipe.bus.messages import BY_KIND

log = logging.getLogger(__name__)


class BusError(RuntimeError):
    """A socket could not be opened (bad endpoint, address in use, ...)."""

    user_facing = True


# Kinds whose loss on a PUB/SUB link is detected from the sender's sequence numbers.
TRACKED_KINDS = ("frame", "encoded", "detections", "result")

# A subscription is one byte (1 subscribe, 0 cancel) and a topic: a prefix of a kind name, or one camera's
# topic of a kind (KIND/CAMERA/, ``codec.topic``; "expression/" + 32 + "/" is 44 bytes). A publisher takes
# no message longer than this (ZMQ_MAXMSGSIZE: libzmq drops a peer that sends one).
MAX_SUBSCRIPTION = 64
MAX_SUBSCRIPTION_CURVE = 1024  # the same over CURVE, whose handshake commands go through the same limit
_TOPIC_PREFIXES = frozenset(k.encode("ascii")[:i] for k in BY_KIND for i in range(len(k) + 1))
_CAMERA_TOPIC = re.compile(b"(?:%s)/[A-Za-z0-9_]{0,32}/" % b"|".join(k.encode("ascii") for k in CAMERA_KINDS))
MAX_CAMERA_TOPICS = 1024  # distinct camera topics a publisher takes at once (its table of topics stays bounded)


async def wait_any(channels: Sequence["Channel"], timeout_ms: Optional[float] = None) -> List["Channel"]:
    """The channels of ``channels`` with a message waiting, once at least one has (or ``timeout_ms`` passed:
    then none). An actor with several inputs waits on all of them at once with this."""
    poller = zmq.asyncio.Poller()
    for ch in channels:
        poller.register(ch.sock, zmq.POLLIN)
    ready = dict(await poller.poll(timeout_ms))
    return [ch for ch in channels if ch.sock in ready]


class Channel:
    """One socket: send and receive typed messages.

    ``recv`` returns the next valid message; a message that fails to decode is
    counted in ``rejected`` (by reason), logged, and skipped.

    Every message sent carries a per-topic sequence number (a kind's messages of each camera are numbered
    apart, so that a subscriber of one camera's topic sees no gaps for the others'); a receiver counts the
    messages of a tracked kind that never arrived in ``lost`` (a PUB socket drops silently for a subscriber
    whose queue is full), by kind. This assumes one sender per kind on a link, which holds for the
    pipeline's PUB links.
    """

    def __init__(self, bus: Any, sock: zmq.asyncio.Socket, socket_type: int, endpoint: str, bind: bool,
                 name: str) -> None:
        self.bus = bus
        self.sock = sock
        # The same socket, blocking API: a message that is already there (or room to send one) needs no
        # future, so the common case skips zmq.asyncio's bookkeeping. Only for sockets that go one way:
        # on a socket that also waits the other way (an XPUB polls for subscriptions, a DEALER receives)
        # a send can take the edge of the file descriptor that wakes that waiter, which zmq.asyncio repairs.
        self._now = zmq.Socket.shadow(sock.underlying)
        self._send_now = socket_type in (zmq.PUSH, zmq.PUB)
        self._recv_now = socket_type in (zmq.PULL, zmq.SUB)
        self._waiting_recv = 0  # receives of this channel that wait for a message (the next one is theirs)
        self._waiting_send = 0  # sends of this channel that wait for room (the next one goes after them)
        self.socket_type = socket_type  # zmq.PUB, zmq.XPUB, ...
        self.endpoint = endpoint
        self.bind = bind
        self.name = name
        self.codec = Codec(bus.max_header, bus.max_image)
        self.rejected: dict = {}
        self.lost: dict = {}
        self._sent: dict = {}  # topic key (a class, or (class, camera)) -> its last sequence number sent
        self._sent_kind: Dict[str, int] = {}  # kind -> messages sent, every camera's
        self._seen: dict = {}  # (kind, camera) -> the last sequence number received
        self._seen_kind: Dict[str, int] = {}  # kind -> the sum of its cameras' last sequence numbers
        self._camera_topics: Dict[bytes, int] = {}  # a bound publisher: camera topic -> its subscriptions
        self.subscribers = 0
        self.closed = False
        self._serving = False  # an actor's task reads this publisher's subscriptions (serve_subscriptions)
        self._subs_changed: Optional[asyncio.Event] = None

    async def send(self, msg: Any, nowait: bool = False) -> bool:
        """Send a message. ``nowait``: return False instead of waiting when the peer is full.

        PUB sockets never wait: ZeroMQ drops for a subscriber whose queue is full;
        receivers detect that as a gap in frame ids and count it.
        """
        cls = type(msg)
        key = (cls, msg.camera) if cls in WITH_CAMERA else cls
        seq = self._sent.get(key, 0) + 1
        self._sent[key] = seq
        self._sent_kind[cls.KIND] = self._sent_kind.get(cls.KIND, 0) + 1
        frames = encode(msg, seq)
        big = len(frames) > 2
        if not self._send_now:
            try:
                if nowait:
                    await self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=not big)
                else:
                    await self.sock.send_multipart(frames, copy=not big)
            except zmq.Again:
                return False
            return True
        if not self._waiting_send:
            try:
                self._now.send_multipart(frames, flags=zmq.NOBLOCK, copy=not big)
                return True
            except zmq.Again:
                if nowait:
                    return False
        elif nowait:
            return False
        self._waiting_send += 1
        try:
            await self.sock.send_multipart(frames, copy=not big)
        finally:
            self._waiting_send -= 1
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
        """Send a body that ``recv_relay`` gave (``kind``: its topic), numbered in this channel's sequence of
        its topic (like ``send``)."""
        seq = self._sent.get(kind, 0) + 1
        self._sent[kind] = seq
        name = kind.partition(b"/")[0].decode("ascii")
        self._sent_kind[name] = self._sent_kind.get(name, 0) + 1
        try:
            await self.sock.send_multipart(encode_relayed(kind, body, seq), flags=zmq.NOBLOCK if nowait else 0)
        except zmq.Again:
            return False
        return True

    async def recv(self) -> Any:
        """The next message that decodes; bad ones are counted and skipped."""
        while True:
            frames = self._take() if self._recv_now else None
            if frames is None:
                self._waiting_recv += 1
                try:
                    frames = await self.sock.recv_multipart(copy=False)
                finally:
                    self._waiting_recv -= 1
            try:
                return self._accept(*self.codec.decode_seq(frames))
            except DecodeError as exc:
                self._reject(exc)

    def _take(self) -> Optional[List[Any]]:
        """The frames of a message already queued (unless another receive waits for it), or None."""
        try:
            if not self._recv_now:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                return frames.result() if hasattr(frames, "result") else frames  # zmq.asyncio: a done future
            if self._waiting_recv:
                return None
            return self._now.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None

    def recv_nowait(self) -> Optional[Any]:
        """A message already queued, or None (bad ones are counted and skipped)."""
        while True:
            frames = self._take()
            if frames is None:
                return None
            try:
                return self._accept(*self.codec.decode_seq(frames))
            except DecodeError as exc:
                self._reject(exc)

    def _accept(self, msg: Any, seq: int) -> Any:
        kind = type(msg).KIND
        if kind in TRACKED_KINDS:  # each a kind with a camera, numbered per camera
            key = (kind, msg.camera)
            last = self._seen.get(key, 0)
            if seq > last + 1:
                self.lost[kind] = self.lost.get(kind, 0) + seq - last - 1
            self._seen[key] = seq
            self._seen_kind[kind] = self._seen_kind.get(kind, 0) + seq - last
        return msg

    def sent(self, kind: str, camera: Optional[str] = None) -> int:
        """How many messages of ``kind`` this channel has sent: every camera's, or ``camera``'s (its last
        sequence number)."""
        if camera is None:
            return self._sent_kind.get(kind, 0)
        return self._sent.get((BY_KIND[kind], camera), 0)

    def seen(self, kind: str) -> int:
        """The last sequence numbers received for ``kind``, summed over its cameras: how many the sender had
        sent by then, when none of the last ones was lost."""
        return self._seen_kind.get(kind, 0)

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
        if self.socket_type != zmq.XPUB:
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
        here and is a kind name or a prefix of one, or one camera's topic of a kind with a camera
        (``KIND/CAMERA/``, CAMERA at most 32 letters, digits or _; ``codec.topic``); any other is refused
        and counted in ``rejected["bad_subscription"]``, and so is a camera topic beyond
        ``MAX_CAMERA_TOPICS`` distinct ones. ZMQ_MAXMSGSIZE (``MAX_SUBSCRIPTION``) makes libzmq drop a
        peer that sends a longer one. So subscriptions cannot pile up unread, and a peer cannot grow
        the publisher's table of topics beyond the kinds' prefixes and that many camera topics.
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
        op, topic = event[:1], event[1:]
        camera = topic not in _TOPIC_PREFIXES and _CAMERA_TOPIC.fullmatch(topic) is not None
        if op == b"\x00" and not (camera and topic in self._camera_topics or topic in _TOPIC_PREFIXES):
            return  # the cancel of a refused topic (libzmq sends one for each when its peer goes): nothing to do
        if op not in (b"\x00", b"\x01") or not (camera or topic in _TOPIC_PREFIXES) or (
                camera and op == b"\x01" and topic not in self._camera_topics
                and len(self._camera_topics) >= MAX_CAMERA_TOPICS):
            n = self.rejected.get("bad_subscription", 0) + 1
            self.rejected["bad_subscription"] = n
            if n <= 3 or n % 1000 == 0:
                log.warning("%s: refused subscription on %s (%d so far): %r%s", self.name, self.endpoint, n,
                            event[:40], "..." if len(event) > 40 else "")
            return
        if camera:  # how many subscriptions hold each camera topic: the table's bound counts distinct ones
            held = self._camera_topics.get(topic, 0) + (1 if op == b"\x01" else -1)
            if held > 0:
                self._camera_topics[topic] = held
            else:
                self._camera_topics.pop(topic, None)
        if op == b"\x01":
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

    @property
    def takes_subscriptions(self) -> bool:
        """A bound publisher: its subscriptions are read by ``serve_subscriptions``."""
        return self.socket_type == zmq.XPUB

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
