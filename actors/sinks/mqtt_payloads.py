"""What edgepipe publishes over MQTT: topics, JSON payloads, face-track events
and Home Assistant discovery configs. No I/O here (``mqtt_sink`` sends).

Topics under the prefix (default ``edgepipe/NAME``):

- ``PREFIX/availability``  ``online`` / ``offline`` (retained; ``offline`` is the last will)
- ``PREFIX/state``         ``{"faces", "expression", "frame_id", "time"}`` when either changes (retained)
- ``PREFIX/results``       one frame's result, at most ``results_hz`` times a second
- ``PREFIX/events``        a face track appeared, changed its smoothed expression, or is gone
- ``PREFIX/metrics``       a summary every ``summary_interval_s``

and ``DISCOVERY/sensor/NODE/{faces,expression}/config`` (retained) for Home Assistant.
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
from typing import Annotated, Any, Dict, List, Optional

from msgspec import Meta

from edgepipe.actors.runtime.settings import Section
from edgepipe.actors.tracks import Tracker
from edgepipe.bus.messages import Result


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
        "this camera/pipeline (the Home Assistant device); \"\": the host name"))] = ""
    topic_prefix: Annotated[str, Meta(description="the topics' prefix; \"\": edgepipe/NAME")] = ""
    qos: Annotated[int, Meta(ge=0, le=2, description="QoS of every message")] = 1
    results_hz: Annotated[float, Meta(ge=0, le=1000, description=(
        "per-frame results on PREFIX/results at most this often; 0 = none (events, state and metrics still "
        "go)"))] = 2.0
    summary_interval_s: Annotated[float, Meta(ge=0.1, le=86400, description=(
        "a metrics summary on PREFIX/metrics this often"))] = 10.0
    discovery: Annotated[bool, Meta(description=(
        "Home Assistant MQTT discovery: a device with face count and dominant expression sensors"))] = True
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


class Topics:
    def __init__(self, name: str, prefix: str = "", discovery_prefix: str = "homeassistant") -> None:
        self.node = node_name(name)
        self.prefix = prefix or "edgepipe/%s" % self.node
        self.availability = self.prefix + "/availability"
        self.state = self.prefix + "/state"
        self.results = self.prefix + "/results"
        self.events = self.prefix + "/events"
        self.metrics = self.prefix + "/metrics"
        self.discovery_prefix = discovery_prefix

    def discovery(self, obj: str) -> str:
        return "%s/sensor/%s/%s/config" % (self.discovery_prefix, self.node, obj)


def dumps(payload: Dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _num(v: Optional[float], digits: int = 4) -> Optional[float]:
    """A finite number rounded, or None (JSON has no NaN)."""
    if v is None or not math.isfinite(v):
        return None
    return round(v, digits)


def discovery_configs(t: Topics, profile: str, version: str) -> Dict[str, Dict[str, Any]]:
    """Home Assistant discovery: topic -> config of the device's two sensors."""
    device = {"identifiers": ["edgepipe_%s" % t.node], "name": "edgepipe %s" % t.node,
              "manufacturer": "edgepipe", "model": "profile %s" % profile, "sw_version": version}
    common = {"state_topic": t.state, "availability_topic": t.availability, "payload_available": "online",
              "payload_not_available": "offline", "device": device}
    faces = dict(common, name="Faces", unique_id="edgepipe_%s_faces" % t.node,
                 object_id="edgepipe_%s_faces" % t.node, value_template="{{ value_json.faces }}",
                 state_class="measurement", unit_of_measurement="faces", icon="mdi:face-recognition")
    expr = dict(common, name="Dominant expression", unique_id="edgepipe_%s_expression" % t.node,
                object_id="edgepipe_%s_expression" % t.node,
                value_template="{{ value_json.expression if value_json.expression else 'none' }}",
                icon="mdi:emoticon-outline")
    return {t.discovery("faces"): faces, t.discovery("expression"): expr}


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


def metrics_summary(latest: Dict[str, Any], own: Dict[str, Any], uptime_s: float) -> Dict[str, Any]:
    """A run summary from the actors' latest ``Metric`` snapshots and the publisher's own counters."""
    agg = latest.get("aggregator") or latest.get("recorder")
    actors = {}
    dropped = 0
    for name, m in sorted(latest.items()):
        d = m.counters.get("dropped", 0)
        if name not in ("recorder", "display"):
            dropped += d
        actors[name] = {"fps": _num(m.gauges.get("fps", 0.0), 2), "busy_ms_p50": _num(m.gauges.get("busy_ms_p50"), 3),
                        "busy_ms_p99": _num(m.gauges.get("busy_ms_p99"), 3), "in": m.counters.get("in", 0),
                        "out": m.counters.get("out", 0), "dropped": d}
    cap = latest.get("capture")
    return {
        "time": round(time.time(), 3), "uptime_s": round(uptime_s, 3),
        "fps": _num(agg.gauges.get("fps", 0.0), 2) if agg is not None else None,
        "frames_captured": cap.counters.get("out", 0) if cap is not None else None,
        "frames_out": agg.counters.get("out", 0) if agg is not None else None,
        "frames_partial": agg.counters.get("partial", 0) if agg is not None else None,
        "dropped": dropped,
        "latency_ms": {"p50": _num(agg.gauges.get("latency_ms_p50"), 3),
                       "p99": _num(agg.gauges.get("latency_ms_p99"), 3)} if agg is not None else None,
        "actors": actors,
        "mqtt": own,
    }
