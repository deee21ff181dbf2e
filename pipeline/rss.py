"""Resident memory of the processes of a run, read from ``/proc`` (Linux; 0.0 elsewhere)."""
from __future__ import annotations

import os
import resource
import sys

from edgepipe.actors.monitoring.resources import status_mb


def _status_mb(pid: int, key: str) -> float:
    mb = status_mb(pid, key)
    return 0.0 if mb is None else round(mb, 1)


def reset_peak() -> bool:
    """Start this process's peak RSS afresh (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(pid: int = 0) -> float:
    """Peak resident set size of ``pid`` (default: this process, since ``reset_peak``), MB."""
    peak = _status_mb(pid or os.getpid(), "VmHWM")
    if peak or (pid and pid != os.getpid()):
        return peak
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: kB on Linux, bytes on macOS
    return round(rusage / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)


def rss_mb(pid: int = 0) -> float:
    """Current resident set size, MB."""
    return _status_mb(pid or os.getpid(), "VmRSS")
