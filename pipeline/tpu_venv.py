"""``python run.py setup-tpu-venv``: the Python 3.9 venv that runs the TPU group.

PyCoral ships wheels for Python 3.9 only. This creates a venv with that
Python and installs what a TPU-side group imports: numpy, pyzmq, msgspec,
OpenCV (headless), tomli and a LiteRT runtime (ai-edge-litert 2.1, the last
release for 3.9, or tflite-runtime 2.14 where ai-edge-litert has no wheel).
PyCoral itself comes from Coral's own package index (see the README).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import List

BASE = ["numpy>=1.21,<2.1", "pyzmq>=25,<28", "msgspec>=0.18,<1", "opencv-python-headless>=4.8,<5", "tomli>=1.1"]
RUNTIMES = [["ai-edge-litert>=2.1,<2.2"], ["tflite-runtime==2.14.0", "numpy<2"]]


def _run(cmd: List[str]) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def setup(python: str, venv: str, extra: List[str]) -> str:
    if not os.path.exists(python):
        raise SystemExit("setup-tpu-venv: %s does not exist (on Raspberry Pi OS: sudo apt install python3.9, "
                         "or build it with pyenv)" % python)
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != "3.9":
        print("setup-tpu-venv: warning: %s is Python %s; PyCoral needs 3.9" % (python, version), file=sys.stderr)
    _run([python, "-m", "venv", venv])
    vpy = os.path.join(venv, "bin", "python")
    _run([vpy, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    last = None
    for runtime in RUNTIMES:
        try:
            _run([vpy, "-m", "pip", "install", "--quiet"] + BASE + runtime + list(extra))
            break
        except subprocess.CalledProcessError as exc:
            last = exc
            print("setup-tpu-venv: %s not installable here, trying the next runtime" % runtime[0], file=sys.stderr)
    else:
        raise SystemExit("setup-tpu-venv: no LiteRT runtime could be installed (%s)" % last)
    return vpy


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="run.py setup-tpu-venv", description=__doc__.splitlines()[0])
    ap.add_argument("--python", required=True, help="the Python 3.9 executable")
    ap.add_argument("--venv", default=".venv-tpu", help="where to create the venv (default .venv-tpu)")
    ap.add_argument("--extra", action="append", default=[], help="more packages (e.g. pycoral from Coral's index)")
    args = ap.parse_args(argv)
    vpy = setup(args.python, args.venv, args.extra)
    print("TPU venv ready: set python = %r in [groups.tpu] of your config" % vpy)
    return 0
