"""The command line: ``python run.py [run options] | metrics | models | bench | ...``.

This module only parses: a subcommand's module, and the pipeline itself, are imported when they are
asked for, so that ``run.py --help`` and a bad option answer at once.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, List, Optional

# subcommand -> (module, function); each module is imported only when its subcommand runs
SUBCOMMANDS = {
    "metrics": ("edgepipe.pipeline.metrics.cli", "main"),
    "models": ("edgepipe.models.store.cli", "models_main"),
    "bench": ("edgepipe.pipeline.bench.commands", "main"),
    "group": ("edgepipe.pipeline.run_command", "group_main"),
    "keys": ("edgepipe.pipeline.ops.keys", "main"),
    "install-service": ("edgepipe.pipeline.ops.service", "main"),
    "doctor": ("edgepipe.pipeline.ops.doctor", "main"),
    "setup-tpu-venv": ("edgepipe.pipeline.ops.tpu_venv", "main"),
    "config": ("edgepipe.pipeline.config.show", "main"),
    "endpoints": ("edgepipe.pipeline.endpoints", "main"),
}
RUN = ("edgepipe.pipeline.run_command", "run_main")  # the default command: run the pipeline


def _command(module: str, function: str) -> Callable:
    # the one lazy import of the command line: the pipeline (cv2, numpy, zmq) loads only when a command runs
    return getattr(importlib.import_module(module), function)


def _positive(kind):
    """An argparse type: a number of ``kind`` above 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a number, got %r" % text) from None
        if not value > 0:
            raise argparse.ArgumentTypeError("must be above 0, got %s" % text)
        return value
    parse.__name__ = kind.__name__
    return parse


def prog() -> str:
    """How the user called it: ``edgepipe`` (the console script, ``python -m edgepipe``) or ``run.py``."""
    name = os.path.basename(sys.argv[0] or "")
    return "edgepipe" if name in ("edgepipe", "__main__.py") else "run.py"


def run_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog(), description="Real-time face detection, expression recognition and classification "
        "as asyncio actors over ZeroMQ. Subcommands: %s (%s SUBCOMMAND --help)." % (", ".join(SUBCOMMANDS), prog()))
    ap.add_argument("--profile", help="fd+fer64 | fd+fer64-fast | fd+fer112 | fd | cls | cls-imagenet (profiles of "
                    "the config)")
    ap.add_argument("--config", help="a config file overlaid on config.toml beside run.py: its tables merge key "
                    "by key, its other values (lists too) replace")
    ap.add_argument("--source", help="auto (default: the Pi camera, else a V4L2 camera, else demo) | demo | "
                    "demo:unpaced | synthetic[:faces=N,fps=F,size=WxH] | dir:PATH | IMAGE | video:PATH | "
                    "picamera2[:WxH] | v4l2:N | rtsp://... | http://... (MJPEG)")
    ap.add_argument("--camera", action="append", metavar="NAME=SPEC",
                    help="one camera of several, e.g. --camera left=v4l2:0 --camera right=picamera2 (repeatable; "
                    "SPEC as --source; each has its own capture and encoder, the models are shared)")
    ap.add_argument("--engine", help="auto (default: the Edge TPU, else the CPU when the models are there, else "
                    "fake) | fake | cpu | edgetpu: every role's engine unless --place says")
    ap.add_argument("--place", action="append", metavar="ROLE=ENGINE",
                    help="one role's engine, e.g. --place fer=cpu (roles: detector, fer, classifier)")
    ap.add_argument("--display", help="none | window | file:PATH.mp4 | web | web:[HOST:]PORT (the live view; web: "
                    "127.0.0.1:8080)")
    ap.add_argument("--encoder", choices=("raw", "jpeg"), help="how frames cross into inference")
    ap.add_argument("--fer-workers", type=int, help="FER pool size")
    ap.add_argument("--mqtt", metavar="URL", help="publish results, face events and metrics to an MQTT broker: "
                    "mqtt://[USER:PASS@]HOST[:PORT] or mqtts://... (more in [mqtt] of the config)")
    ap.add_argument("--metrics-endpoint", help="where metrics subscribers attach (default from the config)")
    ap.add_argument("--name", help="the pipeline's name on this host (pipeline.name, default: default): its public "
                    "endpoints are in a folder of that name (python run.py endpoints --name NAME prints them)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--frames", type=_positive(int), help="stop after N frames")
    g.add_argument("--duration", type=_positive(float), help="stop after S seconds")
    ap.add_argument("--summary", help="write the run summary as JSON to PATH")
    ap.add_argument("--results", help="write one JSON line per finished frame to PATH")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _command(*SUBCOMMANDS[argv[0]])(argv[1:])
    args = run_parser().parse_args(argv)  # --help and bad options end here, before the pipeline is imported
    return _command(*RUN)(args)
