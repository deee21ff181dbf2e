"""The wire format: round-trips, and rejection of malformed, truncated, wrong-version and oversized messages."""
from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import messages as m
from bus.codec import Codec, DecodeError, encode, roundtrip

from helpers import run_async

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
ints = st.integers(min_value=-(2 ** 62), max_value=2 ** 62)
text = st.text(max_size=20)
truth = st.lists(st.builds(m.TruthFace, st.lists(finite, min_size=4, max_size=4), text), max_size=3)
boxes = st.lists(st.builds(m.Box, finite, finite, finite, finite, finite,
                           st.none() | st.lists(st.lists(finite, min_size=2, max_size=2), max_size=5)), max_size=4)
images = st.builds(lambda h, w, c, seed: np.random.RandomState(seed).randint(0, 255, (h, w, c)).astype(np.uint8),
                   st.integers(1, 16), st.integers(1, 16), st.sampled_from([1, 3]), st.integers(0, 1000))
scalars = st.none() | st.booleans() | ints | finite | text
labels = st.none() | st.lists(st.lists(scalars, max_size=2), max_size=3)

MESSAGES = st.one_of(
    st.builds(m.Frame, ints, finite, text, images, st.none() | truth),
    st.builds(m.EncodedFrame, ints, finite, st.just("raw"), ints, ints, images, st.none() | truth),
    st.builds(m.EncodedFrame, ints, finite, st.just("jpeg"), ints, ints, st.binary(max_size=64), st.none() | truth),
    st.builds(m.Detections, ints, finite, finite, ints, ints, boxes, ints, st.none() | truth, labels),
    st.builds(m.FaceJob, ints, ints, ints, finite, images),
    st.builds(m.Expression, ints, ints, text, finite, text, finite, st.none() | st.lists(finite, max_size=7), text),
    st.builds(m.Result, ints, finite, finite, ints, ints,
              st.lists(st.builds(m.FaceResult, st.lists(finite, min_size=4, max_size=4), finite,
                                 st.none() | text, st.none() | finite), max_size=3),
              st.booleans(), st.booleans(), st.none() | truth, labels),
    st.builds(m.Metric, text, ints, finite, st.dictionaries(text, ints, max_size=4),
              st.dictionaries(text, finite, max_size=4), st.booleans()),
    st.builds(m.Control, text, text, ints, st.dictionaries(text, scalars, max_size=4)),
)


def same(a, b) -> bool:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_roundtrip_every_message_type(msg):
    back, frames = roundtrip(msg)
    assert type(back) is type(msg)
    assert same(msg, back)
    assert frames[0] == type(msg).KIND.encode()


def test_every_type_is_covered():
    assert {cls.KIND for cls in m.MESSAGE_TYPES} == set(m.BY_KIND)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=4))
def test_random_bytes_never_crash(frames):
    try:
        Codec().decode(frames)
    except DecodeError as exc:
        assert exc.reason


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(m.BY_KIND)), st.binary(max_size=300))
def test_random_header_for_a_real_kind(kind, header):
    with pytest.raises(DecodeError):
        Codec().decode([kind.encode(), header])


def good_frames():
    return [bytes(f) for f in encode(m.Frame(1, 2.0, "s", np.zeros((4, 4, 3), np.uint8)), seq=1)]


