"""The wire format: every kind round-trips through the typed decoder; malformed, truncated, wrong-version,
oversized and hostile messages (NaN, negative ids, boxes outside their frame, ...) are rejected and counted."""
from __future__ import annotations

import msgspec
import numpy as np
import pytest
import zmq
from helpers import run_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepipe.bus import messages as m
from edgepipe.bus.codec import Codec, DecodeError, encode, roundtrip, topic

NAN, INF = float("nan"), float("inf")
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
times = st.floats(min_value=0.0, max_value=1e9)
frame_ids = st.integers(min_value=0, max_value=2 ** 62)
text = st.text(max_size=20)
prob = st.floats(min_value=0.0, max_value=1.0)
images = st.builds(lambda h, w, c, seed: np.random.RandomState(seed).randint(0, 255, (h, w, c)).astype(np.uint8),
                   st.integers(1, 16), st.integers(1, 16), st.sampled_from([1, 3]), st.integers(0, 1000))
labels = st.none() | st.lists(st.tuples(text, prob), max_size=3)


@st.composite
def coords(draw, w: int, h: int):
    """A box inside (or a little outside) a w x h frame, x1 <= x2 and y1 <= y2."""
    xs = sorted(draw(st.lists(st.floats(-0.5 * w, 1.5 * w), min_size=2, max_size=2)))
    ys = sorted(draw(st.lists(st.floats(-0.5 * h, 1.5 * h), min_size=2, max_size=2)))
    return [xs[0], ys[0], xs[1], ys[1]]


sizes = st.tuples(st.integers(1, 4096), st.integers(1, 4096))


@st.composite
def frames(draw):
    return m.Frame(draw(frame_ids), draw(times), draw(text), draw(images))


@st.composite
def encoded(draw):
    if draw(st.booleans()):
        img = draw(images)
        h, w = img.shape[:2]
        if draw(st.booleans()):  # with the detector's input, as the encoder prepares it
            fit = (draw(st.floats(1e-3, 10.0)), draw(st.floats(1e-3, 10.0)), draw(finite), draw(finite))
            return m.EncodedFrame(draw(frame_ids), draw(times), "raw", w, h, img, fit, draw(images))
        return m.EncodedFrame(draw(frame_ids), draw(times), "raw", w, h, img)
    w, h = draw(sizes)
    return m.EncodedFrame(draw(frame_ids), draw(times), "jpeg", w, h, draw(st.binary(max_size=64)))


@st.composite
def detections(draw):
    w, h = draw(sizes)
    boxes = [m.Box(*c, draw(finite)) for c in draw(st.lists(coords(w, h), max_size=4))]
    return m.Detections(draw(frame_ids), draw(times), draw(times), w, h, boxes, draw(st.integers(0, len(boxes))),
                        draw(labels))


crops = st.builds(lambda k, h, w, c, seed: np.random.RandomState(seed).randint(0, 255, (k, h, w, c)).astype(np.uint8),
                  st.integers(1, 4), st.integers(1, 16), st.integers(1, 16), st.sampled_from([1, 3]),
                  st.integers(0, 1000))


@st.composite
def facejobs(draw):
    n = draw(st.integers(1, 16))
    image = draw(st.none() | crops.filter(lambda a: a.shape[0] <= n))
    first = draw(st.integers(0, n - (image.shape[0] if image is not None else 1)))
    return m.FaceJob(draw(frame_ids), first, n, draw(times), image)


@st.composite
def expressions(draw):
    count = draw(st.integers(1, 6))
    error = draw(text)
    faces = [] if error else [m.FaceLabel(draw(text), draw(prob), draw(st.none() | st.lists(finite, max_size=7)))
                              for _ in range(count)]
    return m.Expression(draw(frame_ids), draw(st.integers(0, 100)), count, draw(text), draw(st.floats(0.0, 1e6)),
                        faces, error)


@st.composite
def results(draw):
    w, h = draw(sizes)
    faces = [m.FaceResult(m.Box(*c, draw(finite)), draw(st.none() | text), draw(st.none() | prob),
                          draw(st.integers(-1, 10 ** 6)), draw(st.none() | text))
             for c in draw(st.lists(coords(w, h), max_size=3))]
    return m.Result(draw(frame_ids), draw(times), draw(times), w, h, faces, draw(st.booleans()),
                    draw(st.booleans()), draw(labels))


