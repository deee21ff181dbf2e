"""Why a value does not fit a msgspec type: the first problem and its key path, found by our own checks.

msgspec says *that* a value does not fit (``msgspec.ValidationError``); the text of its message is for
people and may change in any release, so nothing here reads it. When a typed decode or
``msgspec.convert`` has failed, ``first_problem(value, T)`` walks the plain value (an untyped decode of
the same bytes, or the data that was converted) against ``T``'s own annotations: the fields of each
Struct (``msgspec.structs.fields``: names, types, which are required), its ``__struct_config__``
(array-like, tag, unknown fields forbidden), the ``Meta`` constraints of ``Annotated`` types, ``Literal``
choices, unions, lists, tuples and dicts. It returns a ``Problem``: its ``kind`` (``MISSING``,
``UNKNOWN``, ``TYPE``, ``RANGE``, ``CHOICE``, ``TAG``), its key ``path`` and a short ``text`` in plain
words. The bus codec turns the kind into a reject reason; the config loader, the path and the text
into an error that names the key.

The rules are msgspec's strict ones for the types this project uses: an int is a valid float, a bool is
not an int, nothing else is coerced; a struct is a map (``array_like``: an array, required fields first),
a union of tagged structs picks its member by the tag; a float bound by ``+-sys.float_info.max`` is
finite (NaN fails every bound). A type outside these (a datetime, an enum, ...) is taken as fitting.
Walking is only for a value the typed decoder refused: a valid message never comes here.
"""
from __future__ import annotations

import math
import re
import sys
import types
from typing import Annotated, Any, Dict, List, Literal, NamedTuple, Optional, Tuple, Union, get_args, get_origin

import msgspec

MISSING = "missing"  # a required field is absent (an array-like struct: too few items)
UNKNOWN = "unknown"  # a key the struct does not have (an array-like struct: too many items)
TYPE = "type"  # a value of the wrong type (a string for an int, a map for a list, ...)
RANGE = "range"  # the right type outside its constraints (a bound, a length, NaN, a tuple's size)
CHOICE = "choice"  # not one of a Literal's values
TAG = "tag"  # a struct's tag (its kind, its type) that is not one of the tags allowed there

PathItem = Union[str, int]

_MAX = sys.float_info.max
_UNIONS = tuple(u for u in (Union, getattr(types, "UnionType", None)) if u is not None)  # and X | Y on 3.10+
_ANY_FAMILY = frozenset(("nil", "bool", "int", "float", "str", "bytes", "array", "map", "other"))
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", bytes: "bytes",
          bytearray: "bytes", type(None): "nothing"}


class Problem(NamedTuple):
    """The first thing wrong with a value: ``kind``, where (``path``: keys and indexes from the top),
    ``text`` (plain words, without the path), the offending ``value`` and, for a ``TAG`` or a
    ``CHOICE``, the ``allowed`` values."""

    kind: str
    path: Tuple[PathItem, ...]
    text: str
    value: Any = None
    allowed: Tuple[Any, ...] = ()


class _Fields(NamedTuple):
    fields: Tuple[Any, ...]  # msgspec.structs.FieldInfo, in order
    by_name: Dict[str, Any]  # encode name -> FieldInfo
    required: int  # how many fields are required (an array-like struct's come first)
    known: str  # the encode names, sorted, for a message


_FIELDS: Dict[type, _Fields] = {}


def format_path(path: Tuple[PathItem, ...]) -> str:
    """``("faces", 0, "x1")`` as ``faces[0].x1``."""
    out = ""
    for item in path:
        if isinstance(item, int) and not isinstance(item, bool):
            out += "[%d]" % item
        else:
            out += ("." if out else "") + str(item)
    return out


def first_problem(value: Any, tp: Any, path: Tuple[PathItem, ...] = ()) -> Optional[Problem]:
    """The first problem of ``value`` as ``tp`` (depth first, a map's keys in their order, then what is
    missing), or None if it fits."""
    tp, metas = _unwrap(tp)
    if tp is Any:
        return None
    origin = get_origin(tp)
    if origin in _UNIONS:
        return _union(value, get_args(tp), path)
    if origin is Literal:
        return _literal(value, get_args(tp), path)
    family = _family(value)
    want = _families(tp)
    if want is None:  # a type these rules do not cover
        return None
    if family not in want:
        return Problem(TYPE, path, "expected %s, got %s" % (_name(tp), _show(value)), value)
    if tp is type(None) or tp is bool:
        return None
    if tp is int or tp is float:
        return _number(value, tp, metas, path)
    if tp is str or tp is bytes or tp is bytearray:
        return _sized(value, metas, path, "characters" if tp is str else "bytes")
    if _is_struct(tp):
        return _struct(value, tp, path)
    args = get_args(tp)
    if origin is dict or tp is dict:
        return _sized(value, metas, path, "keys") or _dict(value, args, path)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            return Problem(RANGE, path, "expected %d items, got %d" % (len(args), len(value)), value)
        return _items(value, args, path)
    return _sized(value, metas, path, "items") or _items(value, (args[0] if args else Any,) * len(value), path)


