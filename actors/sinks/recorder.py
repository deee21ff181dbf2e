"""Recorder: subscribes to results, checks them against the source's truth,
writes one JSON line per frame (``--results``) and knows when the stream ended.
"""
from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import IO, Any, Dict, List, Optional

from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.bus.messages import Eos, Result, TruthFace
from edgepipe.bus.sockets import Bus
from edgepipe.models.families.labels import canonical
from edgepipe.models.spec import iou

MATCH_IOU = 0.5
TRUTH_KEPT = 4096  # frames whose truth waits for their result


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
        self.top_labels: Dict[str, List[float]] = {}  # classification: label -> its probability, per frame it led
        self.truth: "OrderedDict[int, List[TruthFace]]" = OrderedDict()  # frame id -> what the source drew
        self.first_t: Optional[float] = None
        self.last_t: Optional[float] = None

    async def setup(self) -> None:
        self.drained = asyncio.Event()
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
                    self.loss.end_of_stream(self.sub, "result", msg)
                    self.drained.set()
                continue
            if isinstance(msg, Result):
                self._record(msg)

    def expect_truth(self, frame_id: int, truth: List[TruthFace]) -> None:
        """Capture's hook: what the source knows of a frame it is about to send (bounded)."""
        self.truth[frame_id] = truth
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
        if r.labels:
            label, p = r.labels[0]
            self.top_labels.setdefault(label, []).append(p)
        check = None
        truth = self.truth.pop(r.frame_id, None)
        if truth is not None:
            check = match_truth(r, truth)
            t["frames_with_truth"] += 1
            for k in ("truth", "matched", "expression_correct", "false_positives"):
                t[k] += check[k]
            if (check["matched"] == check["truth"] == check["expression_correct"] == len(r.faces)
                    and not r.partial):
                t["frames_exact"] += 1
        if self.fh is not None:
            line = {
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

    def label_summary(self, n: int = 5) -> List[Dict[str, Any]]:
        """The classifier's most frequent top-1 labels: label, frames it led, its mean probability there."""
        ranked = sorted(self.top_labels.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:n]
        return [{"label": label, "frames": len(ps), "mean_prob": round(sum(ps) / len(ps), 4)} for label, ps in ranked]

    async def cleanup(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
