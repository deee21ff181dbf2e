"""Reject reasons come from our own look at a refused header (``bus.diagnose``), never from the text of
msgspec's exception: for every message kind and each of its fields, a missing, unknown, wrongly typed or
out-of-range value gets its reason even when the decoder's exceptions say nothing; and the diagnosis
agrees with msgspec's typed decoder on what is refused."""
from __future__ import annotations

import math

import msgspec
import pytest
from msgspec import inspect

from edgepipe.bus import diagnose
from edgepipe.bus import messages as m
from edgepipe.bus.box import Box
from edgepipe.bus.codec import TOPIC_CAMERA, Codec, DecodeError, Envelope, topic

V = m.SCHEMA_VERSION

# one valid message of each kind, with every optional field set where it may be (image and tensor travel
# in their own frames, and a fit needs a tensor: those stay at their default)
SAMPLES = [
    m.Frame(1, 1.0, "cam"),
    m.EncodedFrame(1, 1.0, "jpeg", 4, 4),
    m.Detections(1, 1.0, 2.0, 100, 80, [Box(1.0, 1.0, 9.0, 9.0, 0.5)], 1, [("cat", 0.5)]),
    m.FaceJob(1, 0, 2, 1.0),
    m.Expression(1, 0, 1, "fer-0", 1.0, [m.FaceLabel("happy", 0.5, [0.5])]),
    m.Result(1, 1.0, 2.0, 100, 80, [m.FaceResult(Box(1.0, 1.0, 9.0, 9.0, 0.5), "happy", 0.5, 3, "happy")],
             False, True, [("cat", 0.5)]),
    m.Done(1),
    m.Metric("aggregator", 1, 1.0, {"in": 1}, {"fps": 1.0}, True),
    m.Eos("capture", 1, 2),
    m.Ready("main", 1, "3.9.2", "1.0", ["capture"], {"fer": "fer64"}, {"fer": "cpu"}),
    m.Stopped("main", 0, ["capture"]),
]


class Reworded:
    """The codec's own typed decoder, its exceptions reworded (as a msgspec release may): the same exception
    types, a message that says nothing. A reason read from msgspec's text would come out wrong here."""

    def __init__(self, decoder: msgspec.msgpack.Decoder) -> None:
        self.decoder = decoder

    def decode(self, buf):
        try:
            return self.decoder.decode(buf)
        except msgspec.ValidationError:
            raise msgspec.ValidationError("reworded") from None
        except msgspec.DecodeError:
            raise msgspec.DecodeError("reworded") from None


def reworded_codec() -> Codec:
    codec = Codec()
    codec._decoder = Reworded(codec._decoder)
    return codec


def doc_of(msg) -> dict:
    return msgspec.to_builtins(msg)


def frames_of(kind: str, doc) -> list:
    """A message's frames, its topic naming the doc's camera (``default`` where it has none or a bad one, which
    the header's decoding refuses)."""
    camera = doc.get("camera") if isinstance(doc, dict) else None
    ok = isinstance(camera, str) and TOPIC_CAMERA.fullmatch(camera)
    return [topic(kind, camera if ok else "default").encode(), msgspec.msgpack.encode([V, 1, None, doc])]


def plain(t):
    """An inspect type without its Metadata and Optional wrappers."""
    while True:
        if isinstance(t, inspect.Metadata):
            t = t.type
        elif isinstance(t, inspect.UnionType) and len(t.types) == 2 and inspect.NoneType() in t.types:
            t = next(x for x in t.types if not isinstance(x, inspect.NoneType))
        else:
            return t


def out_of_range(t):
    """A value of the right type that breaks the field's constraints, or None if it has none."""
    t = plain(t)
    if isinstance(t, inspect.IntType):
        if t.ge is not None:
            return t.ge - 1
        if t.le is not None:
            return t.le + 1
    if isinstance(t, inspect.FloatType) and (t.ge, t.gt, t.le, t.lt) != (None,) * 4:
        return math.nan
    if isinstance(t, inspect.StrType) and t.max_length is not None:
        return "x" * (t.max_length + 1)
    return None


