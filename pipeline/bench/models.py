"""Benchmark models alone: invoke time on the CPU at 1 and N threads, and on the Edge TPU.

``bench_models`` loads each model's engine, feeds it a fixed random input of
the right shape and dtype, discards ``warmup`` invokes and reports the median
of ``runs`` invoke times as FPS (1000 / median ms). The TPU column is filled
only when an Edge TPU engine loads (no fall-back here); otherwise it is None
(``n/a`` in the table) with the reason in ``tpu_error``.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgepipe.models.engines.engine import Engine, EngineError
from edgepipe.models.registry import make_engine
from edgepipe.models.store import fetch
from edgepipe.models.store.manifest import MODELS, get
from edgepipe.pipeline.bench.table import text_table

log = logging.getLogger(__name__)


def _random_input(engine: Engine, seed: int = 0) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for spec in engine.inputs:
        if spec.dtype.startswith("float"):
            out.append(rng.uniform(-1.0, 1.0, spec.shape).astype(spec.dtype))
        else:
            info = np.iinfo(spec.dtype)
            out.append(rng.integers(info.min, int(info.max) + 1, spec.shape).astype(spec.dtype))
    return out


def time_engine(engine: Engine, runs: int = 50, warmup: int = 5) -> Dict[str, float]:
    """Median and 90th-percentile invoke time (ms) of a loaded engine."""
    x = _random_input(engine)
    for _ in range(max(0, warmup)):
        engine.invoke(x)
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        engine.invoke(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))]}


def bench_models(names: Sequence[str], threads_list: Optional[Sequence[int]] = None, runs: int = 50,
                 engine_kinds: Sequence[str] = ("cpu", "edgetpu"), warmup: int = 5,
                 model_paths: Sequence[str] = (), device: str = "") -> List[Dict[str, object]]:
    """One row per model: input, size on disk, CPU FPS per thread count, Edge TPU FPS or None."""
    if threads_list is None:
        threads_list = (1, os.cpu_count() or 1)
    threads_list = sorted(set(int(t) for t in threads_list))
    rows = []
    for name in names:
        spec = get(name)
        h, w, c = spec.input_shape
        row: Dict[str, object] = {"model": name, "task": spec.task,
                                  "input": "%dx%dx%d %s" % (h, w, c, spec.input_dtype),
                                  "file": None, "size_bytes": None, "size_mb": None,
                                  "cpu": {}, "tpu_fps": None, "tpu_ms": None}
        if "cpu" in engine_kinds:
            for t in threads_list:
                eng = make_engine("cpu", spec, threads=t, model_paths=model_paths)
                try:
                    eng.load()
                    stats = time_engine(eng, runs, warmup)
                finally:
                    eng.close()
                path = getattr(eng, "model_path", None)
                if path is not None and row["file"] is None:
                    size = os.path.getsize(str(path))
                    row.update({"file": str(path), "size_bytes": size, "size_mb": round(size / 1e6, 2)})
                row["cpu"][str(t)] = {"median_ms": round(stats["median_ms"], 3),
                                      "p90_ms": round(stats["p90_ms"], 3),
                                      "fps": round(1000.0 / stats["median_ms"], 1)}
                log.info("bench %s cpu x%d: %.2f ms", name, t, stats["median_ms"])
        if "edgetpu" in engine_kinds:
            if "edgetpu" not in spec.files:
                row["tpu_error"] = "no Edge TPU file"
            else:
                eng = make_engine("edgetpu", spec, device=device, model_paths=model_paths)
                try:
                    eng.load()
                    stats = time_engine(eng, runs, warmup)
                    row["tpu_ms"] = round(stats["median_ms"], 3)
                    row["tpu_fps"] = round(1000.0 / stats["median_ms"], 1)
                    row["tpu_size_bytes"] = os.path.getsize(str(eng.model_path))
                except EngineError as exc:
                    row["tpu_error"] = str(exc)
                    log.info("bench %s: no Edge TPU: %s", name, exc)
                finally:
                    eng.close()
        rows.append(row)
    return rows


def render_table(rows: Sequence[Dict[str, object]]) -> str:
    """A plain-text table of ``bench_models`` rows."""
    threads = sorted({int(t) for r in rows for t in (r.get("cpu") or {})})  # type: ignore[union-attr]
    head = ["model", "input", "size MB"] + ["CPU x%d FPS (ms)" % t for t in threads] + ["TPU FPS (ms)"]
    lines = [head]
    for r in rows:
        cpu = r.get("cpu") or {}
        cells = [str(r["model"]), str(r["input"]),
                 "%.2f" % r["size_mb"] if r.get("size_mb") is not None else "n/a"]
        for t in threads:
            c = cpu.get(str(t))  # type: ignore[union-attr]
            cells.append("%.1f (%.2f)" % (c["fps"], c["median_ms"]) if c else "n/a")
        cells.append("%.1f (%.2f)" % (r["tpu_fps"], r["tpu_ms"]) if r.get("tpu_fps") is not None else "n/a")
        lines.append(cells)
    return "\n".join(text_table(lines[0], lines[1:]))


def local_models(model_paths: Sequence[str] = ()) -> List[str]:
    """Names of the manifest models whose CPU file is already here (search folders or cache)."""
    return [n for n, s in MODELS.items() if "cpu" in s.files
            and fetch.locate(s, s.files["cpu"], model_paths) is not None]
