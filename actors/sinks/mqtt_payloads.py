"""What edgepipe publishes over MQTT: topics, JSON payloads, face-track events
and Home Assistant discovery configs. No I/O here (``mqtt_sink`` sends).

Topics under the prefix (default ``edgepipe/NAME``), for the whole pipeline:

- ``PREFIX/availability``  ``online`` / ``offline`` (retained; ``offline`` is the last will)
- ``PREFIX/metrics``       a summary every ``summary_interval_s``, with a ``cameras`` section

and per camera under ``CAM = PREFIX/CAMERA`` (a run with the one camera ``default``
keeps ``CAM = PREFIX``, as its actors keep their names: ``capture``, ``encoder``):

- ``CAM/state``    ``{"faces", "expression", "frame_id", "time"}`` when either changes (retained)
- ``CAM/results``  one frame's result, at most ``results_hz`` times a second
- ``CAM/events``   a face track appeared, changed its smoothed expression, or is gone
- ``CAM/metrics``  the camera's status every ``summary_interval_s`` (named cameras only)

and ``DISCOVERY/sensor/NODE/OBJECT/config`` (retained) for Home Assistant: a device
per camera (OBJECT ``CAMERA_faces``, ...; the one camera ``default``: ``faces``, ...).
``time`` fields are Unix seconds (wall clock); ``t_capture``/``t_result`` are the
pipeline's monotonic seconds. Boxes are ``[x1, y1, x2, y2]`` in pixels of the frame.
"""
from __future__ import annotations

import json
import math
import re
import socket
import time
from collections import Counter
from typing import Annotated, Any, Dict, List, Optional, Sequence

from msgspec import Meta

from edgepipe.actors.runtime.settings import Section
from edgepipe.actors.tracks import Tracker
from edgepipe.bus.messages import DEFAULT_CAMERA, Metric, Result


class MqttConfig(Section):
    """MQTT out (``--mqtt mqtt://[USER:PASS@]HOST[:PORT]``): results, face events, metrics, HA discovery."""

    host: Annotated[str, Meta(description=(
        "the broker's host; \"\" = MQTT off. --mqtt mqtt://[USER:PASS@]HOST[:PORT] (mqtts:// for TLS) sets host, "
        "port, user, password and tls; topics and payloads: README \"MQTT and Home Assistant\""))] = ""
    port: Annotated[int, Meta(ge=1, le=65535, description="the broker's port (8883 for mqtts://)")] = 1883
    user: Annotated[str, Meta(description="user name at the broker (\"\": none)")] = ""
    password: Annotated[str, Meta(description="password at the broker")] = ""
    tls: Annotated[bool, Meta(description="connect over TLS (mqtts://)")] = False
    ca_file: Annotated[str, Meta(description="CA of the broker's certificate (\"\" = the system's)")] = ""
    tls_insecure: Annotated[bool, Meta(description=(
        "accept any certificate and host name (testing only)"))] = False
    client_id: Annotated[str, Meta(description="MQTT client id; \"\": edgepipe-NAME")] = ""
    name: Annotated[str, Meta(description=(
        "this pipeline (its topics, the Home Assistant devices' ids); \"\": the host name"))] = ""
    topic_prefix: Annotated[str, Meta(description="the topics' prefix; \"\": edgepipe/NAME")] = ""
    qos: Annotated[int, Meta(ge=0, le=2, description="QoS of every message")] = 1
    results_hz: Annotated[float, Meta(ge=0, le=1000, description=(
        "per-frame results on PREFIX/CAMERA/results at most this often per camera; 0 = none (events, state and "
        "metrics still go)"))] = 2.0
    summary_interval_s: Annotated[float, Meta(ge=0.1, le=86400, description=(
        "a metrics summary on PREFIX/metrics (and each camera's on PREFIX/CAMERA/metrics) this often"))] = 10.0
    discovery: Annotated[bool, Meta(description=(
        "Home Assistant MQTT discovery: a device per camera with face count, dominant expression and FPS "
        "sensors; stale ones of this pipeline are removed"))] = True
    discovery_prefix: Annotated[str, Meta(description="Home Assistant's discovery topic prefix")] = "homeassistant"
    queue: Annotated[int, Meta(ge=1, le=1000000, description=(
        "messages kept while the broker is away; the oldest are dropped (counted)"))] = 1000
    reconnect_min_s: Annotated[float, Meta(ge=0.01, le=3600, description=(
        "backoff between connection attempts, doubling up to reconnect_max_s"))] = 0.5
    reconnect_max_s: Annotated[float, Meta(ge=0.01, le=3600, description=(
        "the longest wait between connection attempts"))] = 30.0


