"""Encode and decode messages as ZeroMQ multipart frames.

Wire format (every message)::

    frame 0: the message kind, ASCII (also the PUB/SUB topic)
    frame 1: msgpack map {"v": SCHEMA_VERSION, "s": sequence number, "f": {field: value},
             "img": image description or nil}
    frame 2: the image buffer, only when "img" is set (zero-copy on both ends)

Decoding checks everything a hostile or broken peer could get wrong: the
number of frames, sizes, the schema version, the kind, every field's type
(nested dataclasses included), unknown and missing fields, and that an image
buffer matches its declared shape. Any problem raises ``DecodeError`` with a
short ``reason`` that the receiving actor counts; it never crashes the actor.

Python 3.9 compatible.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, List, Sequence, Tuple, Type

import msgpack
import numpy as np

from .messages import BY_KIND, SCHEMA_VERSION

DEFAULT_MAX_HEADER = 1 << 20  # 1 MiB of msgpack per message
DEFAULT_MAX_IMAGE = 64 << 20  # 64 MiB per image
IMAGE_DTYPES = ("uint8", "int8", "float32")


class DecodeError(ValueError):
    """A message that cannot be accepted; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- encoding

def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode(msg: Any, seq: int = 0) -> List[Any]:
    """Message -> list of frames for ``send_multipart``. Images are not copied.

    ``seq`` is the sender's per-kind sequence number on its socket, so that a
    receiver can count messages a PUB socket dropped for it (see ``Channel``).
    """
    kind = type(msg).KIND
    fields = {}
    image = None
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        if f.name == "image":
            image = v
            continue
        fields[f.name] = _plain(v)
    img_meta = None
    frames: List[Any] = [kind.encode("ascii"), b""]
    if image is not None:
        if isinstance(image, np.ndarray):
            arr = np.ascontiguousarray(image)
            img_meta = {"shape": list(arr.shape), "dtype": arr.dtype.name}
            frames.append(arr.data if arr.ndim else arr.tobytes())
        elif isinstance(image, (bytes, bytearray, memoryview)):
            img_meta = {"bytes": len(image)}
            frames.append(image)
        else:
            raise TypeError("%s.image must be a numpy array or bytes, not %s" % (kind, type(image).__name__))
    frames[1] = msgpack.packb({"v": SCHEMA_VERSION, "s": seq, "f": fields, "img": img_meta}, use_bin_type=True)
    return frames


# ---------------------------------------------------------------- decoding

_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = typing.get_type_hints(cls)
        _HINTS[cls] = h
    return h


