"""Encode and decode messages as ZeroMQ multipart frames.

Wire format (every message; ``docs/wire.md`` for a client)::

    frame 0: the topic, ASCII (also the PUB/SUB topic): "KIND/CAMERA/" for a kind that carries a camera
             ("frame", "encoded", "detections", "facejob", "expression", "result", "done", "eos"; CAMERA is
             the message's ``camera``, letters, digits and _, at most 32; "" for the aggregator's end of
             stream of every camera: "eos//"), the kind alone for the others ("metric", "ready", "stopped")
             (``topic``). A subscriber to "result" gets every camera's results, to "result/a/" camera a's
             only: the "/" that ends the camera keeps "result/a/" from matching camera "ab"'s
    frame 1: the header, a msgpack array of 4 or 5: [version, seq, image, message] or
             [version, seq, image, message, tensor]
             version  SCHEMA_VERSION (5); any other is refused
             seq      the sender's per-topic sequence number on its socket (1, 2, ...; 0 from code that does
                      not number), from which a receiver counts the messages a PUB socket dropped
                      (see ``Channel``); a negative one is refused
             image    nil, or [dtype, shape] describing frame 2: dtype "uint8", "int8" or "float32"
                      with the array's shape (C order, 1 to 4 dimensions of 1..65536 each), or
                      "bytes" with shape [length] (a JPEG)
             message  a msgpack map of the message's fields, tagged: {"kind": KIND, field: value, ...};
                      fields at their default value are left out; see ``bus/messages.py`` for each kind
             tensor   present only when frame 3 is sent, which only an "encoded" message with an image
                      does: [dtype, shape] describing frame 3, the detector's input the encoder made
                      from the image (H x W x C uint8; the message's ``fit`` maps it to the frame)
    frame 2: the image buffer, only when ``image`` is set (zero-copy on both ends)
    frame 3: the tensor buffer, only when ``tensor`` is present (zero-copy on both ends)

Decoding goes through one typed msgspec decoder (created once per ``Codec``)
and rejects whatever a hostile or broken peer could get wrong: the number of
frames, sizes, the schema version, an unknown kind or one that does not match
frame 0, a camera unlike frame 0's, wrong types, unknown and missing fields,
values outside their constraints (NaN or infinite times and coordinates, negative frame ids, boxes
with x2 < x1 or far outside their frame: ``messages.CHECKS``) and an image
buffer that does not match its description. Any problem raises
``DecodeError`` with a short ``reason`` that the receiving channel counts; it
never crashes the actor. The reason comes from the kind of msgspec's exception
and, for a header the typed decoder refused, from ``bus.diagnose``, which walks
an untyped decode of the header against ``Envelope``'s types: the message text
of msgspec's exception is never read. A valid message takes only the typed
decode. A received array is a read-only view on the received buffer (other
subscribers of the same inproc message may share it).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import msgspec
import numpy as np

from edgepipe.bus import diagnose
from edgepipe.bus.messages import BY_KIND, CHECKS, SCHEMA_VERSION, WITH_IMAGE, WITH_TENSOR, AnyMessage

DEFAULT_MAX_HEADER = 1 << 20  # 1 MiB of msgpack per message
DEFAULT_MAX_IMAGE = 64 << 20  # 64 MiB per image
IMAGE_DTYPES = ("uint8", "int8", "float32")
_ITEMSIZE = {d: np.dtype(d).itemsize for d in IMAGE_DTYPES}
_DTYPES = {d: np.dtype(d) for d in IMAGE_DTYPES}
_DTYPE_NAMES = {np.dtype(d): d for d in IMAGE_DTYPES}  # numpy's dtype.name is a slow Python property
MAX_DIM = 1 << 16


class DecodeError(ValueError):
    """A message that cannot be accepted; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


