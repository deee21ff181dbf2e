"""CurveZMQ keys: writing the two key pairs, and giving a bus its keys with a ZAP authenticator.

``generate(DIR)`` writes ``server.key`` / ``server.key_secret`` (every bound tcp:// socket) and
``client.key`` / ``client.key_secret`` (every connecting one). A bound socket only accepts clients whose
public key is in DIR (checked by a ZAP authenticator), and a client only talks to the server whose
public key it has: a peer with another key gets nothing through.
"""
from __future__ import annotations

import os
from typing import Any, List

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from edgepipe.bus.channel import BusError


def generate(keys_dir: str) -> List[str]:
    """Write the server's and the client's key pairs into ``keys_dir``; the files written."""
    os.makedirs(keys_dir, exist_ok=True)
    written = []
    for name in ("server", "client"):
        pub, secret = zmq.auth.create_certificates(keys_dir, name)
        os.chmod(secret, 0o600)
        written += [pub, secret]
    return written


def configure_curve(bus: Any, keys_dir: str) -> None:
    """Give the bus its keys and start a ZAP authenticator that admits the known client keys
    (BusError when libzmq has no CURVE or the keys cannot be read)."""
    if not zmq.has("curve"):
        raise BusError("security.keys_dir is set but this libzmq has no CURVE support")
    try:
        server_pub, server_secret = zmq.auth.load_certificate(os.path.join(keys_dir, "server.key_secret"))
        client_pub, client_secret = zmq.auth.load_certificate(os.path.join(keys_dir, "client.key_secret"))
    except (OSError, ValueError) as exc:
        raise BusError("security.keys_dir: cannot read the keys in %s (%s); create them with "
                       "`python run.py keys %s`" % (keys_dir, exc, keys_dir)) from None
    bus.curve_server = (server_pub, server_secret)
    bus.curve_client = (client_pub, client_secret, server_pub)
    auth = AsyncioAuthenticator(context=bus.ctx)
    auth.start()
    auth.configure_curve(domain="*", location=keys_dir)
    bus.on_close.append(auth.stop)
