"""``python run.py metrics --prometheus [HOST:]PORT``: the pipeline's metrics for Prometheus.

Subscribes to a running pipeline's metrics endpoint and serves the latest
snapshot of every actor at ``/metrics`` in Prometheus' text format:
counters as ``edgepipe_<name>_total{actor="..."}`` and gauges as
``edgepipe_<name>{actor="..."}``.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple

from bus.messages import Metric

_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(key: str) -> str:
    return "edgepipe_" + _BAD.sub("_", key)


def render(latest: Dict[str, Metric]) -> str:
    """Prometheus text exposition of the latest snapshot per actor."""
    series: Dict[str, List[Tuple[str, str, float]]] = {}
    for actor in sorted(latest):
        m = latest[actor]
        for k, v in m.counters.items():
            series.setdefault(metric_name(k) + "_total", []).append(("counter", actor, float(v)))
        for k, v in m.gauges.items():
            series.setdefault(metric_name(k), []).append(("gauge", actor, float(v)))
    lines = []
    for name in sorted(series):
        kind = series[name][0][0]
        lines.append("# TYPE %s %s" % (name, kind))
        for _, actor, value in series[name]:
            lines.append('%s{actor="%s"} %r' % (name, actor.replace('"', "'"), value))
    return "\n".join(lines) + "\n"


class Exporter:
    """An HTTP server (its own threads) over a dict of snapshots that the caller keeps up to date."""

    def __init__(self, host: str, port: int) -> None:
        self.latest: Dict[str, Metric] = {}
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                with exporter.lock:
                    body = render(exporter.latest).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="prometheus", daemon=True)

    @property
    def address(self) -> Tuple[str, int]:
        return self.server.server_address[:2]

    def update(self, m: Metric) -> None:
        with self.lock:
            self.latest[m.actor] = m

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
