"""ZeroMQ sockets with explicit high-water marks, ``linger=0`` and typed send/recv (``bus/channel.py``).

An actor never knows whether its peer is in the same event loop
(``inproc://``), another process (``ipc://``) or another host (``tcp://``):
the endpoint comes from the config. All sockets of one process share one
``Bus`` (one ZeroMQ context, required by ``inproc://``), which tracks every
socket it opened so that a test can fail when one leaks.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Any, Dict, Iterable, List, Optional, Set

import zmq
import zmq.asyncio

from edgepipe.bus.channel import (MAX_SUBSCRIPTION, MAX_SUBSCRIPTION_CURVE, TRACKED_KINDS, BusError,  # noqa: F401
                                  Channel, wait_any)
from edgepipe.bus.codec import WITH_CAMERA, topic
from edgepipe.bus.messages import BY_KIND
from edgepipe.bus.rundir import PIPELINE, RUN, ipc_in_use

__all__ = ["Bus", "BusError", "Channel", "camera_endpoint", "check_endpoint", "MAX_SUBSCRIPTION", "MAX_SUBSCRIPTION_CURVE",
           "TRACKED_KINDS", "SCHEMES"]

log = logging.getLogger(__name__)

SCHEMES = ("inproc://", "ipc://", "tcp://")


def check_endpoint(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.startswith(SCHEMES) or len(endpoint.split("://", 1)[1]) == 0:
        raise BusError("endpoint %r must start with one of %s" % (endpoint, ", ".join(SCHEMES)))
    return endpoint


def camera_endpoint(endpoint: str, camera: str, cameras: "List[str]") -> str:
    """The endpoint of one camera's link (``frames``, ``encoded``): ``endpoint`` itself for the one camera
    ``default``; else ``inproc://X.CAMERA``, ``ipc://PATH.CAMERA``, and ``tcp://HOST:PORT+i`` for the i-th
    camera of ``cameras`` (docs/wire.md, "Endpoints")."""
    cameras = list(cameras)
    if cameras == ["default"]:
        return endpoint
    if endpoint.startswith("tcp://"):
        host, sep, port = endpoint.rpartition(":")
        if not sep or not port.isdigit():
            raise BusError("endpoint %r: a tcp:// endpoint needs a port to number several cameras" % endpoint)
        return "%s:%d" % (host, int(port) + cameras.index(camera))
    return "%s.%s" % (endpoint, camera)


def camera_link(endpoints: "Dict[str, str]", link: str, camera: str, cameras: "List[str]") -> str:
    """Where an actor that takes every camera's ``link`` (the detector's ``encoded``, the display's
    ``frames``) finds ``camera``'s: the address it was given as ``LINK.CAMERA`` ([cameras.NAME] sets it),
    else the one derived from ``endpoints[link]``."""
    return endpoints.get("%s.%s" % (link, camera)) or camera_endpoint(endpoints[link], camera, cameras)


def _camera_topic(t: str) -> bool:
    """Whether ``t`` is one camera's topic of a kind with a camera (``KIND/CAMERA/``)."""
    kind, sep, rest = t.partition("/")
    cls = BY_KIND.get(kind)
    try:
        return bool(sep) and cls in WITH_CAMERA and rest.endswith("/") and topic(kind, rest[:-1]) == t
    except ValueError:  # not a camera's name
        return False


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

    def open(self, socket_type: int, endpoint: str, *, bind: bool, hwm: int, name: str,
             topics: Iterable[str] = ()) -> Channel:
        check_endpoint(endpoint)
        sock = self.ctx.socket(socket_type)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if socket_type in (zmq.SUB, zmq.PULL):  # libzmq refuses a larger frame from another process or host
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        elif socket_type in (zmq.XPUB, zmq.PUB):  # they receive subscriptions only (and CURVE's handshake, ~300 bytes)
            curve = endpoint.startswith("tcp://") and (self.curve_server if bind else self.curve_client)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_CURVE if curve else MAX_SUBSCRIPTION)
        if socket_type == zmq.XPUB:
            sock.setsockopt(zmq.XPUB_MANUAL, 1)  # see Channel.serve_subscriptions
        if endpoint.startswith("tcp://"):
            self._secure(sock, bind)
        if socket_type == zmq.SUB:
            topics = list(topics) or [""]
            for t in topics:
                if t and t not in BY_KIND and not _camera_topic(t):
                    sock.close(linger=0)
                    raise BusError("unknown topic %r: a kind, or KIND/CAMERA/ (codec.topic)" % t)
                sock.setsockopt(zmq.SUBSCRIBE, t.encode("ascii"))
        try:
            for placeholder in (RUN, PIPELINE):
                if placeholder in endpoint:
                    raise BusError("%s: %s names %s, a folder that `python run.py` makes; a process started alone "
                                   "needs an explicit endpoint" % (name, endpoint, placeholder))
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
        ch = Channel(self, sock, socket_type, endpoint, bind, name)
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