GONE_AFTER = Tracker().max_age  # frames without a track's face: the aggregator's tracker forgets it then


def node_name(name: str) -> str:
    """The pipeline's name: ``name`` or this host's, fit for topics and HA object ids."""
    raw = name or socket.gethostname().split(".")[0] or "edgepipe"
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)


class CameraTopics:
    """One camera's topics, its Home Assistant device and the object ids of its entities."""

    def __init__(self, t: "Topics", camera: str) -> None:
        self.camera = camera
        flat = t.flat
        self.base = t.prefix if flat else "%s/%s" % (t.prefix, camera)
        self.state = self.base + "/state"
        self.results = self.base + "/results"
        self.events = self.base + "/events"
        self.metrics = t.metrics if flat else self.base + "/metrics"  # the one camera: the pipeline's summary
        self.uid = "edgepipe_%s" % t.node if flat else "edgepipe_%s_%s" % (t.node, camera)
        self.object_prefix = "" if flat else camera + "_"


class Topics:
    """The pipeline's topics (``availability``, ``metrics``) and its cameras' (``camera(NAME)``)."""

    def __init__(self, name: str, prefix: str = "", discovery_prefix: str = "homeassistant",
                 cameras: Sequence[str] = (DEFAULT_CAMERA,)) -> None:
        self.node = node_name(name)
        self.prefix = prefix or "edgepipe/%s" % self.node
        self.availability = self.prefix + "/availability"
        self.metrics = self.prefix + "/metrics"
        self.discovery_prefix = discovery_prefix
        self.cameras = tuple(cameras) or (DEFAULT_CAMERA,)
        self.flat = self.cameras == (DEFAULT_CAMERA,)  # the one camera default: no camera level in its topics
        self._cams: Dict[str, CameraTopics] = {}

    def camera(self, camera: str) -> CameraTopics:
        got = self._cams.get(camera)
        if got is None:
            got = self._cams[camera] = CameraTopics(self, camera)
        return got

    def discovery(self, obj: str) -> str:
        return "%s/sensor/%s/%s/config" % (self.discovery_prefix, self.node, obj)

    @property
    def discovery_filter(self) -> str:
        """Every discovery config of this pipeline's node (found to remove the stale ones)."""
        return "%s/sensor/%s/+/config" % (self.discovery_prefix, self.node)


