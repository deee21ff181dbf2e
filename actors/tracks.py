"""Face tracks across frames and a rolling majority vote on their expressions.

A per-frame FER label flickers; users want the face's expression. Faces are
matched to the tracks of earlier frames by box overlap (greedy, best IoU
first); each track keeps its last ``window`` labels and reports the most
common one (ties go to the most recent).
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Deque, Dict, List, Optional, Tuple

from edgepipe.models.spec import iou


class Track:
    __slots__ = ("id", "box", "labels", "last_frame")

    def __init__(self, tid: int, box: List[float], window: int, frame_id: int) -> None:
        self.id = tid
        self.box = box
        self.labels: Deque[str] = deque(maxlen=window)
        self.last_frame = frame_id

    def vote(self) -> Optional[str]:
        if not self.labels:
            return None
        counts = Counter(self.labels)
        best = max(counts.values())
        for label in reversed(self.labels):  # the most recent of the most common
            if counts[label] == best:
                return label
        return None


class TrackIds:
    """Track ids, shared by the trackers of several cameras so that an id names one face of one camera."""

    def __init__(self) -> None:
        self.next = 0

    def new(self) -> int:
        tid, self.next = self.next, self.next + 1
        return tid


class Tracker:
    """The tracks of one camera (frame ids are per camera)."""

    def __init__(self, window: int = 5, min_iou: float = 0.3, max_age: int = 15,
                 ids: Optional[TrackIds] = None) -> None:
        self.window = window
        self.min_iou = min_iou
        self.max_age = max_age
        self.tracks: Dict[int, Track] = {}
        self.ids = ids if ids is not None else TrackIds()

    def update(self, frame_id: int, faces: List[Tuple[List[float], Optional[str]]]) -> List[Tuple[int, Optional[str]]]:
        """For each (box, label) of one frame: (track id, smoothed label)."""
        for tid in [t.id for t in self.tracks.values() if frame_id - t.last_frame > self.max_age]:
            del self.tracks[tid]
        pairs = sorted(((iou(box, t.box), i, t.id) for i, (box, _) in enumerate(faces)
                        for t in self.tracks.values()), reverse=True)
        assigned: Dict[int, int] = {}
        used = set()
        for overlap, i, tid in pairs:
            if overlap < self.min_iou:
                break
            if i in assigned or tid in used:
                continue
            assigned[i] = tid
            used.add(tid)
        out = []
        for i, (box, label) in enumerate(faces):
            tid = assigned.get(i)
            if tid is None:
                tid = self.ids.new()
                self.tracks[tid] = Track(tid, box, self.window, frame_id)
            t = self.tracks[tid]
            t.box, t.last_frame = box, frame_id
            if label is not None:
                t.labels.append(label)
            out.append((tid, t.vote()))
        return out
