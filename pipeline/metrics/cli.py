"""``python run.py metrics``: attach to a running pipeline's metrics PUB and show a live table."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Dict, List, Optional

from edgepipe.actors.runtime.tasks import first
from edgepipe.bus.messages import Metric
from edgepipe.bus.rundir import RunDirError, find_pipeline, resolve
from edgepipe.bus.sockets import Bus
from edgepipe.pipeline.config.loading import ConfigError, load
from edgepipe.pipeline.metrics.prometheus import DEFAULT_STALE_S, Exporter

COLUMNS = ("actor", "pid", "fps", "in", "out", "dropped", "rejected", "busy p50", "lat p50", "lat p99", "queue",
           "runs on")


def table(latest: Dict[str, Metric]) -> str:
    rows: List[List[str]] = [list(COLUMNS)]
    for name in sorted(latest):
        m = latest[name]
        c, g = m.counters, m.gauges
        queue = g.get("pending", g.get("queue", 0.0))
        rows.append([name, str(m.pid), "%.1f" % g.get("fps", 0.0), str(c.get("in", 0)), str(c.get("out", 0)),
                     str(c.get("dropped", 0)), str(c.get("rejected", 0)), "%.2f" % g.get("busy_ms_p50", 0.0),
                     "%.1f" % g.get("latency_ms_p50", 0.0), "%.1f" % g.get("latency_ms_p99", 0.0), "%.0f" % queue,
                     ",".join(k[3:] for k in sorted(g) if k.startswith("on.")) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) if 0 < i < len(COLUMNS) - 1 else v.ljust(w)
                       for i, (v, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    devices: Dict[str, float] = {}
    for m in latest.values():  # every actor on a device reports it; one line per device
        for k, v in m.gauges.items():
            if k.startswith("device.") and k.endswith(".busy_pct"):
                devices[k[len("device."):-len(".busy_pct")]] = v
    for name in sorted(devices):
        lines.append("device %s: busy %.0f%% over the last second" % (name, devices[name]))
    return "\n".join(lines)


async def export(endpoint: str, host: str, port: int, stop: "asyncio.Event", on_ready=None,
                 stale_after: Optional[float] = None) -> int:
    """Serve the latest metrics of the pipeline at ``endpoint`` for Prometheus until ``stop``."""
    try:
        exporter = Exporter(host, port, stale_after=stale_after or DEFAULT_STALE_S, source=endpoint)
    except OSError as exc:
        print("metrics --prometheus: cannot listen on %s:%d (%s)" % (host, port, exc), file=sys.stderr)
        return 1
    bus = Bus()
    exporter.start()
    try:
        sub = bus.sub(endpoint, hwm=1000, name="prometheus", topics=("metric",))
        print("serving http://%s:%d/metrics from %s" % (exporter.address[0], exporter.address[1], endpoint),
              file=sys.stderr)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print("warning: serving on %s, not loopback: anyone who can reach port %d reads the metrics"
                  % (host or "every interface", exporter.address[1]), file=sys.stderr)
        if on_ready is not None:
            on_ready(exporter)

        async def serve() -> None:
            while True:
                m = await sub.recv()
                if isinstance(m, Metric):
                    exporter.update(m)

        if not stop.is_set():
            await first(serve(), stop.wait())
        return 0
    finally:
        exporter.close()
        bus.close()


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
    ap.add_argument("--endpoint", default=None, help="metrics endpoint (default: endpoints.metrics of the config; "
                    "ipc://{pipeline}/metrics: that of the pipeline named --name running on this host)")
    ap.add_argument("--name", default=None, help="the pipeline's name (pipeline.name; default: the config's, "
                    "'default'); python run.py endpoints --name NAME prints where it publishes")
    ap.add_argument("--config", default=None)
    ap.add_argument("--once", action="store_true", help="print one snapshot and exit")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    ap.add_argument("--timeout", type=float, default=10.0, help="give up when nothing arrives for this long")
    ap.add_argument("--prometheus", metavar="[HOST:]PORT",
                    help="serve the metrics at http://HOST:PORT/metrics for Prometheus instead of printing "
                    "(HOST defaults to 127.0.0.1; 0.0.0.0 for a Prometheus on another machine)")
    ap.add_argument("--stale-after", type=float, default=None, metavar="S",
                    help="with --prometheus: drop an actor's series when it has been silent for S seconds "
                    "(default 5); edgepipe_up is 0 when every actor is gone")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config, name=args.name)
    except ConfigError as exc:
        print("config error: %s" % exc, file=sys.stderr)
        return 2
    endpoint = args.endpoint or cfg.endpoints.metrics
    try:  # ipc://{pipeline}/metrics: the running pipeline of that name's; ipc://{run}/metrics: the one running
        endpoint = resolve(find_pipeline(endpoint, cfg.pipeline.name))
    except RunDirError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    if args.prometheus:
        host, _, port = args.prometheus.rpartition(":")
        try:
            port_n = int(port)
        except ValueError:
            print("--prometheus: expected PORT or HOST:PORT, got %r" % args.prometheus, file=sys.stderr)
            return 2
        return asyncio.run(_export_until_signal(endpoint, host or "127.0.0.1", port_n, args.stale_after))
    try:
        return asyncio.run(watch(endpoint, args.once, args.interval, args.timeout))
    except KeyboardInterrupt:
        return 130


async def _export_until_signal(endpoint: str, host: str, port: int, stale_after: Optional[float] = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await export(endpoint, host, port, stop, stale_after=stale_after)
