"""``python run.py keys DIR``: CurveZMQ keys for groups on other hosts (``bus/curve.py`` writes and loads
them). Copy DIR to both hosts and set ``security.keys_dir = DIR``."""
from __future__ import annotations

import argparse
import sys
from typing import List

from edgepipe.bus import curve
from edgepipe.bus.sockets import Bus, BusError
from edgepipe.pipeline.config.loading import ConfigError

generate = curve.generate


def configure_curve(bus: Bus, keys_dir: str) -> None:
    """``bus.curve.configure_curve``, its errors as config errors (they are about ``security.keys_dir``)."""
    try:
        curve.configure_curve(bus, keys_dir)
    except BusError as exc:
        raise ConfigError(str(exc)) from None


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="run.py keys", description="generate CurveZMQ keys for groups on other hosts")
    ap.add_argument("dir", help="folder for server.key(_secret) and client.key(_secret)")
    args = ap.parse_args(argv)
    for path in generate(args.dir):
        print(path)
    print("copy %s to every host and set security.keys_dir in the config" % args.dir, file=sys.stderr)
    return 0