STRATEGIES = {
    m.Frame: frames(),
    m.EncodedFrame: encoded(),
    m.Detections: detections(),
    m.FaceJob: facejobs(),
    m.Expression: expressions(),
    m.Result: results(),
    m.Done: st.builds(m.Done, st.integers(0, 2 ** 40)),
    m.Metric: st.builds(m.Metric, text, st.integers(0, 2 ** 31), times,
                        st.dictionaries(text, st.integers(-(2 ** 62), 2 ** 62), max_size=4),
                        st.dictionaries(text, finite, max_size=4), st.booleans()),
    m.Eos: st.builds(m.Eos, text, st.integers(-1, 2 ** 40), st.integers(0, 2 ** 40)),
    m.Ready: st.builds(m.Ready, text, st.integers(0, 2 ** 31), text, text, st.lists(text, max_size=4),
                       st.dictionaries(text, text, max_size=3)),
    m.Stopped: st.builds(m.Stopped, text, st.integers(-255, 255), st.lists(text, max_size=4)),
}


def same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    for name in a.__struct_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def test_every_kind_has_a_strategy():
    assert set(STRATEGIES) == set(m.MESSAGE_TYPES)
    assert set(m.BY_KIND) == {"frame", "encoded", "detections", "facejob", "expression", "result", "done",
                              "metric", "eos", "ready", "stopped"}


@pytest.mark.parametrize("cls", m.MESSAGE_TYPES, ids=lambda c: c.KIND)
def test_every_kind_roundtrips_through_the_typed_decoder(cls):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(STRATEGIES[cls])
    def check(msg):
        back, frames = roundtrip(msg)
        assert type(back) is cls
        assert same(msg, back)
        # the topic: the kind, and the camera of a kind that has one (test_wire_topics.py)
        assert frames[0] == (b"%s/%s/" % (cls.KIND.encode(), msg.camera.encode()) if hasattr(msg, "camera")
                             else cls.KIND.encode())
        assert len(frames) == 2 + (getattr(msg, "image", None) is not None) + (getattr(msg, "tensor", None) is not None)
    check()


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
        Codec().decode([topic(kind, "default").encode(), header])


# ---------------------------------------------------------------- hostile headers, built by hand

V = m.SCHEMA_VERSION


def pack(*doc) -> bytes:
    return msgspec.msgpack.encode(list(doc))


FRAME = {"kind": "frame", "frame_id": 1, "t_capture": 1.0, "source": "s"}
IMG = ["uint8", [4, 4, 3]]
PIXELS = bytes(48)


def det(**kw):
    doc = {"kind": "detections", "frame_id": 1, "t_capture": 1.0, "t_detect": 2.0, "width": 100, "height": 80,
           "faces": [face()], "expect_expressions": 1}
    doc.update(kw)
    return [b"detections/default/", pack(V, 1, None, doc)]


