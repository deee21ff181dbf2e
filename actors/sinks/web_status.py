"""The live view's status document (``/api/status``, each ``/events`` message): ``LiveState`` keeps what
the page shows (every actor's metrics, each camera's newest result and whether its frames still come),
updated from the event loop and read by the web server's threads."""
from __future__ import annotations

import math
import re
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgepipe.bus.messages import Metric, Result

STALE_S = 5.0  # an actor silent this long is shown as stale
CAMERA_STALL_S = 3.0  # a camera with no frame this long (and no end of stream) is shown as stalled
RESOURCES_ACTOR = "resources"  # an actor whose gauges are temperatures, power and the like
STATS_GAUGES = frozenset(("fps", "fps_avg", "busy_pct", "busy_ms_p50", "busy_ms_p99", "latency_ms_p50",
                          "latency_ms_p99", "uptime_s"))  # what every actor's Stats reports


def _num(v: Any, digits: int = 3) -> Optional[float]:
    """A JSON-safe number: None for NaN and infinities."""
    if v is None:
        return None
    v = float(v)
    return round(v, digits) if math.isfinite(v) else None


def actor_key(order: Sequence[str], name: str) -> Tuple[int, str, int]:
    """The roles' ``order`` (from the source to the sinks: the table of roles'), then workers by number
    (fer-2 before fer-10)."""
    m = re.match(r"(.*)-(\d+)$", name)
    base, n = (m.group(1), int(m.group(2))) if m else (name, -1)
    return (order.index(base) if base in order else len(order), base, n)


class LiveState:
    """What the page shows, kept up to date from the event loop and read by the server's threads."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0
        self.closed = False
        self.metrics: Dict[str, Metric] = {}
        self.heard: Dict[str, float] = {}  # actor -> time.monotonic() of its last snapshot here
        self.cameras: Dict[str, CameraView] = {"default": CameraView("default")}  # in name order
        self.roles: Dict[str, str] = {}  # role -> where it runs
        self.order: Tuple[str, ...] = ()  # the roles from the source to the sinks

    def _changed(self) -> None:
        self.version += 1
        self.cond.notify_all()

    def set_cameras(self, labels: Dict[str, str]) -> None:
        """The run's cameras (name -> label), in name order."""
        with self.cond:
            self.cameras = {name: CameraView(name, labels[name] or name) for name in sorted(labels)}
            self._changed()

    def camera(self, name: str) -> Optional["CameraView"]:
        return self.cameras.get(name)

    @property
    def first(self) -> "CameraView":
        return next(iter(self.cameras.values()))

    def set_result(self, r: Result, fps: float) -> None:
        with self.cond:
            view = self.cameras.get(r.camera)
            if view is not None:
                view.result, view.fps = r, fps
                view.shown += 1
                view.last_t = time.monotonic()
                self._changed()

    def frame_came(self, camera: str) -> None:
        """A frame of ``camera`` reached the display: it is live (no wake-up: the next update shows it)."""
        view = self.cameras.get(camera)
        if view is not None:
            view.last_t = time.monotonic()
            view.ended = False

    def camera_ended(self, camera: str) -> None:
        with self.cond:
            view = self.cameras.get(camera)
            if view is not None and not view.ended:
                view.ended = True
                self._changed()

    def set_metric(self, m: Metric) -> None:
        with self.cond:
            if m.final:
                self.metrics.pop(m.actor, None)
                self.heard.pop(m.actor, None)
            else:
                self.metrics[m.actor] = m
                self.heard[m.actor] = time.monotonic()
            self._changed()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_change(self, seen: int, timeout: float) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.version != seen or self.closed, timeout)
            return self.version

    def status(self) -> Dict[str, Any]:
        """The status document (``/api/status``)."""
        now = time.monotonic()
        with self.cond:
            metrics, heard = dict(self.metrics), dict(self.heard)
            roles, order = dict(self.roles), self.order
            cameras = [view.status(now, metrics, tuple(self.cameras)) for view in self.cameras.values()]
        actors: List[Dict[str, Any]] = []
        devices: Dict[str, Optional[float]] = {}
        resources: Dict[str, Optional[float]] = {}
        for name in sorted(metrics, key=lambda a: actor_key(order, a)):
            m = metrics[name]
            c, g = m.counters, m.gauges
            if name == RESOURCES_ACTOR:  # the machine's sensors (on a Pi): not a stage of the pipeline
                resources.update((k, _num(v, 2)) for k, v in g.items()
                                 if k not in STATS_GAUGES and not k.startswith(("engine.", "on.")))
                continue
            lat = g.get("latency_ms_p50", 0.0) > 0
            actors.append({
                "name": name, "pid": m.pid,
                "fps": _num(g.get("fps", 0.0), 2), "busy_pct": _num(g.get("busy_pct", 0.0), 1),
                "p50_ms": _num(g.get("latency_ms_p50" if lat else "busy_ms_p50", 0.0)),
                "p99_ms": _num(g.get("latency_ms_p99" if lat else "busy_ms_p99", 0.0)),
                "latency_measured": lat,
                "queue": _num(g.get("pending", g.get("queue", 0.0)), 0),
                "in": c.get("in", 0), "out": c.get("out", 0), "dropped": c.get("dropped", 0),
                "rejected": c.get("rejected", 0), "restarts": c.get("restarts", 0),
                "runs_on": sorted(k[3:] for k in g if k.startswith("on.")),
                "stale": now - heard.get(name, now) > STALE_S,
            })
            for k, v in g.items():
                if k.startswith("device.") and k.endswith(".busy_pct"):
                    devices[k[len("device."):-len(".busy_pct")]] = _num(v, 1)
                elif k.startswith("resources."):
                    resources[k[len("resources."):]] = _num(v, 2)
        first = cameras[0]
        return {"actors": actors, "roles": roles, "devices": devices, "resources": resources,
                "faces": first["faces"], "labels": first["labels"], "frame": first["frame"], "cameras": cameras}


