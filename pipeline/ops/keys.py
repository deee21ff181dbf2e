"""CurveZMQ keys for groups on other hosts.

``python run.py keys DIR`` writes two key pairs with pyzmq's ``zmq.auth``:
``server.key`` / ``server.key_secret`` (every bound tcp:// socket) and
``client.key`` / ``client.key_secret`` (every connecting one). Copy DIR to
both hosts and set ``security.keys_dir = DIR``. A bound socket only accepts
clients whose public key is in DIR (checked by a ZAP authenticator), and a
client only talks to the server whose public key it has: a peer with another
key gets nothing through.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from edgepipe.bus.sockets import Bus
from edgepipe.pipeline.config.loading import ConfigError


def generate(keys_dir: str) -> List[str]:
    os.makedirs(keys_dir, exist_ok=True)
    written = []
    for name in ("server", "client"):
        pub, secret = zmq.auth.create_certificates(keys_dir, name)
        os.chmod(secret, 0o600)
        written += [pub, secret]
    return written


def configure_curve(bus: Bus, keys_dir: str) -> None:
    """Give the bus its keys and start a ZAP authenticator that admits the known client keys."""
    if not zmq.has("curve"):
        raise ConfigError("security.keys_dir is set but this libzmq has no CURVE support")
    try:
        server_pub, server_secret = zmq.auth.load_certificate(os.path.join(keys_dir, "server.key_secret"))
        client_pub, client_secret = zmq.auth.load_certificate(os.path.join(keys_dir, "client.key_secret"))
    except (OSError, ValueError) as exc:
        raise ConfigError("security.keys_dir: cannot read the keys in %s (%s); create them with "
                          "`python run.py keys %s`" % (keys_dir, exc, keys_dir)) from None
    bus.curve_server = (server_pub, server_secret)
    bus.curve_client = (client_pub, client_secret, server_pub)
    auth = AsyncioAuthenticator(context=bus.ctx)
    auth.start()
    auth.configure_curve(domain="*", location=keys_dir)
    bus.on_close.append(auth.stop)


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="run.py keys", description="generate CurveZMQ keys for groups on other hosts")
    ap.add_argument("dir", help="folder for server.key(_secret) and client.key(_secret)")
    args = ap.parse_args(argv)
    for path in generate(args.dir):
        print(path)
    print("copy %s to every host and set security.keys_dir in the config" % args.dir, file=sys.stderr)
    return 0
