"""Config errors that name the key: msgspec's ``Expected `int` <= 64 - at `$.fer.workers``` becomes
``fer.workers: 1000 is above the maximum 64``.
"""
import math
import re
from typing import Annotated, Any, Dict, List, Literal, Tuple, get_args, get_origin

import msgspec
from msgspec import Meta

from edgepipe.pipeline.config.sections import ConfigError

_MISSING = object()
_AT = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _join(path: str, key: str) -> str:
    return "%s.%s" % (path, key) if path else key


def _unwrap(tp: Any) -> Tuple[Any, List[Meta]]:
    """``Annotated[T, Meta(...)]`` -> (T, [Meta(...)])."""
    if get_origin(tp) is Annotated:
        args = get_args(tp)
        return args[0], [m for m in args[1:] if isinstance(m, Meta)]
    return tp, []


def _field_types(cls: Any) -> Dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(cls)}


def _explain(value: Any, tp: Any, path: str, exc: msgspec.ValidationError) -> str:
    """msgspec's ``Expected `int` <= 64 - at `$.fer.workers``` as ``fer.workers: 1000 is above the maximum 64``."""
    text = str(exc)
    msg, sep, where = text.rpartition(" - at `")
    if not sep:
        msg, where = text, "$`"
    for name, index in _AT.findall(where[1:-1]):
        tp = _unwrap(tp)[0]
        if name and name == getattr(getattr(tp, "__struct_config__", None), "tag_field", None):
            got = value.get(name) if isinstance(value, dict) else value
            return "%s: %r is not %r, the type of this table (its name is its type)" % (
                _join(path, name), got, tp.__struct_config__.tag)
        if name:
            tp = _field_types(tp)[name]
            value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
            path = _join(path, name)
        elif index == "..." and isinstance(value, dict):  # a dict value; msgspec does not say which key
            item_tp = get_args(tp)[1]
            for key, item in value.items():
                try:
                    msgspec.convert(item, item_tp)
                except msgspec.ValidationError as sub:
                    return _explain(item, item_tp, _join(path, str(key)), sub)
            break
        elif index.isdigit() and isinstance(value, list) and int(index) < len(value):
            tp = get_args(tp)[0]
            value = value[int(index)]
            path = "%s[%s]" % (path, index)
        else:
            break
    return _describe(path, value, tp, msg)


def _describe(path: str, value: Any, tp: Any, msg: str) -> str:
    base, metas = _unwrap(tp)
    unknown = re.match(r"Object contains unknown field `(.*)`$", msg)
    if unknown:
        known = ", ".join(sorted(base.__struct_fields__)) if isinstance(base, type) else "none"
        return "%s: unknown key (known: %s)" % (_join(path, unknown.group(1)), known)
    where = path or "config"
    if msg.startswith("Expected `object`"):
        return "%s: expected a table, got %r" % (where, value)
    if msg.startswith("Expected `array`"):
        return "%s: expected a list, got %r" % (where, value)
    if get_origin(base) is Literal:
        return "%s: %r is not one of %s" % (where, value, ", ".join(repr(c) for c in get_args(base)))
    if ", got `" in msg:
        return "%s: expected %s, got %r" % (where, _TYPE_NAMES.get(base, getattr(base, "__name__", str(base))), value)
    if isinstance(value, float) and math.isnan(value):
        return "%s: nan is not a number" % where
    for m in metas:
        if m.ge is not None and value < m.ge:
            return "%s: %r is below the minimum %r" % (where, value, m.ge)
        if m.le is not None and value > m.le:
            return "%s: %r is above the maximum %r" % (where, value, m.le)
    return "%s: %s" % (where, msg)


def convert(data: Any, tp: Any) -> Any:
    """``data`` as ``tp``, or a ConfigError naming the key path and what is wrong."""
    try:
        return msgspec.convert(data, tp)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(data, tp, "", exc)) from None

