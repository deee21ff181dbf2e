"""``python run.py setup-tpu-venv``: the Python 3.9 venv that runs the TPU group.

The runtime that works with Coral's libedgetpu 16.0 (tflite-runtime 2.11.0,
numpy<2) has wheels up to Python 3.10 only, and Raspberry Pi OS Bookworm ships
3.11, so the TPU group runs in its own venv made from a Python 3.9 (pyenv or a
uv-managed interpreter). Everything is installed from PyPI under
``constraints/tpu-py39.txt``, which says why each pin is there. PyCoral is not
needed: the engine loads the delegate through the runtime's ``load_delegate``.
At the end the Edge TPU delegate probe runs with the new venv's Python.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from typing import List, Optional

from edgepipe import ROOT
from edgepipe.models.engines.delegate_probe import probe

CONSTRAINTS = os.path.join(ROOT, "constraints", "tpu-py39.txt")
# what a TPU-side group imports; the versions come from the constraints file
REQUIREMENTS = ["tflite-runtime", "numpy", "pyzmq", "msgspec", "opencv-python-headless", "tomli", "uvloop", "anyio"]
FIND_PYTHON = ("install one: `pyenv install 3.9` (then $(pyenv root)/versions/3.9.*/bin/python) or "
               "`uv python install 3.9` (then `uv python find 3.9`); Bookworm has no python3.9 package")


def find_python39() -> Optional[str]:
    """A Python 3.9 on this machine: uv's, pyenv's, or python3.9 on PATH."""
    uv = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")  # PATH, or this venv's
    if os.path.exists(uv):
        try:
            out = subprocess.run([uv, "python", "find", "3.9"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, universal_newlines=True, timeout=60)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    for root in [r for r in roots if r]:
        found = sorted(glob.glob(os.path.join(root, "versions", "3.9.*", "bin", "python")))
        if found:
            return found[-1]
    return shutil.which("python3.9")


def install_command(vpy: str, extra: List[str]) -> List[str]:
    """The pip command that installs the TPU group's packages into the venv ``vpy``."""
    return [vpy, "-m", "pip", "install", "--quiet", "--only-binary", ":all:", "-c", CONSTRAINTS] \
        + REQUIREMENTS + list(extra)


def _run(cmd: List[str]) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def setup(python: str, venv: str, extra: List[str]) -> str:
    if not os.path.exists(python):
        raise SystemExit("setup-tpu-venv: %s does not exist; %s" % (python, FIND_PYTHON))
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.strip()
    if version != "3.9":
        print("setup-tpu-venv: warning: %s is Python %s; the pinned runtime (tflite-runtime 2.11.0) is "
              "tested here on 3.9" % (python, version), file=sys.stderr)
    _run([python, "-m", "venv", venv])
    vpy = os.path.join(venv, "bin", "python")
    _run([vpy, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    try:
        _run(install_command(vpy, extra))
    except subprocess.CalledProcessError as exc:
        raise SystemExit("setup-tpu-venv: pip could not install the pinned runtime (%s); check that %s is "
                         "Python 3.9 on 64-bit ARM or x86 Linux" % (exc, python)) from None
    try:  # the project itself, as the main Python has it: one import root, edgepipe, over this checkout
        _run(project_install_command(vpy))
    except subprocess.CalledProcessError as exc:
        raise SystemExit("setup-tpu-venv: pip could not install edgepipe from %s into the venv (%s)"
                         % (ROOT, exc)) from None
    return vpy


def project_install_command(vpy: str) -> List[str]:
    """The pip command that installs this checkout into the venv ``vpy`` (editable: the venv runs the
    checkout's code; its dependencies are the pinned ones above)."""
    return [vpy, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ROOT]


def probe_line(vpy: str) -> str:
    """One line: what the Edge TPU delegate probe says with the venv's Python."""
    res = probe(python=vpy, timeout_s=120)
    if res.ok:
        return "Edge TPU delegate probe: loads (%s)" % res.versions()
    return "Edge TPU delegate probe: FAILS: %s" % res.error


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="run.py setup-tpu-venv", description=__doc__.splitlines()[0])
    ap.add_argument("--python", help="the Python 3.9 executable (default: uv's, pyenv's or python3.9)")
    ap.add_argument("--venv", default=".venv-tpu", help="where to create the venv (default .venv-tpu)")
    ap.add_argument("--extra", action="append", default=[], help="more packages from PyPI")
    ap.add_argument("--no-probe", action="store_true", help="skip the Edge TPU delegate probe at the end")
    args = ap.parse_args(argv)
    python = args.python or find_python39()
    if not python:
        print("setup-tpu-venv: no Python 3.9 found; %s" % FIND_PYTHON, file=sys.stderr)
        return 2
    vpy = setup(python, args.venv, args.extra)
    if not args.no_probe:
        print(probe_line(vpy))
    print("TPU venv ready: set python = %r in [groups.tpu] of your config" % os.path.abspath(vpy))
    return 0
