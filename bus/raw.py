"""Raw pyzmq sockets, outside the typed bus, for the code that measures against pyzmq itself: the
baseline of ``bench bus`` and the reference project's serial request/reply loop
(``pipeline/bench/cpu/serial_loop.py``). The pipeline's own sockets are ``bus.sockets.Bus``'s."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import zmq
import zmq.asyncio


def raw_pair(bus: Any, endpoint: str, hwm: int) -> Tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    """A bare PUSH/PULL pair of ``bus``'s context on ``endpoint`` (PULL binds): ``(push, pull)``."""
    pull = bus.ctx.socket(zmq.PULL)
    push = bus.ctx.socket(zmq.PUSH)
    for s in (pull, push):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
    pull.bind(endpoint)
    push.connect(endpoint)
    return push, pull


def libzmq_version() -> str:
    return zmq.zmq_version()


def request_socket(endpoint: Optional[str]) -> Tuple[zmq.Context, zmq.Socket, str]:
    """A blocking REQ socket of a new context, bound to ``endpoint`` (None: a free loopback tcp port);
    ``(context, socket, endpoint)``."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    if endpoint is None:
        endpoint = "tcp://127.0.0.1:%d" % sock.bind_to_random_port("tcp://127.0.0.1")
    else:
        sock.bind(endpoint)
    return ctx, sock, endpoint


def reply_socket(endpoint: str) -> Tuple[zmq.Context, zmq.Socket]:
    """A blocking REP socket of a new context, connected to ``endpoint`` (its replies get 1 s to leave)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    return ctx, sock


def readable(sock: zmq.Socket, timeout_ms: int) -> bool:
    """Whether a message waits on ``sock`` (or arrives within ``timeout_ms``)."""
    return bool(sock.poll(timeout_ms, zmq.POLLIN))
