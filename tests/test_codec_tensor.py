"""The detector's input as a second side frame of an encoded frame: hostile descriptions, frames and fits are
rejected with a reason (the round trip of a good one is in test_codec.py's strategies)."""
from __future__ import annotations

import msgspec
import pytest

from edgepipe.bus import messages as m
from edgepipe.bus.codec import Codec, DecodeError

NAN = float("nan")
V = m.SCHEMA_VERSION
FRAME = {"kind": "frame", "frame_id": 1, "t_capture": 1.0, "source": "s"}
ENC = {"kind": "encoded", "frame_id": 1, "t_capture": 1.0, "format": "raw", "width": 4, "height": 4}
IMG = ["uint8", [4, 4, 3]]
PIXELS = bytes(48)


def pack(*doc) -> bytes:
    return msgspec.msgpack.encode(list(doc))


@pytest.mark.parametrize("frames, reason", [
    ([b"frame/default/", pack(V, 1, IMG, FRAME, IMG), PIXELS, PIXELS], "bad_frames"),  # a frame has no tensor
    ([b"encoded/default/", pack(V, 1, IMG, ENC, IMG), PIXELS], "bad_frames"),  # a tensor described, not sent
    ([b"encoded/default/", pack(V, 1, IMG, ENC), PIXELS, PIXELS], "bad_frames"),  # a tensor sent, not described
    ([b"encoded/default/", pack(V, 1, IMG, dict(ENC, fit=[1.0, 1.0, 0.0, 0.0]), IMG), PIXELS, PIXELS], None),
    ([b"encoded/default/", pack(V, 1, IMG, ENC, IMG), PIXELS, PIXELS], "bad_value"),  # a tensor without its fit
    ([b"encoded/default/", pack(V, 1, IMG, dict(ENC, fit=[1.0, 1.0, 0.0, 0.0])), PIXELS], "bad_value"),  # a fit alone
    ([b"encoded/default/", pack(V, 1, IMG, dict(ENC, fit=[0.0, 1.0, 0.0, 0.0]), IMG), PIXELS, PIXELS], "bad_value"),
    ([b"encoded/default/", pack(V, 1, IMG, dict(ENC, fit=[1.0, 1.0, NAN, 0.0]), IMG), PIXELS, PIXELS], "bad_value"),
    ([b"encoded/default/", pack(V, 1, IMG, dict(ENC, fit=[1.0, 1.0]), IMG), PIXELS, PIXELS], "bad_value"),
    ([b"encoded/default/", pack(V, 1, IMG, dict(ENC, fit=[1.0, 1.0, 0.0, 0.0]), ["float32", [4, 3]]), PIXELS, PIXELS],
     "bad_value"),  # not H x W x C uint8
])
def test_hostile_tensor_frames_are_rejected_with_a_reason(frames, reason):
    if reason is None:  # the control case: the same shape, valid
        msg = Codec().decode(frames)
        assert msg.fit == (1.0, 1.0, 0.0, 0.0) and msg.tensor.shape == (4, 4, 3)
        return
    with pytest.raises(DecodeError) as err:
        Codec().decode(frames)
    assert err.value.reason == reason, err.value