class ImageRef(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    dtype: str
    shape: List[int]


class Envelope(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    v: int
    s: int
    img: Optional[ImageRef]
    msg: AnyMessage
    tensor: Optional[ImageRef] = None  # a 5th item: a second side frame (an encoded frame's detector input)


class RelayEnvelope(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A header whose message stays undecoded (``msgspec.Raw``): what a relay checks before forwarding."""

    v: int
    s: int
    img: None
    msg: msgspec.Raw


_KIND_BYTES = {cls: cls.KIND.encode("ascii") for cls in BY_KIND.values()}
_BY_KIND_BYTES = {k.encode("ascii"): cls for k, cls in BY_KIND.items()}
WITH_CAMERA = frozenset(cls for cls in BY_KIND.values() if "camera" in cls.__struct_fields__)
CAMERA_KINDS = tuple(sorted(cls.KIND for cls in WITH_CAMERA))
"""The kinds whose topic names their camera (``KIND/CAMERA/``)."""
TOPIC_CAMERA = re.compile(r"[A-Za-z0-9_]{0,32}")  # a camera in a topic (the config's names, or "")
_TOPIC_CACHE = 1024  # topics remembered on each side (a peer's made-up ones beyond that are parsed each time)
_TOPICS: Dict[type, Dict[str, bytes]] = {cls: {} for cls in WITH_CAMERA}  # class -> camera -> topic, for encoding
# topic -> (class, camera or None), for decoding: the kinds without a camera, and each camera topic once seen
_BY_TOPIC: Dict[bytes, Tuple[type, Optional[str]]] = {
    _KIND_BYTES[cls]: (cls, None) for cls in BY_KIND.values() if cls not in WITH_CAMERA}


def topic(kind: str, camera: Optional[str] = None) -> str:
    """The topic of ``kind``'s messages from ``camera`` (``KIND/CAMERA/``), or of the kind alone (no camera,
    or a kind without one): what a subscriber passes to take one camera's messages of a kind."""
    if camera is None or BY_KIND[kind] not in WITH_CAMERA:
        return kind
    if not TOPIC_CAMERA.fullmatch(camera):
        raise ValueError("camera %r: a camera's name in a topic is at most 32 letters, digits or _" % camera)
    return "%s/%s/" % (kind, camera)


def _topic_of(cls: type, camera: str) -> bytes:
    """The topic of a message of a kind with a camera (``_TOPICS`` remembers it)."""
    t = topic(cls.KIND, camera).encode("ascii")
    known = _TOPICS[cls]
    if len(known) < _TOPIC_CACHE:
        known[camera] = t
    return t


def _parse_topic(t: bytes) -> Tuple[type, Optional[str]]:
    """Frame 0 -> (class, camera); DecodeError for an unknown kind or a topic that does not name a camera
    as its kind's must (``_BY_TOPIC`` remembers it)."""
    kind_b, sep, rest = t.partition(b"/")
    cls = _BY_KIND_BYTES.get(kind_b)
    if cls is None:
        raise DecodeError("unknown_kind", "unknown message kind %r" % t[:32])
    if cls not in WITH_CAMERA:
        raise DecodeError("wrong_camera", "frame 0 %r: a %s message names no camera" % (t[:48], cls.KIND))
    camera = rest[:-1].decode("ascii", "replace")
    if not sep or rest[-1:] != b"/" or not TOPIC_CAMERA.fullmatch(camera):
        raise DecodeError("wrong_camera", "frame 0 %r is not %s/CAMERA/ (a camera: at most 32 letters, digits "
                          "or _)" % (t[:48], cls.KIND))
    if len(_BY_TOPIC) < _TOPIC_CACHE:
        _BY_TOPIC[t] = (cls, camera)
    return cls, camera


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.generic):  # a numpy scalar that slipped into a field
        return obj.item()
    raise TypeError("cannot encode %s" % type(obj).__name__)


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
# a problem the diagnosis finds inside the message -> the reason a channel counts
_FIELD_REASONS = {diagnose.MISSING: "missing_field", diagnose.UNKNOWN: "unknown_field", diagnose.TYPE: "bad_field",
                  diagnose.RANGE: "bad_value", diagnose.CHOICE: "bad_field", diagnose.TAG: "unknown_kind"}


# ---------------------------------------------------------------- encoding

def _side_frame(kind: str, what: str, image: Any) -> Tuple[Tuple[str, List[int]], Any]:
    """An image's [dtype, shape] description and its buffer (not copied)."""
    if isinstance(image, np.ndarray):
        arr = np.ascontiguousarray(image)
        return ((_DTYPE_NAMES.get(arr.dtype) or arr.dtype.name, list(arr.shape)),
                (arr.data if arr.ndim else arr.tobytes()))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return ("bytes", [memoryview(image).nbytes]), image
    raise TypeError("%s.%s must be a numpy array or bytes, not %s" % (kind, what, type(image).__name__))


def encode(msg: Any, seq: int = 0) -> List[Any]:
    """Message -> list of frames for ``send_multipart``. Images are not copied.

    ``seq`` is the sender's per-topic sequence number on its socket, so that a
    receiver can count messages a PUB socket dropped for it (see ``Channel``).
    """
    cls = type(msg)
    if cls in WITH_CAMERA:
        kind = _TOPICS[cls].get(msg.camera) or _topic_of(cls, msg.camera)
    else:
        kind = _KIND_BYTES[cls]
    image = msg.image if cls in WITH_IMAGE else None
    if image is None:
        return [kind, _ENCODER.encode((SCHEMA_VERSION, seq, None, msg))]
    ref, buf = _side_frame(cls.KIND, "image", image)
    tensor = msg.tensor if cls in WITH_TENSOR else None
    if tensor is None:
        header = _ENCODER.encode((SCHEMA_VERSION, seq, ref, msgspec.structs.replace(msg, image=None)))
        return [kind, header, buf]
    tref, tbuf = _side_frame(cls.KIND, "tensor", tensor)
    header = _ENCODER.encode((SCHEMA_VERSION, seq, ref, msgspec.structs.replace(msg, image=None, tensor=None), tref))
    return [kind, header, buf, tbuf]


def encode_relayed(kind: bytes, body: Any, seq: int) -> List[Any]:
    """Frames for a message relayed undecoded (``Codec.relay``): its topic, body, and this sender's ``seq``."""
    return [kind, _ENCODER.encode((SCHEMA_VERSION, seq, None, body))]


# ---------------------------------------------------------------- decoding

def _small(frame: Any) -> Any:
    """A small frame's bytes: a zmq.Frame's (copied once, cheaper than a view), or the bytes themselves."""
    try:  # not hasattr, which would make them twice
        return frame.bytes
    except AttributeError:
        return frame


def _buffer(frame: Any) -> memoryview:
    """A large frame's buffer, not copied: a zmq.Frame's, or a view of the bytes."""
    try:
        return frame.buffer
    except AttributeError:
        return memoryview(frame)


def _check_envelope(kind: str, version: int, seq: int) -> None:
    if version != SCHEMA_VERSION:
        raise DecodeError("wrong_version", "%s has schema version %r, this build speaks %d"
                          % (kind, version, SCHEMA_VERSION))
    if seq < 0:
        raise DecodeError("malformed", "%s sequence number %r is negative" % (kind, seq))


def _invalid(kind: str, header: Any, exc: msgspec.ValidationError) -> DecodeError:
    """A DecodeError for a header the typed decoder refused, its reason from our own look at the header."""
    try:
        doc = msgspec.msgpack.decode(header)
    except RecursionError:  # the typed decoder stopped before the depth the untyped one cannot read
        return DecodeError("malformed", "%s header nests deeper than the decoder reads" % kind)
    except ValueError as err:  # msgspec.DecodeError, a string that is not UTF-8, past the point the typed one stopped
        return DecodeError("malformed", "%s header is not valid msgpack (%s)" % (kind, err))
    if isinstance(doc, list) and doc and type(doc[0]) is int and doc[0] != SCHEMA_VERSION:
        # another schema version explains any difference: say so
        return DecodeError("wrong_version", "%s has schema version %r, this build speaks %d"
                           % (kind, doc[0], SCHEMA_VERSION))
    problem = diagnose.first_problem(doc, Envelope)
    if problem is None:  # the diagnosis and msgspec disagree (a rule diagnose.py lacks): still refused
        return DecodeError("bad_field", "%s: refused by the typed decoder (%s)" % (kind, exc))
    path = problem.path
    if path[:1] == ("msg",) and (len(path) > 1 or problem.kind != diagnose.MISSING):
        return DecodeError(_FIELD_REASONS[problem.kind],
                           "%s: %s: %s" % (kind, diagnose.format_path(path[1:]) or "the message", problem.text))
    if path[:1] in (("img",), ("tensor",)):
        return DecodeError("bad_image", "%s %s description: %s: %s"
                           % (kind, "image" if path[0] == "img" else "tensor", diagnose.format_path(path),
                              problem.text))
    return DecodeError("malformed", "%s header is not a [version, seq, image, message(, tensor)] array: %s: %s"
                       % (kind, diagnose.format_path(path) or "the header", problem.text))


class Codec:
    """Decodes multipart messages with size limits and one typed decoder; one per channel."""

    def __init__(self, max_header: int = DEFAULT_MAX_HEADER, max_image: int = DEFAULT_MAX_IMAGE) -> None:
        self.max_header = max_header
        self.max_image = max_image
        self._decoder = msgspec.msgpack.Decoder(Envelope)
        self._relay_decoder = msgspec.msgpack.Decoder(RelayEnvelope)

    def decode(self, frames: Sequence[Any]) -> Any:
        """Frames (bytes or zmq.Frame) -> message. Raises DecodeError."""
        return self.decode_seq(frames)[0]

    def decode_seq(self, frames: Sequence[Any]) -> Tuple[Any, int]:
        """Frames -> (message, sender's sequence number). Raises DecodeError."""
        n = len(frames)
        if n not in (2, 3, 4):
            raise DecodeError("bad_frames", "expected 2 to 4 frames, got %d" % n)
        cls, camera, _, header = self._kind_and_header(frames)
        try:
            env = self._decoder.decode(header)
        except msgspec.ValidationError as exc:  # the slow path: find what and where, for the reason
            raise _invalid(cls.KIND, header, exc) from None
        except (ValueError, RecursionError) as exc:  # msgspec.DecodeError, a string that is not UTF-8, nesting
            raise DecodeError("malformed", "%s header is not valid msgpack (%s)" % (cls.KIND, exc)) from None
        _check_envelope(cls.KIND, env.v, env.s)
        msg = env.msg
        if type(msg) is not cls:
            raise DecodeError("wrong_kind", "frame 0 says %s, the header holds %s" % (cls.KIND, type(msg).KIND))
        if camera is not None and msg.camera != camera:
            raise DecodeError("wrong_camera", "frame 0 says camera %r, the %s holds %r"
                              % (camera, cls.KIND, msg.camera[:64]))
        if cls in WITH_IMAGE and msg.image is not None:
            raise DecodeError("bad_field", "%s.image must travel in its own frame" % cls.KIND)
        if cls in WITH_TENSOR and msg.tensor is not None:
            raise DecodeError("bad_field", "%s.tensor must travel in its own frame" % cls.KIND)
        if env.img is None:
            if n != 2 or env.tensor is not None:
                raise DecodeError("bad_frames", "%s has an extra frame but no image description" % cls.KIND)
        elif cls not in WITH_IMAGE or n != 3 + (env.tensor is not None):
            raise DecodeError("bad_frames", "%s: image description without a matching image frame" % cls.KIND)
        elif env.tensor is not None and cls not in WITH_TENSOR:
            raise DecodeError("bad_frames", "%s carries no tensor" % cls.KIND)
        else:
            msg.image = self._image(cls.KIND, env.img, frames[2])
            if env.tensor is not None:
                msg.tensor = self._image(cls.KIND, env.tensor, frames[3])
        check = CHECKS.get(cls)
        if check is not None:
            problem = check(msg)
            if problem:
                raise DecodeError("bad_value", "%s: %s" % (cls.KIND, problem))
        return msg, env.s

    def relay(self, frames: Sequence[Any]) -> Tuple[bytes, Any]:
        """Frames -> (topic, the message's msgpack body as ``msgspec.Raw``), for a relay that forwards without
        decoding (the metrics hub). Checked here: the frames, the topic, the header's size and
        ``[version, seq, nil, message]`` shape, the version; the message itself is the consumers' to check
        with the typed decoder (``decode``), which refuses and counts a bad one. Raises DecodeError."""
        if len(frames) != 2:
            raise DecodeError("bad_frames", "a relayed message has 2 frames, not %d" % len(frames))
        cls, _, kind_b, header = self._kind_and_header(frames)
        try:
            env = self._relay_decoder.decode(header)
        except msgspec.ValidationError as exc:
            raise DecodeError("malformed", "%s header is not a [version, seq, nil, message] array: %s"
                              % (cls.KIND, exc)) from None
        except (ValueError, RecursionError) as exc:  # msgspec.DecodeError, nesting
            raise DecodeError("malformed", "%s header is not valid msgpack (%s)" % (cls.KIND, exc)) from None
        _check_envelope(cls.KIND, env.v, env.s)
        return kind_b, env.msg

    def _kind_and_header(self, frames: Sequence[Any]) -> Tuple[Any, Optional[str], bytes, Any]:
        """(message class, camera of frame 0 or None, frame 0, header) of a message's first two frames;
        DecodeError for an unknown kind, a topic unlike its kind's or an oversized header."""
        kind_b = bytes(_small(frames[0]))
        hit = _BY_TOPIC.get(kind_b)
        cls, camera = hit if hit is not None else _parse_topic(kind_b)
        header = _small(frames[1])
        if len(header) > self.max_header:
            raise DecodeError("oversized", "%s header is %d bytes, limit %d" % (cls.KIND, len(header), self.max_header))
        return cls, camera, kind_b, header

    def _image(self, kind: str, ref: ImageRef, frame: Any) -> Any:
        buf = _buffer(frame)
        size = buf.nbytes
        if size > self.max_image:
            raise DecodeError("oversized", "%s image is %d bytes, limit %d" % (kind, size, self.max_image))
        shape, dtype = ref.shape, ref.dtype
        if dtype == "bytes":
            if shape != [size]:
                raise DecodeError("bad_image", "%s image: %r bytes declared, %d received" % (kind, shape, size))
            return bytes(buf)
        np_dtype = _DTYPES.get(dtype)
        want = _ITEMSIZE.get(dtype)
        if want is None:
            raise DecodeError("bad_image", "%s image dtype %r not allowed" % (kind, dtype))
        if not 1 <= len(shape) <= 4:
            raise DecodeError("bad_image", "%s image shape %r is not valid" % (kind, shape))
        for d in shape:
            if not 0 < d <= MAX_DIM:
                raise DecodeError("bad_image", "%s image shape %r is not valid" % (kind, shape))
            want *= d
        if want != size:
            raise DecodeError("bad_image", "%s image: shape %s needs %d bytes, %d received" % (kind, shape, want, size))
        arr = np.frombuffer(buf, dtype=np_dtype).reshape(tuple(shape))
        # received buffers may be shared with other subscribers of the same message (inproc): read-only
        arr.setflags(write=False)
        return arr


def roundtrip(msg: Any, codec: Optional[Codec] = None) -> Tuple[Any, List[bytes]]:
    """Encode then decode (for tests and tools): returns (decoded, frames as bytes)."""
    frames = [bytes(f) for f in encode(msg)]
    return (codec or Codec()).decode(frames), frames