def face(**kw):
    """A box as it travels: [x1, y1, x2, y2, score]."""
    f = {"x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 60.0, "score": 0.9}
    f.update(kw)
    return [f["x1"], f["y1"], f["x2"], f["y2"], f["score"]]


def good_frames():
    return [bytes(f) for f in encode(m.Frame(1, 2.0, "s", np.zeros((4, 4, 3), np.uint8)), seq=1)]


@pytest.mark.parametrize("frames, reason", [
    (good_frames()[:1], "bad_frames"),
    (good_frames() + [b"x"], "bad_frames"),
    ([b"frame/default/", pack(V, 1, None, FRAME), PIXELS], "bad_frames"),  # an image frame nobody described
    ([b"eos/default/", pack(V, 1, IMG, {"kind": "eos", "sender": "x", "last_frame_id": 1, "sent": 1}), PIXELS],
     "bad_frames"),  # a kind without an image
    ([b"nope"] + good_frames()[1:], "unknown_kind"),
    ([b"control", pack(V, 1, None, {"kind": "control", "command": "eos"})], "unknown_kind"),  # the old kind
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, kind="nope"))], "unknown_kind"),
    ([b"frame/default/", pack(V, 1, None, {"kind": "eos", "sender": "x", "last_frame_id": 1, "sent": 1})], "wrong_kind"),
    ([b"frame/default/", good_frames()[1][:-3], PIXELS], "malformed"),  # truncated
    ([b"frame/default/", b"\xc1\xc1", PIXELS], "malformed"),
    ([b"frame/default/", msgspec.msgpack.encode({"v": 2, "s": 1}), PIXELS], "malformed"),
    ([b"frame/default/", pack(V, -1, None, FRAME)], "malformed"),
    ([b"frame/default/", pack(V, 1, None, FRAME, "extra")], "bad_image"),  # a 5th item describes a tensor frame
    ([b"frame/default/", pack(V, 1, None, FRAME, None, "extra")], "malformed"),
    ([b"frame/default/", pack(1, 1, None, FRAME)], "wrong_version"),
    ([b"frame/default/", pack(V + 1, 1, None, {"kind": "frame", "a": "new field"})], "wrong_version"),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, x=1))], "unknown_field"),
    ([b"frame/default/", pack(V, 1, None, {"kind": "frame", "frame_id": 1, "source": "s"})], "missing_field"),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, frame_id="1"))], "bad_field"),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, frame_id=True))], "bad_field"),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, image=[1, 2]))], "bad_field"),  # an image inside the header
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, frame_id=-1))], "bad_value"),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, t_capture=NAN))], "bad_value"),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, t_capture=INF))], "bad_value"),
    ([b"frame/default/", pack(V, 1, ["object", [4, 4, 3]], FRAME), PIXELS], "bad_image"),
    ([b"frame/default/", pack(V, 1, ["uint8", [-4, 4, 3]], FRAME), PIXELS], "bad_image"),
    ([b"frame/default/", pack(V, 1, ["uint8", [4, 4, 4]], FRAME), PIXELS], "bad_image"),
    ([b"frame/default/", pack(V, 1, ["uint8", "4x4"], FRAME), PIXELS], "bad_image"),
    ([b"frame/default/", pack(V, 1, IMG, FRAME), PIXELS[:-1]], "bad_image"),
    ([b"encoded/default/", pack(V, 1, ["bytes", [3]], {"kind": "encoded", "frame_id": 1, "t_capture": 1.0, "format": "jpeg",
                                               "width": 4, "height": 4}), b"ab"], "bad_image"),
    ([b"encoded/default/", pack(V, 1, IMG, {"kind": "encoded", "frame_id": 1, "t_capture": 1.0, "format": "raw",
                                   "width": 640, "height": 480}), PIXELS], "bad_value"),  # shape is not 640x480
    ([b"encoded/default/", pack(V, 1, None, {"kind": "encoded", "frame_id": 1, "t_capture": 1.0, "format": "png",
                                    "width": 4, "height": 4})], "bad_field"),
    (det(), None),
    (det(t_detect=NAN), "bad_value"),
    (det(width=0), "bad_value"),
    (det(faces=[face(x1=NAN)]), "bad_value"),
    (det(faces=[face(y2=-INF)]), "bad_value"),
    (det(faces=[face(x1=60.0, x2=50.0)]), "bad_value"),  # x2 < x1
    (det(faces=[face(y1=70.0, y2=60.0)]), "bad_value"),
    (det(faces=[face(x2=1000.0)]), "bad_value"),  # far outside the 100x80 frame
    (det(faces=[face(y1=-500.0)]), "bad_value"),
    (det(faces=[face(x2=110.0)]), None),  # a little outside: allowed
    (det(faces=[face(score=NAN)]), "bad_value"),
    (det(faces=[face() + [[[1.0, 2.0]] * 5]]), "unknown_field"),  # landmarks stay in the detector
    (det(faces=[face(score="high")]), "bad_field"),
    (det(faces=[{"x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 60.0, "score": 0.9}]), "bad_field"),  # a map, no box
    (det(faces=[[1.0]]), "missing_field"),
    (det(faces=[face()[:4]]), "missing_field"),  # no score
    (det(expect_expressions=2), "bad_value"),  # more expressions expected than faces
    (det(truth=[{"box": [1.0, 2.0, 3.0, 4.0], "expression": "happy"}]), "unknown_field"),  # truth stays home
    (det(labels=[["cat", NAN]]), "bad_value"),
    (det(labels=[["cat"]]), "bad_value"),
    (det(labels=[[1, 0.5]]), "bad_field"),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, source=b"\x80".decode("latin-1")))], None),
    ([b"frame/default/", pack(V, 1, None, dict(FRAME, source="\x01")).replace(b"\xa1\x01", b"\xa1\x80")],
     "malformed"),  # a string that is not UTF-8
    ([b"facejob/default/", pack(V, 1, None, {"kind": "facejob", "frame_id": 1, "face_index": 3, "n_faces": 3,
                                    "t_capture": 1.0})], "bad_value"),
    ([b"expression/default/", pack(V, 1, None, {"kind": "expression", "frame_id": 1, "face_index": 0, "count": 1,
                                       "worker": "w", "busy_ms": 1.0, "faces": [["happy", NAN]]})], "bad_value"),
    ([b"expression/default/", pack(V, 1, None, {"kind": "expression", "frame_id": 1, "face_index": 0, "count": 1,
                                       "worker": "w", "busy_ms": 1.0, "faces": [["happy", 1.5]]})], "bad_value"),
    ([b"expression/default/", pack(V, 1, None, {"kind": "expression", "frame_id": 1, "face_index": 0, "count": 2,
                                       "worker": "w", "busy_ms": 1.0, "faces": [["happy", 0.5]]})],
     "bad_value"),  # fewer labels than faces
    ([b"expression/default/", pack(V, 1, None, {"kind": "expression", "frame_id": 1, "face_index": 0, "count": 1,
                                       "worker": "w", "busy_ms": 1.0, "faces": [["happy", 0.5]],
                                       "error": "x"})], "bad_value"),  # an error and labels
    ([b"result/default/", pack(V, 1, None, {"kind": "result", "frame_id": 1, "t_capture": 1.0, "t_result": 2.0,
                                   "width": 100, "height": 80, "faces": [{"box": [50.0, 0.0, 10.0, 10.0, 1.0]}],
                                   "partial": False, "in_order": True})], "bad_value"),
    ([b"result/default/", pack(V, 1, None, {"kind": "result", "frame_id": 1, "t_capture": 1.0, "t_result": 2.0,
                                   "width": 100, "height": 80, "faces": [{"box": [1.0, 1.0, 9.0, 9.0, NAN]}],
                                   "partial": False, "in_order": True})], "bad_value"),
    ([b"result/default/", pack(V, 1, None, {"kind": "result", "frame_id": 1, "t_capture": 1.0, "t_result": 2.0,
                                   "width": 100, "height": 80, "faces": [{"box": [1.0, 1.0, 9.0, 9.0], "score": 1.0}],
                                   "partial": False, "in_order": True})], "missing_field"),  # schema 2's face
    ([b"eos/default/", pack(V, 1, None, {"kind": "eos", "sender": "x", "last_frame_id": -2, "sent": 0})], "bad_value"),
    ([b"metric", pack(V, 1, None, {"kind": "metric", "actor": "a", "pid": 1, "t": NAN})], "bad_value"),
    ([b"metric", pack(V, 1, None, {"kind": "metric", "actor": "a", "pid": 1, "t": 1.0,
                                   "counters": {"in": 1.5}})], "bad_field"),
    ([b"ready", pack(V, 1, None, {"kind": "ready", "group": "g", "pid": 1, "python": "p", "version": "3.9",
                                  "info": {}})], "unknown_field"),
])
def test_hostile_headers_are_rejected_with_a_reason(frames, reason):
    if reason is None:  # the control case: the same shape, valid
        assert Codec().decode(frames).KIND == frames[0].decode().split("/")[0]
        return
    with pytest.raises(DecodeError) as err:
        Codec().decode(frames)
    assert err.value.reason == reason, err.value