def cases():
    """(kind, doc, expected reason) for each field of each kind: missing, wrongly typed, out of range; and
    per kind an unknown field and an unknown kind."""
    for msg in SAMPLES:
        cls, kind = type(msg), msg.KIND
        base = doc_of(msg)
        info = inspect.type_info(cls)
        yield kind, dict(base, extra_field=1), "unknown_field", "%s-unknown" % kind
        yield kind, dict(base, kind="no-such-kind"), "unknown_kind", "%s-kind" % kind
        for field in info.fields:
            if isinstance(plain(field.type), inspect.AnyType):  # image, tensor: checked apart (own frames)
                continue
            name = field.encode_name
            if field.required:
                yield kind, {k: v for k, v in base.items() if k != name}, "missing_field", "%s-%s-missing" % (kind, name)
            yield kind, dict(base, **{name: b"\x00"}), "bad_field", "%s-%s-type" % (kind, name)
            bad = out_of_range(field.type)
            if bad is not None:
                yield kind, dict(base, **{name: bad}), "bad_value", "%s-%s-range" % (kind, name)


CASES = list(cases())


def test_samples_cover_every_kind_and_decode():
    assert {type(s) for s in SAMPLES} == set(m.MESSAGE_TYPES)
    for msg in SAMPLES:
        assert Codec().decode(frames_of(msg.KIND, doc_of(msg))) == msg
    kinds_with_range = {c[0] for c in CASES if c[2] == "bad_value"}
    assert kinds_with_range == {s.KIND for s in SAMPLES}  # every kind has a constrained field tested


@pytest.mark.parametrize("kind, doc, reason", [c[:3] for c in CASES], ids=[c[3] for c in CASES])
def test_the_reason_for_each_bad_field_of_each_kind(kind, doc, reason):
    frames = frames_of(kind, doc)
    for codec in (Codec(), reworded_codec()):
        with pytest.raises(DecodeError) as err:
            codec.decode(frames)
        assert err.value.reason == reason, err.value
        assert "reworded" not in err.value.detail


@pytest.mark.parametrize("frames, reason", [
    ([b"frame/default/", msgspec.msgpack.encode([V + 1, 1, None, {"kind": "frame"}])], "wrong_version"),
    ([b"frame/default/", msgspec.msgpack.encode({"v": V})], "malformed"),
    ([b"frame/default/", msgspec.msgpack.encode([V, "1", None, doc_of(SAMPLES[0])])], "malformed"),
    ([b"frame/default/", msgspec.msgpack.encode([V, 1, ["uint8", "4x4"], doc_of(SAMPLES[0])]), bytes(48)], "bad_image"),
    ([b"encoded/default/", msgspec.msgpack.encode([V, 1, ["uint8", [4, 4, 3]], doc_of(SAMPLES[1]), 5]), bytes(48)],
     "bad_image"),
    ([b"detections/default/", msgspec.msgpack.encode([V, 1, None, dict(doc_of(SAMPLES[2]), faces=[[1.0, 1.0, 9.0]])])],
     "missing_field"),
    ([b"detections/default/", msgspec.msgpack.encode([V, 1, None, dict(doc_of(SAMPLES[2]), faces=[[1.0] * 6])])],
     "unknown_field"),
    ([b"result/default/", msgspec.msgpack.encode([V, 1, None, dict(doc_of(SAMPLES[5]), faces=[{"box": [1, 1, 9, 9, 1],
                                                                                      "track": -2}])])],
     "bad_value"),
])
def test_the_envelope_and_nested_fields_get_their_reason_without_the_text(frames, reason):
    with pytest.raises(DecodeError) as err:
        reworded_codec().decode(frames)
    assert err.value.reason == reason, err.value


POOL = [None, True, -1, 0, 1, 2 ** 40, 1.5, math.nan, math.inf, "", "s", "x" * 300, b"b", [], [1], [1.0] * 5,
        ["a", 0.5], [["a", 0.5]], {}, {"a": 1}, {"a": "b"}]


def test_the_diagnosis_agrees_with_the_typed_decoder():
    """Every field of every kind set to each value of a pool, or left out: the diagnosis finds a problem
    exactly when msgspec's typed decoder refuses the header."""
    decoder = msgspec.msgpack.Decoder(Envelope)
    checked = 0
    for msg in SAMPLES:
        base = doc_of(msg)
        docs = [dict(base, **{name: value}) for name in msg.__struct_fields__ for value in POOL]
        docs += [{k: v for k, v in base.items() if k != name} for name in base]
        for doc in docs:
            header = msgspec.msgpack.encode([V, 1, None, doc])
            try:
                decoder.decode(header)
                refused = False
            except msgspec.ValidationError:
                refused = True
            problem = diagnose.first_problem(msgspec.msgpack.decode(header), Envelope)
            assert (problem is not None) == refused, (msg.KIND, doc, problem)
            checked += 1
    assert checked > 500