def _faces(r: Result) -> List[Dict[str, Any]]:
    return [{"track": f.track, "expression": f.expression, "smoothed": f.smoothed,
             "confidence": _num(f.confidence), "score": _num(f.box.score),
             "box": [_num(v, 1) for v in f.box.as_list()]} for f in r.faces]


class CameraView:
    """One camera's tile: its newest result shown, the display's FPS of it, whether frames still come."""

    def __init__(self, name: str, label: str = "") -> None:
        self.name, self.label = name, label or name
        self.result: Optional[Result] = None
        self.fps = 0.0
        self.shown = 0  # results of this camera shown
        self.last_t: Optional[float] = None  # time.monotonic() of its last frame or result here
        self.ended = False  # its capture sent its end of stream

    def state(self, now: float) -> str:
        if self.ended:
            return "ended"
        if self.last_t is None:
            return "waiting"
        return "stalled" if now - self.last_t > CAMERA_STALL_S else "live"

    def status(self, now: float, metrics: Dict[str, Metric], names: Tuple[str, ...]) -> Dict[str, Any]:
        """The camera's entry of the status document: its frames captured and the frames of it dropped
        anywhere (the display's own skips aside) from the actors' metrics."""
        one = names == ("default",)
        capture = metrics.get("capture" if one else "capture-" + self.name)
        prefix = "camera.%s.dropped." % self.name
        drops = sum(c for actor, m in metrics.items() if actor not in ("display", "recorder")
                    for k, c in m.counters.items() if (k == "dropped" if one else k.startswith(prefix)))
        r = self.result
        frame = None if r is None else {
            "frame_id": r.frame_id, "width": r.width, "height": r.height, "partial": r.partial,
            "latency_ms": _num((r.t_result - r.t_capture) * 1000.0, 1), "fps": _num(self.fps, 2)}
        return {"name": self.name, "label": self.label, "state": self.state(now),
                "fps": _num(self.fps, 2), "latency_ms": None if frame is None else frame["latency_ms"],
                "frames": capture.counters.get("out", 0) if capture is not None else 0, "shown": self.shown,
                "drops": drops, "frame": frame, "faces": [] if r is None else _faces(r),
                "labels": [] if r is None else [[label, _num(p)] for label, p in (r.labels or [])],
                "stream": "/stream/%s.mjpg" % self.name, "snapshot": "/snapshot/%s.jpg" % self.name}
