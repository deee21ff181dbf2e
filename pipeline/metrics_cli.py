"""``python run.py metrics``: attach to a running pipeline's metrics PUB and show a live table."""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Dict, List

from bus.messages import Metric
from bus.sockets import Bus

COLUMNS = ("actor", "pid", "fps", "in", "out", "dropped", "rejected", "busy p50", "lat p50", "lat p99", "queue")


def table(latest: Dict[str, Metric]) -> str:
    rows: List[List[str]] = [list(COLUMNS)]
    for name in sorted(latest):
        m = latest[name]
        c, g = m.counters, m.gauges
        queue = g.get("pending", g.get("queue", 0.0))
        rows.append([name, str(m.pid), "%.1f" % g.get("fps", 0.0), str(c.get("in", 0)), str(c.get("out", 0)),
                     str(c.get("dropped", 0)), str(c.get("rejected", 0)), "%.2f" % g.get("busy_ms_p50", 0.0),
                     "%.1f" % g.get("latency_ms_p50", 0.0), "%.1f" % g.get("latency_ms_p99", 0.0), "%.0f" % queue])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
                     for r in rows)


async def watch(endpoint: str, once: bool, interval: float, timeout: float) -> int:
    bus = Bus()
    try:
        sub = bus.sub(endpoint, hwm=1000, name="metrics-cli", topics=("metric",))
        latest: Dict[str, Metric] = {}
        t_first = None
        t_print = time.monotonic()
        deadline = time.monotonic() + timeout
        while True:
            if await sub.poll(200):
                m = await sub.recv()
                if isinstance(m, Metric):
                    latest[m.actor] = m
                    t_first = t_first or time.monotonic()
            now = time.monotonic()
            if not latest and now > deadline:
                print("no metrics from %s within %.0f s: is a pipeline running there?" % (endpoint, timeout),
                      file=sys.stderr)
                return 1
            if once and t_first is not None and now - t_first >= interval:
                print(table(latest))
                return 0
            if not once and latest and now - t_print >= interval:
                t_print = now
                if sys.stdout.isatty():
                    sys.stdout.write("\x1b[2J\x1b[H")
                print(time.strftime("%H:%M:%S"), endpoint)
                print(table(latest), flush=True)
    finally:
        bus.close()


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="run.py metrics", description="live per-actor metrics of a running pipeline")
    ap.add_argument("--endpoint", default=None, help="metrics endpoint (default: endpoints.metrics of the config)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--once", action="store_true", help="print one snapshot and exit")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    ap.add_argument("--timeout", type=float, default=10.0, help="give up when nothing arrives for this long")
    args = ap.parse_args(argv)
    endpoint = args.endpoint
    if endpoint is None:
        from .config import load
        endpoint = load(args.config).endpoints.metrics
    try:
        return asyncio.run(watch(endpoint, args.once, args.interval, args.timeout))
    except KeyboardInterrupt:
        return 130