def _check(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp) if hasattr(typing, "get_origin") else getattr(tp, "__origin__", None)
    args = typing.get_args(tp) if hasattr(typing, "get_args") else getattr(tp, "__args__", ())
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], path)
    if origin in (list, List):
        if not isinstance(value, list):
            raise DecodeError("bad_field", "%s: expected a list, got %s" % (path, type(value).__name__))
        return [_check(v, args[0], "%s[%d]" % (path, i)) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise DecodeError("bad_field", "%s: expected a map, got %s" % (path, type(value).__name__))
        return {_check(k, args[0], path + ".key"): _check(v, args[1], "%s.%s" % (path, k)) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError("bad_field", "%s: expected a number, got %s" % (path, type(value).__name__))
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError("bad_field", "%s: expected an integer, got %s" % (path, type(value).__name__))
        return value
    if tp in (str, bool, bytes):
        if type(value) is not tp:
            raise DecodeError("bad_field", "%s: expected %s, got %s" % (path, tp.__name__, type(value).__name__))
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    raise DecodeError("bad_field", "%s: unsupported type %r" % (path, tp))


def _build(cls: Type[Any], data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise DecodeError("bad_field", "%s: expected a map, got %s" % (path, type(data).__name__))
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "image"}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise DecodeError("unknown_field", "%s: unknown field(s) %s" % (path, ", ".join(unknown)))
    kwargs = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _check(data[name], hints[name], "%s.%s" % (path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise DecodeError("missing_field", "%s: missing field %r" % (path, name))
    return cls(**kwargs)


class Codec:
    """Decodes multipart messages with size limits; one per actor (not thread-safe)."""

    def __init__(self, max_header: int = DEFAULT_MAX_HEADER, max_image: int = DEFAULT_MAX_IMAGE) -> None:
        self.max_header = max_header
        self.max_image = max_image

    def decode(self, frames: Sequence[Any]) -> Any:
        """Frames (bytes or zmq.Frame) -> message. Raises DecodeError."""
        return self.decode_seq(frames)[0]

    def decode_seq(self, frames: Sequence[Any]) -> Tuple[Any, int]:
        """Frames -> (message, sender's sequence number). Raises DecodeError."""
        n = len(frames)
        if n not in (2, 3):
            raise DecodeError("bad_frames", "expected 2 or 3 frames, got %d" % n)
        kind_b = _bytes(frames[0])
        cls = BY_KIND.get(kind_b.decode("ascii", "replace")) if len(kind_b) < 32 else None
        if cls is None:
            raise DecodeError("unknown_kind", "unknown message kind %r" % kind_b[:32])
        header = _bytes(frames[1])
        if len(header) > self.max_header:
            raise DecodeError("oversized", "%s header is %d bytes, limit %d" % (cls.KIND, len(header), self.max_header))
        try:
            doc = msgpack.unpackb(
                header, raw=False, strict_map_key=True, use_list=True,
                max_str_len=self.max_header, max_bin_len=self.max_header,
                max_array_len=self.max_header, max_map_len=self.max_header, max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            raise DecodeError("malformed", "%s header is not valid msgpack (%s)" % (cls.KIND, exc)) from None
        if not isinstance(doc, dict) or "v" not in doc:
            raise DecodeError("malformed", "%s header is not a map with a schema version" % cls.KIND)
        if doc["v"] != SCHEMA_VERSION:
            raise DecodeError("wrong_version", "%s has schema version %r, this build speaks %d"
                              % (cls.KIND, doc["v"], SCHEMA_VERSION))
        if set(doc) != {"v", "s", "f", "img"}:
            raise DecodeError("malformed", "%s header is not a {v, s, f, img} map" % cls.KIND)
        seq = doc["s"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise DecodeError("malformed", "%s sequence number %r is not a natural number" % (cls.KIND, seq))
        msg = _build(cls, doc["f"], cls.KIND)
        img = doc["img"]
        has_image = any(f.name == "image" for f in dataclasses.fields(cls))
        if img is None:
            if n != 2:
                raise DecodeError("bad_frames", "%s has an extra frame but no image description" % cls.KIND)
            return msg, seq
        if not has_image or n != 3:
            raise DecodeError("bad_frames", "%s: image description without a matching image frame" % cls.KIND)
        msg.image = self._image(cls.KIND, img, frames[2])
        return msg, seq

    def _image(self, kind: str, meta: Any, frame: Any) -> Any:
        buf = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
        size = buf.nbytes if isinstance(buf, memoryview) else len(buf)
        if size > self.max_image:
            raise DecodeError("oversized", "%s image is %d bytes, limit %d" % (kind, size, self.max_image))
        if not isinstance(meta, dict):
            raise DecodeError("malformed", "%s image description is not a map" % kind)
        if set(meta) == {"bytes"}:
            if meta["bytes"] != size:
                raise DecodeError("bad_image", "%s image: %r bytes declared, %d received" % (kind, meta["bytes"], size))
            return bytes(buf)
        if set(meta) != {"shape", "dtype"}:
            raise DecodeError("malformed", "%s image description has keys %s" % (kind, sorted(map(str, meta))))
        shape, dtype = meta["shape"], meta["dtype"]
        if dtype not in IMAGE_DTYPES:
            raise DecodeError("bad_image", "%s image dtype %r not allowed" % (kind, dtype))
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 16 for d in shape)):
            raise DecodeError("bad_image", "%s image shape %r is not valid" % (kind, shape))
        want = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if want != size:
            raise DecodeError("bad_image", "%s image: shape %s needs %d bytes, %d received" % (kind, shape, want, size))
        arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
        # received buffers may be shared with other subscribers of the same message (inproc): read-only
        arr.flags.writeable = False
        return arr


def _bytes(frame: Any) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if hasattr(frame, "bytes"):
        return frame.bytes
    return bytes(frame)


def roundtrip(msg: Any, codec: Codec = None) -> Tuple[Any, List[bytes]]:
    """Encode then decode (for tests and tools): returns (decoded, frames as bytes)."""
    frames = [bytes(f) for f in encode(msg)]
    return (codec or Codec()).decode(frames), frames