def header(doc):
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize("mutate, reason", [
    (lambda f: f[:1], "bad_frames"),
    (lambda f: f + [b"x"], "bad_frames"),
    (lambda f: [b"nope"] + f[1:], "unknown_kind"),
    (lambda f: [f[0], f[1][:-3], f[2]], "malformed"),
    (lambda f: [f[0], b"\xc1\xc1", f[2]], "malformed"),
    (lambda f: [f[0], f[1], f[2][:-1]], "bad_image"),
    (lambda f: [f[0], header({"v": 99, "s": 1, "f": {}, "img": None})], "wrong_version"),
    (lambda f: [f[0], header({"v": 1, "s": 1, "f": {"frame_id": 1, "t_capture": 1.0, "source": "s", "x": 1},
                              "img": None})], "unknown_field"),
    (lambda f: [f[0], header({"v": 1, "s": 1, "f": {"frame_id": 1, "source": "s"}, "img": None})], "missing_field"),
    (lambda f: [f[0], header({"v": 1, "s": 1, "f": {"frame_id": "1", "t_capture": 1.0, "source": "s"},
                              "img": None})], "bad_field"),
    (lambda f: [f[0], header({"v": 1, "s": 1, "f": {"frame_id": 1, "t_capture": 1.0, "source": "s"},
                              "img": {"shape": [4, 4, 3], "dtype": "object"}}), f[2]], "bad_image"),
    (lambda f: [f[0], header({"v": 1, "s": 1, "f": {"frame_id": 1, "t_capture": 1.0, "source": "s"},
                              "img": {"shape": [-4, 4, 3], "dtype": "uint8"}}), f[2]], "bad_image"),
    (lambda f: [b"metric", f[1], f[2]], "unknown_field"),
    (lambda f: [f[0], header([1, 2, 3]), f[2]], "malformed"),
    (lambda f: [f[0], header({"v": 1, "s": -1, "f": {}, "img": None})], "malformed"),
])
def test_malformed_messages_are_rejected(mutate, reason):
    with pytest.raises(DecodeError) as err:
        Codec().decode(mutate(good_frames()))
    assert err.value.reason == reason


def test_oversized_messages_are_rejected():
    frames = good_frames()
    with pytest.raises(DecodeError) as err:
        Codec(max_header=8).decode(frames)
    assert err.value.reason == "oversized"
    with pytest.raises(DecodeError) as err:
        Codec(max_image=10).decode(frames)
    assert err.value.reason == "oversized"
    # a header claiming a huge array is refused by msgpack's own limits, not allocated
    bomb = b"\xdd\xff\xff\xff\xff"
    with pytest.raises(DecodeError) as err:
        Codec().decode([b"frame", bomb])
    assert err.value.reason == "malformed"


def test_image_is_zero_copy_view():
    frames = encode(m.Frame(1, 1.0, "s", np.arange(48, dtype=np.uint8).reshape(4, 4, 3)))
    back = Codec().decode([bytes(frames[0]), bytes(frames[1]), zmq.Frame(bytes(frames[2]))])
    assert not back.image.flags.owndata  # a view on the received buffer, not a copy
    assert not back.image.flags.writeable  # which other subscribers may share
    assert back.image[3, 3, 2] == 47


def test_channel_counts_rejects_and_goes_on(bus):
    async def main():
        pull = bus.pull("inproc://codec-test", hwm=10, bind=True, name="pull")
        raw = bus.ctx.socket(zmq.PUSH)
        raw.linger = 0
        raw.connect("inproc://codec-test")
        try:
            await raw.send_multipart([b"frame", b"\x00garbage"])
            await raw.send_multipart([b"bogus"])
            await raw.send_multipart(encode(m.Control("eos", "t", 5)))
            got = await pull.recv()
            assert isinstance(got, m.Control) and got.last_frame_id == 5
            assert pull.rejected == {"malformed": 1, "bad_frames": 1}
        finally:
            raw.close()
            pull.close()
    run_async(main())


def test_lost_messages_are_counted_from_sequence_numbers(bus):
    async def main():
        pull = bus.pull("inproc://seq-test", hwm=10, bind=True, name="pull")
        raw = bus.ctx.socket(zmq.PUSH)
        raw.linger = 0
        raw.connect("inproc://seq-test")
        try:
            for seq in (1, 2, 5):
                await raw.send_multipart(encode(m.Detections(seq, 0.0, 0.0, 1, 1, [], 0), seq=seq))
            for _ in range(3):
                await pull.recv()
            assert pull.lost == {"detections": 2}
            assert pull.seen("detections") == 5
        finally:
            raw.close()
            pull.close()
    run_async(main())
