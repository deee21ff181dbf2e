"""Recorder: subscribes to results, checks them against the source's truth,
writes one JSON line per frame (``--results``) and knows when the stream ended.

It also tallies what the run saw, for the summary: faces per expression, each
face track's frames and smoothed expressions (the aggregator's tracks, by id;
the longest kept), and a classifier's top-1 labels. Every tally is bounded.
With a live source and INFO logging (``-v``) it logs each face track's
appearance, expression changes and end (the MQTT sink's ``TrackEvents``, so
the log and the ``events`` topic agree); with INFO off that costs nothing.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, OrderedDict
from typing import IO, Any, Dict, List, Optional, Tuple

from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.sinks.mqtt_payloads import TrackEvents
from edgepipe.bus.messages import DEFAULT_CAMERA, Eos, Result, TruthFace
from edgepipe.bus.sockets import Bus
from edgepipe.models.families.labels import canonical
from edgepipe.models.spec import iou

MATCH_IOU = 0.5
TRUTH_KEPT = 4096  # frames whose truth waits for their result
TRACKS_KEPT = 1024  # face tracks tallied; beyond it the one seen longest ago is forgotten (counted)


def match_truth(result: Result, truth: List[TruthFace]) -> dict:
    """Compare a result with its frame's truth: faces matched (IoU >= 0.5) and expressions right."""
    used = set()
    matched = correct = 0
    for t in truth:
        best, best_iou = None, MATCH_IOU
        for i, f in enumerate(result.faces):
            if i in used:
                continue
            v = iou(t.box.as_list(), f.box.as_list())
            if v >= best_iou:
                best, best_iou = i, v
        if best is not None:
            used.add(best)
            matched += 1
            e = result.faces[best].expression
            if e is not None and canonical(e) == canonical(t.expression):
                correct += 1
    return {"truth": len(truth), "matched": matched, "expression_correct": correct,
            "false_positives": len(result.faces) - len(used)}


def _dominant(votes: "Counter[str]") -> Optional[str]:
    """The most frequent label (ties: the first in alphabetical order), or None."""
    return min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0] if votes else None