# ---------------------------------------------------------------- types

def _unwrap(tp: Any) -> Tuple[Any, List[msgspec.Meta]]:
    """``Annotated[T, Meta(...), ...]`` -> (T, [Meta(...), ...])."""
    metas: List[msgspec.Meta] = []
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        tp = args[0]
        metas.extend(m for m in args[1:] if isinstance(m, msgspec.Meta))
    if tp is None:
        tp = type(None)
    return tp, metas


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _family(value: Any) -> str:
    """What a value is, as msgpack or TOML sees it."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "map"
    return "other"


def _families(tp: Any) -> Optional[frozenset]:
    """The families of values a type takes (None: a type these rules do not cover)."""
    tp, _ = _unwrap(tp)
    origin = get_origin(tp)
    if tp is Any:
        return _ANY_FAMILY
    if origin in _UNIONS:
        out: frozenset = frozenset()
        for member in get_args(tp):
            fams = _families(member)
            if fams is None:
                return None
            out |= fams
        return out
    if origin is Literal:
        return frozenset(_family(v) for v in get_args(tp))
    simple = {type(None): "nil", bool: "bool", int: "int", str: "str", bytes: "bytes", bytearray: "bytes"}.get(tp)
    if simple:
        return frozenset((simple,))
    if tp is float:
        return frozenset(("int", "float"))
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        return frozenset(("array",))
    if origin is dict or tp is dict:
        return frozenset(("map",))
    if _is_struct(tp):
        return frozenset(("array",)) if tp.__struct_config__.array_like else frozenset(("map",))
    return None


def _name(tp: Any) -> str:
    """A type in plain words: ``an integer``, ``a string or nothing``, ``a table``, ..."""
    tp, _ = _unwrap(tp)
    origin = get_origin(tp)
    if origin in _UNIONS:
        return " or ".join(_name(member) for member in get_args(tp))
    if origin is Literal:
        return "one of %s" % ", ".join(repr(v) for v in get_args(tp))
    if tp in _NAMES:
        return _NAMES[tp]
    fams = _families(tp)
    if fams == frozenset(("array",)):
        return "a list"
    if fams == frozenset(("map",)):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fields(cls: type) -> _Fields:
    found = _FIELDS.get(cls)
    if found is None:
        fields = msgspec.structs.fields(cls)
        required = sum(1 for f in fields if f.required)
        found = _FIELDS[cls] = _Fields(fields, {f.encode_name: f for f in fields}, required,
                                       ", ".join(sorted(f.encode_name for f in fields)))
    return found


# ---------------------------------------------------------------- values

def _number(value: Any, tp: Any, metas: List[msgspec.Meta], path: Tuple[PathItem, ...]) -> Optional[Problem]:
    if tp is int and not -(1 << 63) <= value < (1 << 64):
        return Problem(RANGE, path, "%r is out of the 64-bit range" % value, value)
    for m in metas:
        bounds = [b for b in (m.ge, m.gt, m.le, m.lt) if b is not None]
        finite = any(abs(b) == _MAX for b in bounds)  # Finite, Ms, ...: NaN and infinities are refused
        if bounds and isinstance(value, float) and (math.isnan(value) or (finite and math.isinf(value))):
            return Problem(RANGE, path, "%r is not a %snumber" % (value, "finite " if finite else ""), value)
        text = None
        if m.ge is not None and not value >= m.ge:
            text = "%r is below the minimum %r" % (value, m.ge)
        elif m.gt is not None and not value > m.gt:
            text = "%r is not above %r" % (value, m.gt)
        elif m.le is not None and not value <= m.le:
            text = "%r is above the maximum %r" % (value, m.le)
        elif m.lt is not None and not value < m.lt:
            text = "%r is not below %r" % (value, m.lt)
        elif m.multiple_of is not None and value % m.multiple_of != 0:
            text = "%r is not a multiple of %r" % (value, m.multiple_of)
        if text:
            return Problem(RANGE, path, text, value)
    return None


def _sized(value: Any, metas: List[msgspec.Meta], path: Tuple[PathItem, ...], unit: str) -> Optional[Problem]:
    """Length and pattern constraints of a string, bytes, list or dict."""
    n = len(value)
    for m in metas:
        if m.min_length is not None and n < m.min_length:
            return Problem(RANGE, path, "%d %s, at least %d needed" % (n, unit, m.min_length), value)
        if m.max_length is not None and n > m.max_length:
            return Problem(RANGE, path, "%d %s, at most %d allowed" % (n, unit, m.max_length), value)
        if m.pattern is not None and isinstance(value, str) and not re.search(m.pattern, value):
            return Problem(RANGE, path, "%s does not match %r" % (_show(value), m.pattern), value)
    return None


def _items(value: Any, item_types: Tuple[Any, ...], path: Tuple[PathItem, ...]) -> Optional[Problem]:
    for i, (item, tp) in enumerate(zip(value, item_types)):
        problem = first_problem(item, tp, path + (i,))
        if problem:
            return problem
    return None


def _dict(value: Dict[Any, Any], args: Tuple[Any, ...], path: Tuple[PathItem, ...]) -> Optional[Problem]:
    key_tp, value_tp = args if len(args) == 2 else (Any, Any)
    for key, item in value.items():
        problem = first_problem(key, key_tp, path + (key,))
        if problem:
            return problem._replace(text="a bad key: " + problem.text)
        problem = first_problem(item, value_tp, path + (key,))
        if problem:
            return problem
    return None


def _literal(value: Any, choices: Tuple[Any, ...], path: Tuple[PathItem, ...]) -> Optional[Problem]:
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return None
    if _family(value) not in {_family(c) for c in choices}:
        kinds = {_NAMES.get(type(c), type(c).__name__) for c in choices}
        return Problem(TYPE, path, "expected %s, got %s" % (" or ".join(sorted(kinds)), _show(value)), value)
    return Problem(CHOICE, path, "%s is not one of %s" % (_show(value), ", ".join(repr(c) for c in choices)),
                   value, tuple(choices))


def _union(value: Any, members: Tuple[Any, ...], path: Tuple[PathItem, ...]) -> Optional[Problem]:
    family = _family(value)
    fitting = []
    for member in members:
        fams = _families(member)
        if fams is None:  # a member these rules do not cover: trust the value to it
            return None
        if family in fams:
            fitting.append(member)
    if not fitting:
        return Problem(TYPE, path, "expected %s, got %s" % (" or ".join(_name(m) for m in members), _show(value)),
                       value)
    fitting.sort(key=lambda m: _unwrap(m)[0] is not int)  # an int goes to an int member before a float one
    structs = [_unwrap(m)[0] for m in fitting if _is_struct(_unwrap(m)[0])]
    if len(structs) > 1 and family == "map":  # a tagged union: the tag picks the struct
        tag_field = structs[0].__struct_config__.tag_field
        if tag_field not in value:
            return Problem(MISSING, path + (tag_field,), "missing, a required key", None)
        by_tag = {cls.__struct_config__.tag: cls for cls in structs}
        tag = value[tag_field]
        cls = by_tag.get(tag) if type(tag) in (str, int) else None
        if cls is None:
            return Problem(TAG, path + (tag_field,), "%s is not one of %s"
                           % (_show(tag), ", ".join(repr(t) for t in by_tag)), tag, tuple(by_tag))
        return _struct(value, cls, path)
    return first_problem(value, fitting[0], path)


def _struct(value: Any, cls: type, path: Tuple[PathItem, ...]) -> Optional[Problem]:
    config = cls.__struct_config__
    info = _fields(cls)
    if config.array_like:
        items = list(value)
        if config.tag_field is not None:  # an array-like tagged struct: the tag is the first item
            if not items or items[0] != config.tag:
                got = items[0] if items else None
                return Problem(TAG, path + (0,), "%s is not %r" % (_show(got), config.tag), got, (config.tag,))
            items = items[1:]
        n = len(items)
        if n < info.required:
            return Problem(MISSING, path + (info.fields[n].encode_name,),
                           "missing: %d of the %d required items" % (n, info.required))
        if n > len(info.fields) and config.forbid_unknown_fields:
            return Problem(UNKNOWN, path + (len(info.fields),),
                           "an extra item: %d items, at most %d allowed" % (n, len(info.fields)), items[-1])
        for field, item in zip(info.fields, items):
            problem = first_problem(item, field.type, path + (field.encode_name,))
            if problem:
                return problem
        return None
    tag_field = config.tag_field
    for key, item in value.items():
        if key == tag_field and tag_field is not None:
            if not (type(item) is type(config.tag) and item == config.tag):
                return Problem(TAG, path + (key,), "%s is not %r" % (_show(item), config.tag), item, (config.tag,))
            continue
        field = info.by_name.get(key) if isinstance(key, str) else None
        if field is None:
            if config.forbid_unknown_fields:
                return Problem(UNKNOWN, path + (key,), "unknown key (known: %s)" % info.known, key)
            continue
        problem = first_problem(item, field.type, path + (key,))
        if problem:
            return problem
    for field in info.fields:
        if field.required and field.encode_name not in value:
            return Problem(MISSING, path + (field.encode_name,), "missing, a required key")
    return None