def dumps(payload: Dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _num(v: Optional[float], digits: int = 4) -> Optional[float]:
    """A finite number rounded, or None (JSON has no NaN)."""
    if v is None or not math.isfinite(v):
        return None
    return round(v, digits)


def discovery_configs(t: Topics, profile: str, version: str,
                      labels: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """Home Assistant discovery: topic -> config, a device per camera with its face count, dominant
    expression and FPS sensors; each goes unavailable with the pipeline (its availability topic)."""
    out: Dict[str, Dict[str, Any]] = {}
    for camera in t.cameras:
        c = t.camera(camera)
        label = (labels or {}).get(camera, "")
        name = "edgepipe %s" % t.node if t.flat and not label else label or camera
        device = {"identifiers": [c.uid], "name": name, "manufacturer": "edgepipe",
                  "model": "profile %s" % profile, "sw_version": version}
        common = {"availability_topic": t.availability, "payload_available": "online",
                  "payload_not_available": "offline", "device": device}
        sensors = (
            ("faces", dict(name="Faces", state_topic=c.state, value_template="{{ value_json.faces }}",
                           state_class="measurement", unit_of_measurement="faces", icon="mdi:face-recognition")),
            ("expression", dict(name="Dominant expression", state_topic=c.state,
                                value_template="{{ value_json.expression if value_json.expression else 'none' }}",
                                icon="mdi:emoticon-outline")),
            ("fps", dict(name="FPS", state_topic=c.metrics, value_template="{{ value_json.fps }}",
                         state_class="measurement", unit_of_measurement="fps", icon="mdi:speedometer")),
        )
        for key, sensor in sensors:
            uid = "%s_%s" % (c.uid, key)
            out[t.discovery(c.object_prefix + key)] = dict(common, unique_id=uid, object_id=uid, **sensor)
    return out


def stale_discovery(topic: str, payload: bytes, ours: Dict[str, Any]) -> bool:
    """Whether a retained discovery config found under this pipeline's node is edgepipe's and no longer
    published (a camera gone from the config, discovery turned off): to be removed (an empty payload)."""
    if not payload or topic in ours:
        return False
    try:
        config = json.loads(payload)
    except ValueError:
        return False
    return isinstance(config, dict) and str(config.get("unique_id", "")).startswith("edgepipe_")


def result_payload(r: Result) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "frame_id": r.frame_id, "time": round(time.time(), 3), "t_capture": round(r.t_capture, 6),
        "t_result": round(r.t_result, 6), "latency_ms": round((r.t_result - r.t_capture) * 1000.0, 3),
        "width": r.width, "height": r.height, "partial": r.partial,
        "faces": [{"box": [round(v, 1) for v in f.box.as_list()], "score": _num(f.box.score),
                   "expression": f.expression, "confidence": _num(f.confidence), "track": f.track,
                   "smoothed": f.smoothed} for f in r.faces],
    }
    if r.labels is not None:
        out["labels"] = [[label, _num(p)] for label, p in r.labels]
    return out


def dominant(r: Result) -> Optional[str]:
    """The most common smoothed (else per-frame) expression among the frame's faces; ties: the first face's."""
    labels = [f.smoothed or f.expression for f in r.faces if (f.smoothed or f.expression)]
    if not labels:
        return None
    counts = Counter(labels)
    best = max(counts.values())
    return next(x for x in labels if counts[x] == best)


class _Seen:
    __slots__ = ("last_frame", "expression", "box", "score")

    def __init__(self, frame_id: int, expression: Optional[str], box: List[float], score: float) -> None:
        self.last_frame = frame_id
        self.expression = expression
        self.box = box
        self.score = score


class TrackEvents:
    """Face-track events from results: the aggregator's track ids and smoothed labels.

    ``appeared``: a track id not seen before; ``expression``: its smoothed label
    differs from the last one reported; ``gone``: no face of the track for more
    than ``gone_after`` frames (when the aggregator's tracker forgets it), or the
    stream ended.
    """

    def __init__(self, gone_after: int = GONE_AFTER) -> None:
        self.gone_after = gone_after
        self.tracks: Dict[int, _Seen] = {}
        self.state: Optional[Dict[str, Any]] = None

    def update(self, r: Result) -> List[Dict[str, Any]]:
        events: List[Dict[str, Any]] = []
        now = round(time.time(), 3)
        for f in r.faces:
            if f.track < 0:
                continue
            box = [round(v, 1) for v in f.box.as_list()]
            seen = self.tracks.get(f.track)
            if seen is None:
                self.tracks[f.track] = _Seen(r.frame_id, f.smoothed, box, f.box.score)
                events.append({"event": "appeared", "track": f.track, "frame_id": r.frame_id, "time": now,
                               "expression": f.smoothed, "box": box, "score": _num(f.box.score)})
                continue
            seen.last_frame, seen.box, seen.score = r.frame_id, box, f.box.score
            if f.smoothed is not None and f.smoothed != seen.expression:
                events.append({"event": "expression", "track": f.track, "frame_id": r.frame_id, "time": now,
                               "expression": f.smoothed, "previous": seen.expression, "box": box,
                               "score": _num(f.box.score)})
                seen.expression = f.smoothed
        for tid in [t for t, s in self.tracks.items() if r.frame_id - s.last_frame > self.gone_after]:
            events.append(self._gone(tid, r.frame_id, now, "unseen"))
        return events

    def end(self, frame_id: int) -> List[Dict[str, Any]]:
        """The stream ended: every track still open is gone."""
        now = round(time.time(), 3)
        return [self._gone(tid, frame_id, now, "end") for tid in list(self.tracks)]

    def _gone(self, tid: int, frame_id: int, now: float, why: str) -> Dict[str, Any]:
        s = self.tracks.pop(tid)
        return {"event": "gone", "track": tid, "frame_id": frame_id, "time": now, "reason": why,
                "last_frame_id": s.last_frame, "expression": s.expression, "box": s.box}

    def state_change(self, r: Result) -> Optional[Dict[str, Any]]:
        """The sensors' state when the face count or the dominant expression changed, else None."""
        key = {"faces": len(r.faces), "expression": dominant(r)}
        if self.state is not None and all(self.state[k] == v for k, v in key.items()):
            return None
        self.state = dict(key, frame_id=r.frame_id, time=round(time.time(), 3))
        return self.state


NOT_FRAMES = ("recorder", "display", "mqtt")  # their drops are not the pipeline's frames


def _actor(role: str, camera: str, flat: bool) -> str:
    return role if flat else "%s-%s" % (role, camera)  # as roles.camera_actor (which imports this module's sink)


def camera_status(latest: Dict[str, Metric], t: Topics, camera: str, label: str = "",
                  fps: Optional[float] = None) -> Dict[str, Any]:
    """One camera's status from its capture's and encoder's latest metrics and every actor's drops of its
    frames (``camera.NAME.dropped.REASON``; the one camera ``default``: the run's ``dropped.REASON``);
    ``fps``: its results per second as the publisher received them."""
    cap, enc = latest.get(_actor("capture", camera, t.flat)), latest.get(_actor("encoder", camera, t.flat))
    agg = latest.get("aggregator")
    by_reason: Dict[str, int] = {}
    prefix = "dropped." if t.flat else "camera.%s.dropped." % camera
    for name, m in latest.items():
        if t.flat and name in NOT_FRAMES:
            continue
        for k, v in m.counters.items():
            if k.startswith(prefix) and v:
                by_reason[k[len(prefix):]] = by_reason.get(k[len(prefix):], 0) + v
    if agg is None:
        completed = partial = None
    elif t.flat:
        completed, partial = agg.counters.get("completed", 0), agg.counters.get("partial", 0)
    else:
        completed = agg.counters.get("camera.%s.completed" % camera, 0)
        partial = agg.counters.get("camera.%s.partial" % camera, 0)
    return {
        "camera": camera, "label": label or camera, "time": round(time.time(), 3), "fps": _num(fps, 2),
        "capture_fps": _num(cap.gauges.get("fps", 0.0), 2) if cap is not None else None,
        "encoder_fps": _num(enc.gauges.get("fps", 0.0), 2) if enc is not None else None,
        "frames_captured": cap.counters.get("out", 0) if cap is not None else None,
        "frames_encoded": enc.counters.get("out", 0) if enc is not None else None,
        "frames_completed": completed, "frames_partial": partial,
        "dropped": sum(by_reason.values()), "dropped_by_reason": dict(sorted(by_reason.items())),
        "source_errors": cap.counters.get("source_errors", 0) if cap is not None else None,
        "source_reconnects": cap.counters.get("source_reconnects", 0) if cap is not None else None,
        "running": cap is not None and not cap.final,
    }


def metrics_summary(latest: Dict[str, Metric], own: Dict[str, Any], uptime_s: float,
                    cameras: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """A run summary from the actors' latest ``Metric`` snapshots, the publisher's own counters and the
    cameras' status (``camera_status``)."""
    agg = latest.get("aggregator") or latest.get("recorder")
    actors = {}
    dropped = 0
    captured = None
    for name, m in sorted(latest.items()):
        d = m.counters.get("dropped", 0)
        if name not in NOT_FRAMES:
            dropped += d
        role = name.partition("-")[0]
        if role == "capture":  # capture, or capture-CAMERA: one per camera
            captured = (captured or 0) + m.counters.get("out", 0)
        actors[name] = {"fps": _num(m.gauges.get("fps", 0.0), 2), "busy_ms_p50": _num(m.gauges.get("busy_ms_p50"), 3),
                        "busy_ms_p99": _num(m.gauges.get("busy_ms_p99"), 3), "in": m.counters.get("in", 0),
                        "out": m.counters.get("out", 0), "dropped": d}
    return {
        "time": round(time.time(), 3), "uptime_s": round(uptime_s, 3),
        "fps": _num(agg.gauges.get("fps", 0.0), 2) if agg is not None else None,
        "frames_captured": captured,
        "frames_out": agg.counters.get("out", 0) if agg is not None else None,
        "frames_partial": agg.counters.get("partial", 0) if agg is not None else None,
        "dropped": dropped,
        "latency_ms": {"p50": _num(agg.gauges.get("latency_ms_p50"), 3),
                       "p99": _num(agg.gauges.get("latency_ms_p99"), 3)} if agg is not None else None,
        "actors": actors,
        "cameras": cameras or {},
        "mqtt": own,
    }