class Recorder(Actor):
    role = "recorder"

    hwm = 1024  # results queued for the recorder

    def __init__(self, name: str, bus: Bus, endpoints: Endpoints, context: Context) -> None:
        super().__init__(name, bus, endpoints, context)
        self.results_endpoint = endpoints["results"]
        self.results_path = context.results_path
        self.fh: Optional[IO[str]] = None
        self.drained: Optional[asyncio.Event] = None
        self.totals = {"frames": 0, "faces": 0, "truth": 0, "matched": 0, "expression_correct": 0,
                       "false_positives": 0, "frames_with_truth": 0, "frames_exact": 0}
        self.latency_ms: list = []  # capture -> result, every frame of the run
        self.top_labels: Dict[str, list] = {}  # classification: label -> [frames it led, sum of its p there]
        self.expressions: "Counter[str]" = Counter()  # faces per expression (each frame's own label)
        # face track id -> ([frames seen, first frame id, last frame id], its smoothed labels); latest seen last
        self.tracks: "OrderedDict[int, Tuple[List[int], Counter[str]]]" = OrderedDict()
        self.tracks_forgotten = 0
        # (camera, frame id) -> what that camera's source drew
        self.truth: "OrderedDict[Tuple[str, int], List[TruthFace]]" = OrderedDict()
        self.per_camera: Dict[str, Dict[str, Any]] = {}  # camera -> its frames, faces, latencies, truth checks
        self.first_t: Optional[float] = None
        self.last_t: Optional[float] = None
        self.watch: Optional[TrackEvents] = None  # face-track events to log (a live source, INFO logging)

    async def setup(self) -> None:
        self.drained = asyncio.Event()
        if self.context.live and self.log.isEnabledFor(logging.INFO):
            self.watch = TrackEvents()
        if self.results_path:
            self.fh = open(self.results_path, "w", encoding="utf-8")
        self.sub = self.channel(self.bus.sub(self.results_endpoint, hwm=self.hwm, name=self.name,
                                             topics=("result", "eos")))

    async def run(self) -> None:
        while True:
            msg = await self.sub.recv()
            self.loss.account(self.sub, "result")
            if isinstance(msg, Eos):
                if self.drained is not None:
                    if self.loss.end_of_stream(self.sub, "result", msg) and self.watch is not None:
                        self._log_events(self.watch.end(msg.last_frame_id))
                    self.drained.set()
                continue
            if isinstance(msg, Result):
                self._record(msg)

    def expect_truth(self, frame_id: int, truth: List[TruthFace], camera: str = DEFAULT_CAMERA) -> None:
        """Capture's hook: what a camera's source knows of a frame it is about to send (bounded)."""
        self.truth[(camera, frame_id)] = truth
        while len(self.truth) > TRUTH_KEPT:  # frames dropped on the way never come back
            self.truth.popitem(last=False)

    def _record(self, r: Result) -> None:
        self.stats.count("in")
        t = self.totals
        t["frames"] += 1
        t["faces"] += len(r.faces)
        self.first_t = r.t_result if self.first_t is None else self.first_t
        self.last_t = r.t_result
        self.latency_ms.append((r.t_result - r.t_capture) * 1000.0)
        cam = self.per_camera.get(r.camera)
        if cam is None:
            cam = self.per_camera[r.camera] = {"frames": 0, "partial": 0, "faces": 0, "latency_ms": [],
                                               "last_t": None, "frames_with_truth": 0, "frames_exact": 0,
                                               "truth": 0, "matched": 0}
        cam["frames"] += 1
        cam["partial"] += int(r.partial)
        cam["faces"] += len(r.faces)
        cam["latency_ms"].append((r.t_result - r.t_capture) * 1000.0)
        cam["last_t"] = r.t_result
        if r.labels:
            label, p = r.labels[0]
            led = self.top_labels.setdefault(label, [0, 0.0])
            led[0] += 1
            led[1] += p
        for f in r.faces:
            if f.expression is not None:
                self.expressions[f.expression] += 1
            if f.track >= 0:
                self._tally_track(f.track, r.frame_id, f.smoothed)
        if self.watch is not None:
            self._log_events(self.watch.update(r))
        check = None
        truth = self.truth.pop((r.camera, r.frame_id), None)
        if truth is not None:
            check = match_truth(r, truth)
            t["frames_with_truth"] += 1
            cam["frames_with_truth"] += 1
            for k in ("truth", "matched", "expression_correct", "false_positives"):
                t[k] += check[k]
            cam["truth"] += check["truth"]
            cam["matched"] += check["matched"]
            if (check["matched"] == check["truth"] == check["expression_correct"] == len(r.faces)
                    and not r.partial):
                t["frames_exact"] += 1
                cam["frames_exact"] += 1
        if self.fh is not None:
            line: Dict[str, Any] = {
                "camera": r.camera,  # every line names its camera, the one camera "default" too
                "frame_id": r.frame_id,
                "partial": r.partial,
                "in_order": r.in_order,
                "latency_ms": round((r.t_result - r.t_capture) * 1000.0, 3),
                "t_ms": round((r.t_result - self.first_t) * 1000.0, 3),  # since the first result
                "faces": [{"box": [round(v, 1) for v in f.box.as_list()], "score": round(f.box.score, 4),
                           "expression": f.expression,
                           "confidence": None if f.confidence is None else round(f.confidence, 4),
                           "track": f.track, "smoothed": f.smoothed}
                          for f in r.faces],
            }
            if r.labels is not None:
                line["labels"] = r.labels
            if truth is not None:
                line["truth"] = [{"box": tf.box.as_list(), "expression": tf.expression} for tf in truth]
            self.fh.write(json.dumps(line) + "\n")
        self.stats.count("out")

    def _log_events(self, events: List[Dict[str, Any]]) -> None:
        for e in events:
            if e["event"] == "appeared":
                self.log.info("face track %d appeared at frame %d: %s", e["track"], e["frame_id"],
                              e["expression"] or "no expression yet")
            elif e["event"] == "expression":
                self.log.info("face track %d: %s -> %s at frame %d", e["track"], e["previous"] or "no expression",
                              e["expression"], e["frame_id"])
            else:
                self.log.info("face track %d %s at frame %d (last seen at frame %d, %s)", e["track"],
                              "gone" if e["reason"] == "unseen" else "ends with the stream", e["frame_id"],
                              e["last_frame_id"], e["expression"] or "no expression")

    def _tally_track(self, tid: int, frame_id: int, smoothed: Optional[str]) -> None:
        t = self.tracks.get(tid)
        if t is None:
            t = self.tracks[tid] = ([0, frame_id, frame_id], Counter())
            while len(self.tracks) > TRACKS_KEPT:
                self.tracks.popitem(last=False)
                self.tracks_forgotten += 1
        else:
            self.tracks.move_to_end(tid)
        seen, votes = t
        seen[0] += 1
        seen[1], seen[2] = min(seen[1], frame_id), max(seen[2], frame_id)
        if smoothed is not None:
            votes[smoothed] += 1

    def label_summary(self, n: int = 5) -> List[Dict[str, Any]]:
        """The classifier's most frequent top-1 labels: label, frames it led, its mean probability there."""
        ranked = sorted(self.top_labels.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
        return [{"label": label, "frames": k, "mean_prob": round(p / k, 4)} for label, (k, p) in ranked]

    def expression_summary(self, n_tracks: int = 10) -> Dict[str, Any]:
        """What the faces showed: faces per expression (most first), the run's dominant expression, and
        the longest face tracks (id, frames seen, first and last frame, dominant smoothed expression)."""
        per_label = dict(sorted(self.expressions.items(), key=lambda kv: (-kv[1], kv[0])))
        longest = sorted(self.tracks.items(), key=lambda kv: (-kv[1][0][0], kv[0]))[:n_tracks]
        return {
            "expressions": per_label,
            "dominant_expression": next(iter(per_label), None),
            "tracks": [{"track": tid, "frames": seen[0], "first_frame": seen[1], "last_frame": seen[2],
                        "expression": _dominant(votes)} for tid, (seen, votes) in longest],
            "tracks_total": len(self.tracks) + self.tracks_forgotten,
        }

    async def cleanup(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