def test_oversized_messages_are_rejected():
    frames = good_frames()
    with pytest.raises(DecodeError) as err:
        Codec(max_header=8).decode(frames)
    assert err.value.reason == "oversized"
    with pytest.raises(DecodeError) as err:
        Codec(max_image=10).decode(frames)
    assert err.value.reason == "oversized"
    # a header claiming a huge array is refused without allocating it
    bomb = b"\xdd\xff\xff\xff\xff"
    with pytest.raises(DecodeError) as err:
        Codec().decode([b"frame/default/", bomb])
    assert err.value.reason == "malformed"
    with pytest.raises(DecodeError) as err:
        Codec().decode([b"frame/default/", b"\x94\x02\x01\xc0\xdf\xff\xff\xff\xff"])  # a message map of 4G entries
    assert err.value.reason in ("malformed", "bad_field")


@pytest.mark.parametrize("where, reason", [("header", "malformed"), ("message", "malformed"),
                                           ("image field", "malformed")])
def test_deep_nesting_is_rejected_not_raised(where, reason):
    """Nesting deeper than Python's recursion limit is a DecodeError, never a RecursionError in the actor."""
    deep = b"\x91" * 200000 + b"\xc0"  # 200 000 nested one-element arrays: 200 kB, under the size limit
    message = pack(V, 1, None, dict(FRAME, image=None))[4:-1]  # the message map, its last value (nil) cut off
    header = {"header": deep, "message": b"\x94\x02\x01\xc0" + deep,
              "image field": b"\x94\x02\x01\xc0" + message + deep}[where]
    with pytest.raises(DecodeError) as err:
        Codec().decode([b"frame/default/", header])
    assert err.value.reason == reason


