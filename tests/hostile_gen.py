"""Random and mutated messages for the hostile-input fault suite (tests/test_faults_hostile.py).

Every message is a list of ZeroMQ frames meant for the aggregator's expressions endpoint. None of them may
reach a real frame: the well-formed expressions among them name frames 10**9 and above, which never come.
``Barrage.make`` returns the frames and the category; ``sent`` counts each category.
"""
from __future__ import annotations

import random
from typing import Callable, Dict, List, Tuple

import msgspec
import numpy as np

from edgepipe.bus.codec import encode
from edgepipe.bus.messages import (SCHEMA_VERSION, Box, Detections, EncodedFrame, Expression, FaceJob, FaceLabel,
                                   FaceResult, Result)

FAR = 10 ** 9  # frame ids of the hostile expressions: no such frame ever comes
# the topics (frame 0) of every kind, the camera default's for a kind with a camera
KINDS = [b"frame/default/", b"encoded/default/", b"detections/default/", b"facejob/default/", b"expression/default/",
         b"result/default/", b"metric", b"eos/default/", b"ready", b"stopped"]
EXPRESSION = b"expression/default/"


class Barrage:
    def __init__(self, seed: int, oversized_header: int) -> None:
        self.rng = random.Random(seed)
        self.oversized_header = oversized_header  # bytes: over the bus's header cap, under libzmq's
        self.sent: Dict[str, int] = {}
        self.n = 0
        cats: List[Tuple[str, int, Callable[[], List[bytes]]]] = [
            ("random_frames", 10, self.random_frames),
            ("malformed_msgpack", 10, self.malformed_msgpack),
            ("unknown_kind", 8, self.unknown_kind),
            ("wrong_version", 8, self.wrong_version),
            ("wrong_kind_in_header", 6, self.wrong_kind_in_header),
            ("unknown_field", 6, self.unknown_field),
            ("missing_field", 6, self.missing_field),
            ("nan_confidence", 8, self.nan_confidence),
            ("negative_frame_id", 4, self.negative_frame_id),
            ("labels_not_matching_count", 4, self.labels_not_matching_count),
            ("box_outside_frame", 8, self.box_outside_frame),
            ("wrong_image_shape", 8, self.wrong_image_shape),
            ("raw_frame_wrong_size", 4, self.raw_frame_wrong_size),
            ("mutated_header", 10, self.mutated_header),
            ("stray_expression", 10, self.stray_expression),
        ]
        self.cats = cats
        self.weights = [w for _, w, _ in cats]

    def make(self) -> Tuple[str, List[bytes]]:
        self.n += 1
        if self.n % 5000 == 0:  # now and then a header over the bus's cap
            name, frames = "oversized_header", [EXPRESSION, b"\x94" + b"\xc0" * self.oversized_header]
        else:
            name, _, fn = self.rng.choices(self.cats, self.weights)[0]
            frames = fn()
        self.sent[name] = self.sent.get(name, 0) + 1
        return name, frames

    # ------------------------------------------------------------ the categories
    def _fid(self) -> int:
        return FAR + self.rng.randrange(1 << 20)

    def _expr(self, **kw) -> Expression:
        fields = dict(frame_id=self._fid(), face_index=0, count=1, worker="hostile", busy_ms=1.0,
                      faces=[FaceLabel("happy", 0.5)])
        fields.update(kw)
        return Expression(**fields)

    def _header(self, doc) -> bytes:
        return msgspec.msgpack.encode(doc)

    def random_frames(self) -> List[bytes]:
        return [self.rng.randbytes(self.rng.randrange(0, 64)) for _ in range(self.rng.randrange(1, 5))]

    def malformed_msgpack(self) -> List[bytes]:
        good = encode(self._expr(), self.n)[1]
        cut = self.rng.randrange(1, len(good))
        return [EXPRESSION, good[:cut] if self.rng.random() < 0.5 else b"\xc1" + good[1:]]

    def unknown_kind(self) -> List[bytes]:
        frames = encode(self._expr(), self.n)
        return [self.rng.choice([b"bogus", b"", b"expressionX", b"\xff" * 8])] + frames[1:]

    def wrong_version(self) -> List[bytes]:
        doc = msgspec.msgpack.decode(encode(self._expr(), self.n)[1])
        doc[0] = self.rng.choice([0, 1, SCHEMA_VERSION + 1, 99, -1])
        return [EXPRESSION, self._header(doc)]

    def wrong_kind_in_header(self) -> List[bytes]:
        frames = encode(self._expr(), self.n)
        return [self.rng.choice([k for k in KINDS if k != EXPRESSION])] + frames[1:]

    def unknown_field(self) -> List[bytes]:
        doc = msgspec.msgpack.decode(encode(self._expr(), self.n)[1])
        doc[3]["evil"] = 1
        return [EXPRESSION, self._header(doc)]

    def missing_field(self) -> List[bytes]:
        doc = msgspec.msgpack.decode(encode(self._expr(), self.n)[1])
        del doc[3][self.rng.choice(["frame_id", "face_index", "count", "worker", "busy_ms"])]
        return [EXPRESSION, self._header(doc)]

    def nan_confidence(self) -> List[bytes]:
        value = self.rng.choice([float("nan"), float("inf"), -1.0, 2.0])
        return encode(self._expr(faces=[FaceLabel("angry", value)]), self.n)

    def negative_frame_id(self) -> List[bytes]:
        return encode(self._expr(frame_id=-self.rng.randrange(1, 1 << 30)), self.n)

    def labels_not_matching_count(self) -> List[bytes]:
        return encode(self._expr(count=3), self.n)

    def box_outside_frame(self) -> List[bytes]:
        w, h = 640, 480
        box = self.rng.choice([Box(5000, 10, 5100, 50, 0.9), Box(100, 100, 50, 150, 0.9),
                              Box(-900, -900, -800, -800, 0.9)])
        kind = self.rng.random()
        if kind < 0.5:
            msg = Detections(self._fid(), 1.0, 1.0, w, h, [box], 1)
        else:
            msg = Result(self._fid(), 1.0, 1.0, w, h, [FaceResult(box)], False, True)
        return encode(msg, self.n)

    def wrong_image_shape(self) -> List[bytes]:
        crops = np.zeros((2, 8, 8, 1), np.uint8)
        frames = encode(FaceJob(self._fid(), 0, 2, 1.0, crops), self.n)
        return frames[:2] + [b"\0" * self.rng.choice([0, 1, 127, 129, 4096])]

    def raw_frame_wrong_size(self) -> List[bytes]:
        return encode(EncodedFrame(self._fid(), 1.0, "raw", 640, 480, np.zeros((4, 4, 3), np.uint8)), self.n)

    def mutated_header(self) -> List[bytes]:
        """A well-formed expression with its first bytes (array, version, seq, image) flipped, cut or doubled."""
        frames = encode(self._expr(), self.n)
        header = bytearray(frames[1])
        for _ in range(self.rng.randrange(1, 4)):
            i = self.rng.randrange(0, 4)
            header[i] ^= 1 << self.rng.randrange(8)
        if self.rng.random() < 0.2:
            frames.append(bytes(header[:8]))  # a third frame with no image
        return [frames[0], bytes(header)] + frames[2:]

    def stray_expression(self) -> List[bytes]:
        """Well-formed: a frame that never comes (counted as early, then orphan or overflow) or a repeat."""
        return encode(self._expr(face_index=self.rng.randrange(0, 2), count=1), self.n)
