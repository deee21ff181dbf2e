"""The fault suite's JSON report: each test adds its figures as it finishes.

Written to ``$EDGEPIPE_FAULTS_REPORT`` (the README's figures: ``EDGEPIPE_FAULTS_REPORT=bench-out/faults/faults.json``;
unset, conftest puts it in the session's temporary folder); sections written by other tests are kept.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List

from edgepipe.models.spec import iou

ROOT = Path(__file__).resolve().parents[1]


def report_path() -> Path:
    return Path(os.environ.get("EDGEPIPE_FAULTS_REPORT", str(ROOT / "bench-out" / "faults" / "faults.json")))


def record(section: str, name: str, data: Dict[str, Any]) -> None:
    """Add (or replace) ``report[section][name]``."""
    update(report_path(), [section, name], data)


def update(path: Path, keys: List[str], data: Dict[str, Any]) -> None:
    """Set ``report[keys[0]]...[keys[-1]]`` in the JSON report at ``path`` (made if missing), with the
    machine and the time it was recorded; what other tests wrote there is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        report = {}
    report["machine"] = {"cpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version(),
                         "system": "%s %s" % (platform.system(), platform.release())}
    node = report
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = dict(data, recorded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
    tmp.replace(path)


def read_results(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def timing(lines: List[Dict[str, Any]]) -> Dict[str, float]:
    """How long the fault held the results up: the longest gap between two results against the median
    one, and how long frames stayed partial (from the first partial one to the next complete one)."""
    t = [r["t_ms"] for r in lines]
    gaps = [b - a for a, b in zip(t, t[1:])] or [0.0]
    median = statistics.median(gaps)
    degraded = 0.0
    start = None
    for r in lines:
        if r["partial"] and start is None:
            start = r["t_ms"]
        elif not r["partial"] and start is not None:
            degraded = max(degraded, r["t_ms"] - start)
            start = None
    if start is not None:  # partial to the end
        degraded = max(degraded, t[-1] - start)
    return {"longest_gap_ms": round(max(gaps), 1), "median_gap_ms": round(median, 1),
            "recovery_ms": round(max(0.0, max(gaps) - median), 1), "partial_for_ms": round(degraded, 1)}


def wrong_joins(lines: List[Dict[str, Any]]) -> int:
    """Expressions attached to a face whose truth says otherwise (a face of another frame, or another face's
    expression). A detection with no true face under it is a false positive of the detector, counted apart."""
    wrong = 0
    for r in lines:
        for face in r["faces"]:
            if not r.get("truth"):
                continue
            truth = max(r["truth"], key=lambda tf: iou(tf["box"], face["box"]))
            if iou(truth["box"], face["box"]) > 0.5 and face["expression"] not in (None, truth["expression"]):
                wrong += 1
    return wrong