def test_image_is_zero_copy_view():
    frames = encode(m.Frame(1, 1.0, "s", np.arange(48, dtype=np.uint8).reshape(4, 4, 3)))
    back = Codec().decode([bytes(frames[0]), bytes(frames[1]), zmq.Frame(bytes(frames[2]))])
    assert not back.image.flags.owndata  # a view on the received buffer, not a copy
    assert not back.image.flags.writeable  # which other subscribers may share
    assert back.image[3, 3, 2] == 47


def test_numpy_scalars_are_sent_as_numbers():
    msg = m.Detections(1, 1.0, 2.0, 100, 80, [m.Box(np.float32(1), np.float32(2), np.float32(3), np.float32(4),
                                                     np.float32(0.5))], np.int64(1))
    back, _ = roundtrip(msg)
    assert back.faces[0].as_list() == [1.0, 2.0, 3.0, 4.0] and back.expect_expressions == 1


def test_channel_counts_rejects_and_goes_on(bus):
    hostile = [
        [b"frame/default/", b"\x00garbage"],
        [b"bogus"],
        [b"nope", pack(V, 1, None, FRAME)],
        det(faces=[face(x1=NAN)]),
        det(faces=[face(x1=60.0, x2=50.0)]),
        det(faces=[face(x2=1e6)]),
        det(frame_id="7"),
        det(t_capture=INF),
    ]

    async def main():
        pull = bus.pull("inproc://codec-test", hwm=100, bind=True, name="pull")
        raw = bus.ctx.socket(zmq.PUSH)
        raw.linger = 0
        raw.connect("inproc://codec-test")
        try:
            for frames in hostile:
                await raw.send_multipart(frames)
            await raw.send_multipart(encode(m.Eos("t", 5, 0)))
            got = await pull.recv()
            assert isinstance(got, m.Eos) and got.last_frame_id == 5
            assert pull.rejected == {"malformed": 1, "bad_frames": 1, "unknown_kind": 1, "bad_value": 4,
                                     "bad_field": 1}
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


def test_sub_topics_are_the_kinds(bus):
    """An actor subscribes to kinds by topic: only those arrive, and an unknown topic is refused."""
    async def main():
        pub = bus.pub("inproc://topics", hwm=100, name="pub")
        sub = bus.sub("inproc://topics", hwm=100, name="sub", topics=("encoded", "eos"))
        try:
            await pub.wait_subscribers(1)
            await pub.send(m.Frame(0, 1.0, "s", np.zeros((2, 2, 3), np.uint8)))
            await pub.send(m.Metric("a", 1, 1.0))
            await pub.send(m.EncodedFrame(0, 1.0, "jpeg", 2, 2, b"jpeg"))
            await pub.send(m.Eos("pub", 0, 1))
            assert isinstance(await sub.recv(), m.EncodedFrame)
            assert isinstance(await sub.recv(), m.Eos)
            assert sub.recv_nowait() is None
        finally:
            pub.close()
            sub.close()
    run_async(main())
    from edgepipe.bus.sockets import BusError
    with pytest.raises(BusError):
        bus.sub("inproc://topics", hwm=1, name="bad", topics=("control",))


def test_a_non_finite_number_is_named_so_in_the_log():
    with pytest.raises(DecodeError) as err:
        Codec().decode(det(faces=[face(x1=NAN)]))
    assert err.value.reason == "bad_value"
    assert "finite" in err.value.detail and "faces[0].x1" in err.value.detail
