"""The config with every key's description, read from the settings classes: ``python run.py config``.

The settings classes (``pipeline/config/sections.py`` and the sections beside each actor) are the one
place of every default and its description (``msgspec.Meta(description=...)``). This module prints them:

- ``python run.py config --defaults``: the defaults as TOML, each key under its description as comments
  (a valid config file; ``config.toml`` holds only the profiles on top of them);
- ``python run.py config [--config FILE]``: the settings in effect (config.toml, FILE overlaid), the same way;
- ``python run.py config --markdown``: ``docs/config.md``, every table and key (a test checks it is current).

A table keyed by name (``[profiles.NAME]``, ``[groups.NAME]``, ...) with no entry is printed commented
out, with the keys an entry takes.
"""
import argparse
import inspect
import json
import re
import textwrap
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import msgspec
import msgspec.inspect as mi

from edgepipe.pipeline.config.loading import Config, ConfigError, load

WIDTH = 100
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
NOT_SET = "not set"
SECRET = ("mqtt.password",)  # shown as *** when set
Key = Tuple[str, Any, Any, str]  # (name, msgspec.inspect type, default or value, description)


def _unwrap(t: Any) -> Tuple[Any, str]:
    """A field's type without its ``Metadata`` wrapper, and its description."""
    if isinstance(t, mi.Metadata):
        return t.type, str((t.extra_json_schema or {}).get("description", ""))
    return t, ""


def _struct_of(t: Any) -> Optional[Any]:
    """The ``StructType`` a key holds (one table), else None."""
    t = _unwrap(t)[0]
    return t if isinstance(t, mi.StructType) else None


def _named_tables(t: Any) -> Optional[Any]:
    """The ``StructType`` of a table keyed by name (``Dict[str, Struct]``), else None."""
    t = _unwrap(t)[0]
    return _struct_of(t.value_type) if isinstance(t, mi.DictType) else None


def keys(cls: Any, value: Any = None) -> List[Key]:
    """The keys of the table ``cls``: name, type, ``value``'s (else the default's) value as data, description."""
    info = mi.type_info(cls)
    out = []
    for f in info.fields:
        t, doc = _unwrap(f.type)
        if value is not None:
            v = getattr(value, f.name)
        else:
            v = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
        out.append((f.name, t, msgspec.to_builtins(v), doc))
    return out


def type_words(t: Any, plural: bool = False) -> str:
    """What a key takes, in words: ``integer, 1 to 64``, ``one of "raw", "jpeg"``, ``list of strings``."""
    t, _ = _unwrap(t)
    s = "s" if plural else ""
    if isinstance(t, (mi.IntType, mi.FloatType)):
        lo, hi = (t.ge if t.ge is not None else t.gt), (t.le if t.le is not None else t.lt)
        word = ("integer" if isinstance(t, mi.IntType) else "number") + s
        if lo is not None and hi is not None:
            return "%s, %s to %s" % (word, lo, hi)
        return word + (", at least %s" % lo if lo is not None else "") + (", at most %s" % hi if hi is not None else "")
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.UnionType):
        kinds = [type_words(x, plural) for x in t.types if not isinstance(x, mi.NoneType)]
        return " or ".join(kinds) + (", or not set" if any(isinstance(x, mi.NoneType) for x in t.types) else "")
    if isinstance(t, mi.ListType):
        return "list%s of %s" % (s, type_words(t.item_type, True))
    if isinstance(t, mi.DictType):
        return "table%s of %s" % (s, type_words(t.value_type, True))
    if isinstance(t, mi.StructType):
        return "table" + s
    return {mi.StrType: "string", mi.BoolType: "boolean"}.get(type(t), type(t).__name__) + s


# ---------------------------------------------------------------- TOML

def toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def toml_value(v: Any) -> str:
    """Plain data as a TOML value (inline tables and arrays for the nested ones)."""
    if v is None:
        return "<%s>" % NOT_SET
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is a JSON string
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(toml_value(x) for x in v)
    if isinstance(v, dict):
        return "{ %s }" % ", ".join("%s = %s" % (toml_key(k), toml_value(x)) for k, x in v.items()) if v else "{}"
    raise TypeError("no TOML for %r" % (v,))


def _comment(text: str, indent: str = "") -> List[str]:
    return [indent + "# " + line for line in textwrap.wrap(text, WIDTH - len(indent) - 2)]


def _lead(cls: Any) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split()).replace("``", "`")


def _placeholder(name: str) -> str:
    """The name of an entry of the table keyed by name ``name``, in a template."""
    return {"by_engine": "ENGINE", "faults": "ACTOR"}.get(name, "NAME")


