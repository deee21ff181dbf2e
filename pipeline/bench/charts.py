"""PNG bar charts for ``run.py bench`` (matplotlib, Agg backend).

matplotlib is optional: ``available()`` says whether it can be imported, and
every chart function raises ``ChartsUnavailable`` when it cannot, so that the
benchmark still writes its JSON and says how to get the charts.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger("edgepipe.charts")

INSTALL_HINT = "charts need matplotlib: pip install matplotlib"


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt  # optional and heavy: only when a chart is drawn
    except ImportError:
        raise ChartsUnavailable(INSTALL_HINT) from None
    plt.switch_backend("Agg")  # no display needed, safe in threads and on headless machines
    return plt


def available() -> bool:
    try:
        _pyplot()
    except ChartsUnavailable:
        return False
    return True


def _bars(ax: Any, groups: Sequence[str], series: List[Tuple[str, List[Optional[float]]]],
          ylabel: str, title: str, fmt: str = "%.1f") -> None:
    """Grouped bars: one group per x label, one bar per series; None leaves a gap marked n/a."""
    n = max(1, len(series))
    width = 0.8 / n
    for i, (label, values) in enumerate(series):
        xs = [g + (i - (n - 1) / 2.0) * width for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=label)
        for bar, v in zip(bars, values):
            ax.annotate(fmt % v if v is not None else "n/a", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(list(range(len(groups))))
    ax.set_xticklabels(list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)
    top = max([v for _, vs in series for v in vs if v is not None] or [0.0])
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)


def _save(fig: Any, path: str) -> str:
    plt = _pyplot()
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    log.info("chart written: %s", path)
    return path


def models_chart(rows: Sequence[Dict[str, Any]], path: str) -> str:
    """FPS per model on the CPU at each thread count, and on the Edge TPU when any row has it."""
    plt = _pyplot()
    threads = sorted({int(t) for r in rows for t in (r.get("cpu") or {})})
    names = [str(r["model"]) for r in rows]
    series: List[Tuple[str, List[Optional[float]]]] = []
    for t in threads:
        series.append(("CPU x%d" % t, [((r.get("cpu") or {}).get(str(t)) or {}).get("fps") for r in rows]))
    if any(r.get("tpu_fps") is not None for r in rows):
        series.append(("Edge TPU", [r.get("tpu_fps") for r in rows]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(rows) + 2), 4.5))
    _bars(ax, names, series, "FPS (1000 / median invoke ms)", "Models alone: invoke FPS")
    return _save(fig, path)


def _fps(case: Optional[Dict[str, Any]]) -> Optional[float]:
    return None if case is None else case.get("fps")


def pipeline_charts(result: Dict[str, Any], out_dir: str) -> List[str]:
    """The four pipeline charts; returns the paths written."""
    plt = _pyplot()
    cases = {c["id"]: c for c in result["cases"]}
    grid = result["grid"]
    faces, workers = grid["faces"], grid["workers"]
    written = []

    # (a) FER pool size x faces, with the serial loop beside it
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    series = [("%d FER worker%s" % (w, "s" if w > 1 else ""),
               [_fps(cases.get(result["ids"]["pipeline"].get("f%d-w%d" % (f, w)))) for f in faces]) for w in workers]
    series.append(("serial loop", [_fps(cases.get(result["ids"]["serial"].get("f%d" % f))) for f in faces]))
    _bars(axes[0], ["%d face%s" % (f, "s" if f > 1 else "") for f in faces], series, "completed FPS",
          "Completed FPS by FER pool size and faces")
    drops = [("%d worker%s" % (w, "s" if w > 1 else ""),
              [(cases.get(result["ids"]["pipeline"].get("f%d-w%d" % (f, w))) or {}).get("drop_rate")
               for f in faces]) for w in workers]
    _bars(axes[1], ["%d face%s" % (f, "s" if f > 1 else "") for f in faces],
          [(n, [None if v is None else 100.0 * v for v in vs]) for n, vs in drops],
          "% of captured frames dropped", "Drops (% of captured frames)", fmt="%.1f")
    written.append(_save(fig, os.path.join(out_dir, "bench_pipeline_fer.png")))

    # (b), (c): two-way comparisons with latency beside FPS
    for key, title, fname in (("encoder", "Encoder: raw vs JPEG", "bench_pipeline_encoder.png"),
                              ("transport", "Endpoints: inproc:// vs ipc://", "bench_pipeline_transport.png")):
        comp = result["comparisons"].get(key)
        if not comp:
            continue
        pair = [cases[comp["base"]], cases[comp["other"]]]
        if any(c.get("fps") is None for c in pair):  # a failed run has no latency to draw
            continue
        labels = [comp["base_label"], comp["other_label"]]
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        _bars(axes[0], labels, [("FPS", [c["fps"] for c in pair])], "completed FPS", title)
        _bars(axes[1], labels, [("p50", [c["latency_ms"]["p50"] for c in pair]),
                                ("p99", [c["latency_ms"]["p99"] for c in pair])],
              "capture -> result latency (ms)", "Latency")
        written.append(_save(fig, os.path.join(out_dir, fname)))

    # (d) pipeline vs the reference serial loop
    rows = result["comparisons"].get("pipeline_vs_serial") or []
    if rows:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 2), 4.5))
        labels = ["%d face%s, %s" % (r["faces"], "s" if r["faces"] > 1 else "", r["encoder"]) for r in rows]
        _bars(ax, labels, [("pipeline (best pool)", [r["pipeline_fps"] for r in rows]),
                           ("serial loop", [r["serial_fps"] for r in rows])],
              "completed FPS", "Actor pipeline vs the reference serial loop (same fake engines)")
        for i, r in enumerate(rows):
            ax.annotate("x%.2f" % r["speedup"], (i, 0), ha="center", va="bottom", fontsize=9,
                        xytext=(0, 4), textcoords="offset points", color="white", fontweight="bold")
        written.append(_save(fig, os.path.join(out_dir, "bench_pipeline_serial.png")))
    return written


def cameras_chart(result: Dict[str, Any], path: str) -> str:
    """``bench cameras``: the slowest and the fastest camera's FPS by camera count, one panel per placement on
    the fake Edge TPU and one for the CPU engine, with each panel's camera rate as a dashed line."""
    plt = _pyplot()
    fake, cpu = result.get("fake") or {}, result.get("cpu") or {}
    panels: List[Tuple[str, List[Dict[str, Any]], Optional[float]]] = []
    for placement in dict.fromkeys(r["placement"] for r in fake.get("rows", [])):
        panels.append(("fake Edge TPU, %s" % placement, [r for r in fake["rows"] if r["placement"] == placement],
                       fake.get("camera_fps")))
    if cpu.get("rows"):
        panels.append(("CPU engine, demo clip", cpu["rows"], cpu.get("clip_fps")))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 4.2), squeeze=False)
    for ax, (title, rows, rate) in zip(axes[0], panels):
        _bars(ax, ["%d cam%s" % (r["cameras"], "s" if r["cameras"] > 1 else "") for r in rows],
              [("slowest camera", [r.get("fps_min") for r in rows]),
               ("fastest camera", [r.get("fps_max") for r in rows])],
              "completed FPS per camera", title)
        if rate:
            ax.axhline(rate, linestyle="--", linewidth=1, color="grey")
            ax.set_ylim(0, max(ax.get_ylim()[1], rate * 1.2))
    return _save(fig, path)
