"""What every ``run.py bench`` command shares: the machine's description, the output files and charts."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional

from edgepipe import ROOT as REPO
from edgepipe.pipeline.bench import charts

DEFAULT_OUT = "bench-out"
SHARED_MODELS = os.path.join("..", "shared", "assets", "models")


def _git(*args: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git"] + list(args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module)  # a library whose version the benchmark records; it may be missing
    except ImportError:
        return None
    return str(getattr(mod, "__version__", None) or getattr(mod, "pyzmq_version", lambda: None)() or "")


def machine_info() -> Dict[str, Any]:
    """What a reader needs to compare numbers from two runs."""
    try:
        usable = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load_avg: Optional[List[float]] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load_avg = None
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_avg": load_avg,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "versions": {m: _version(m) for m in ("numpy", "cv2", "zmq", "msgspec", "uvloop")},
    }


def write_json(path: str, data: Any) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)


def write_report(out_dir: str, name: str, data: Any, lead: str = "\n") -> str:
    """Write a benchmark's JSON as ``out_dir/name`` (the folder made if needed), say so; its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    write_json(path, data)
    print("%swrote %s" % (lead, path))
    return path


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def with_charts(fn: Callable[[], List[str]]) -> List[str]:
    """Draw charts, or say clearly why not (matplotlib is optional)."""
    if not charts.available():
        print("note: no PNG charts written: %s (the JSON has every number)" % charts.INSTALL_HINT)
        return []
    return fn()


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None