def toml_table(cls: Any, path: str, value: Any = None, commented: bool = False) -> List[str]:
    """The table ``[path]`` of class ``cls`` as TOML lines: its docstring, then each key under its description;
    its sub-tables after its keys. ``commented``: every line a comment (a template of a table keyed by name).
    ``path`` "": the whole config, with no header of its own."""
    out = (_comment(_lead(cls)) + ["%s[%s]" % ("# " if commented else "", path)]) if path else []
    later: List[str] = []
    for name, t, v, doc in keys(cls, value):
        sub, named = _struct_of(t), _named_tables(t)
        where = "%s.%s" % (path, toml_key(name)) if path else toml_key(name)
        if sub is not None:
            later += [""] + toml_table(sub.cls, where, getattr(value, name) if value is not None else None, commented)
        elif named is not None:
            later += [""] + _comment("[%s.%s]: %s" % (where, _placeholder(name), doc))
            entries = getattr(value, name) if value is not None else {}
            for key, entry in entries.items():
                later += [""] + toml_table(named.cls, "%s.%s" % (where, toml_key(key)), entry, commented)
            if not entries:
                later += toml_table(named.cls, "%s.%s" % (where, _placeholder(name)), None, True)
        else:
            shown = toml_value("***") if v and "%s.%s" % (path, name) in SECRET else toml_value(v)
            out += _comment("%s (%s)" % (doc, type_words(t)) if doc else type_words(t))
            out.append("%s%s = %s" % ("# " if commented or v is None else "", toml_key(name), shown))
    return out + later


def config_toml(cfg: Optional[Config] = None) -> str:
    """``cfg`` (default: the classes' defaults) as TOML, every key under its description as comments."""
    head = _comment("edgepipe settings %s, each key under its description. The defaults and the descriptions are "
                    "the settings classes' (pipeline/config/sections.py, each actor's section beside it, "
                    "models/engines/kind_*.py); docs/config.md lists them."
                    % ("in effect" if cfg is not None else "by default (`python run.py config --defaults`)"))
    return "\n".join(head + toml_table(Config, "", cfg)) + "\n"


# ---------------------------------------------------------------- Markdown

def tables(cls: Any = Config, path: str = "") -> Iterator[Tuple[str, Any]]:
    """Every table of the config, depth first: (its path, its class); an entry of a table keyed by name is
    ``PATH.NAME`` (``.ENGINE`` for by_engine, ``.ACTOR`` for faults)."""
    if path:
        yield path, cls
    for name, t, _, _ in keys(cls):
        where = "%s.%s" % (path, name) if path else name
        sub, named = _struct_of(t), _named_tables(t)
        if sub is not None:
            yield from tables(sub.cls, where)
        elif named is not None:
            yield from tables(named.cls, "%s.%s" % (where, _placeholder(name)))


def markdown() -> str:
    """``docs/config.md``: every table and key of the config with its default, its type and its description."""
    out = ["# Configuration", "",
           "<!-- generated by `python run.py config --markdown > docs/config.md` from the settings classes; "
           "do not edit (tests/test_config_defaults.py checks it is current) -->", "",
           "Every key is optional and unknown keys are refused. The defaults below are the settings classes' "
           "(`pipeline/config/sections.py`, each actor's section beside it, one file per engine kind in "
           "`models/engines/kind_*.py`); `config.toml` adds the profiles; a `--config FILE` overlays it "
           "(tables merge key by key, other values, lists too, replace); command-line options override both. "
           "`python run.py config --defaults` prints the defaults as TOML with these descriptions, "
           "`python run.py config [--config FILE]` the settings in effect."]
    for path, cls in tables():
        while out[-1] == "":
            out.pop()
        out += ["", "## `[%s]`" % path, ""]
        if _lead(cls):
            out += [_lead(cls), ""]
        for name, t, v, text in keys(cls):
            if _struct_of(t) is not None:
                continue
            if _named_tables(t) is not None:
                out.append("- `[%s.%s.%s]`: %s" % (path, name, _placeholder(name), text or "a table per name"))
                continue
            default = NOT_SET if v is None else "`%s`" % toml_value(v)
            out.append("- `%s` (%s; default %s)%s" % (name, type_words(t), default, ": " + text if text else ""))
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="run.py config", description="print the settings with each key's "
                                 "description: those in effect (config.toml, --config overlaid), the defaults, "
                                 "or docs/config.md")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--defaults", action="store_true", help="the settings classes' defaults, as TOML")
    what.add_argument("--markdown", action="store_true", help="every table and key as Markdown (docs/config.md)")
    ap.add_argument("--config", help="a config file overlaid on config.toml (without --defaults, --markdown)")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(), end="")
    elif args.defaults:
        print(config_toml(), end="")
    else:
        try:
            print(config_toml(load(args.config)), end="")
        except ConfigError as exc:
            ap.exit(2, "run.py config: %s\n" % exc)
    return 0
