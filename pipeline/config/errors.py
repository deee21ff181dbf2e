"""Config errors that name the key: ``fer.workers: 1000 is above the maximum 64``.

``convert`` converts plain data with ``msgspec.convert``. When msgspec refuses it
(``msgspec.ValidationError``), ``bus.diagnose`` walks the same data against the
config's types (struct fields, ``Meta`` constraints, ``Literal`` choices, tags)
and finds the key path and the problem, so the error's words are ours: the text
of msgspec's message is never read (it may change in any release).
"""
from typing import Any

import msgspec

from edgepipe.bus import diagnose
from edgepipe.pipeline.config.sections import ConfigError


def describe(problem: diagnose.Problem) -> str:
    """A problem as ``key.path: what is wrong`` (``config`` for the whole document)."""
    where = diagnose.format_path(problem.path) or "config"
    if problem.kind == diagnose.TAG and len(problem.allowed) == 1:  # a table whose name is its type
        return "%s: %r is not %r, the type of this table (its name is its type)" % (
            where, problem.value, problem.allowed[0])
    return "%s: %s" % (where, problem.text)


def convert(data: Any, tp: Any) -> Any:
    """``data`` as ``tp``, or a ConfigError naming the key path and what is wrong."""
    try:
        return msgspec.convert(data, tp)
    except msgspec.ValidationError as exc:
        problem = diagnose.first_problem(data, tp)
        if problem is None:  # msgspec refused what the diagnosis takes as fitting (a rule it lacks): say so
            raise ConfigError("config: refused by msgspec (%s)" % exc) from None
        raise ConfigError(describe(problem)) from None
