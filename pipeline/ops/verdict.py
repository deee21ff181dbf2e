"""The end of ``run.py doctor``: what runs here (each profile of the config on each engine) and its exit code.

A profile runs on an engine (a cell) when every role's model file is here (a
model with no Edge TPU file runs its CPU model on the CPU, as placement does)
and the engines its roles run on work: the CPU needs a TFLite runtime, the
Edge TPU needs libedgetpu, a device and a delegate that loads. What blocks a
cell is a doctor finding with ``blocks`` set, tied to an engine or to a cell.

What the user asked for is one profile (``--profile``, else the config's
``pipeline.profile``) on the engines ``--engine`` (else ``pipeline.engine``)
names: ``auto`` is the Edge TPU or the CPU, whichever runs; ``fake`` always
runs. Doctor exits 1 only when no asked cell runs. A finding that touches no
asked cell, or only asked cells that do not run while another asked one does
(no Edge TPU when ``auto`` runs on the CPU), is a note, not a problem; when
nothing asked runs, what blocks it is a FAIL.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from edgepipe.models.store import fetch
from edgepipe.models.store.manifest import MODELS

ENGINES = ("cpu", "edgetpu")
ROLES = ("detector", "fer", "classifier")
FAKE_NOTE = ("--engine fake runs every profile: a simulated Edge TPU for tests and benchmarks (no model runs; "
             "it reads the synthetic source's drawn faces)")


class Need:
    """One role of a profile on one engine: the model, where it runs and what of it is missing."""

    def __init__(self, role: str, model: str, runs_on: str, instead_of: str = "") -> None:
        self.role, self.model, self.runs_on, self.instead_of = role, model, runs_on, instead_of
        self.missing: List[Tuple[str, str]] = []  # (what is missing, the fix)

    def label(self, engine: str) -> str:
        notes = (["CPU file"] if self.runs_on != engine else []) + (
            ["the profile's fallback for %s" % self.instead_of] if self.instead_of else [])
        return "%s %s%s" % (self.role, self.model, " (%s)" % ", ".join(notes) if notes else "")


def _here(spec: Any, filename: str, model_paths: Sequence[str]) -> bool:
    return fetch.locate(spec, filename, model_paths) is not None or bool(fetch.sources_for(spec, filename))


def _model(prof: Any, role: str, engine: str, model_paths: Sequence[str]) -> Tuple[str, str]:
    """The profile's model of ``role`` on ``engine`` and the model it replaces: the profile's ``fallback``
    replaces one whose file is neither here nor downloadable, as placement does."""
    name = first = getattr(prof.models(engine), role)
    fallback = getattr(prof, "fallback", None) or {}
    seen = {name}
    while name in fallback:
        spec = MODELS.get(name)
        filename = spec.files.get(engine) or spec.files.get("cpu", "") if spec is not None else ""
        if not filename or _here(spec, filename, model_paths) or fallback[name] in seen:
            break
        name = fallback[name]
        seen.add(name)
    return name, first if name != first else ""


def needs(prof: Any, engine: str, model_paths: Sequence[str]) -> List[Need]:
    """What profile ``prof`` needs to run on ``engine``: each role's model, and its files that are missing."""
    out: List[Need] = []
    for role in ROLES:
        if not getattr(prof.models(engine), role):
            continue
        name, instead_of = _model(prof, role, engine, model_paths)
        spec = MODELS.get(name)
        if spec is not None and engine == "edgetpu" and "edgetpu" not in spec.files:
            name, instead_of = _model(prof, role, "cpu", model_paths)  # placement runs the CPU model on the CPU
            spec = MODELS.get(name)
            need = Need(role, name, "cpu", instead_of)
        else:
            need = Need(role, name, engine, instead_of)
        out.append(need)
        if spec is None:
            need.missing.append(("%s: unknown model %r" % (role, name),
                                 "name a model of `python run.py models list` in the profile"))
            continue
        kind = need.runs_on if need.runs_on in spec.files else "cpu"
        for fname in [spec.files[kind]] + ([spec.labels_file] if spec.labels_file else []):
            if fetch.locate(spec, fname, model_paths) is not None:
                continue
            if fetch.sources_for(spec, fname):
                need.missing.append(("%s %s: %s not fetched" % (role, name, fname),
                                     "python run.py models fetch %s" % name))
            else:
                need.missing.append(("%s %s: %s missing (no download source)" % (role, name, fname),
                                     "put %s in %s (or a folder listed in models.paths)"
                                     % (fname, fetch.cache_dir())))
    return out


class Cell:
    """One profile on one engine: whether it runs here, and why not."""

    def __init__(self, profile: str, engine: str, roles: List[Need]) -> None:
        self.profile, self.engine, self.roles = profile, engine, roles
        self.uses = sorted({n.runs_on for n in roles})  # the engines its roles run on
        self.blockers: List[Tuple[str, str]] = []  # (why not, fix)

    @property
    def runs(self) -> bool:
        return not self.blockers

    def as_dict(self) -> Dict[str, Any]:
        return {"profile": self.profile, "engine": self.engine, "runs": self.runs,
                "roles": [n.label(self.engine) for n in self.roles],
                "why_not": [{"text": t, "fix": f} for t, f in self.blockers]}


def cells(cfg: Any, findings: List[Any]) -> List[Cell]:
    """Every profile of the config on every real engine, with what blocks it (from ``findings``)."""
    paths = list(getattr(getattr(cfg, "models", None), "paths", []) or [])
    out = []
    for pname, prof in sorted((getattr(cfg, "profiles", {}) or {}).items()):
        for engine in ENGINES:
            c = Cell(pname, engine, needs(prof, engine, paths))
            if engine == "edgetpu" and c.roles and "edgetpu" not in c.uses:
                c.blockers.append(("no model of it has an Edge TPU file (%s): --engine edgetpu would run it all on "
                                   "the CPU" % ", ".join(n.model for n in c.roles), "run it with --engine cpu"))
            for why in [(f.text, f.fix) for f in findings if f.blocks and not f.cell and touches(f, c)] + [
                    m for n in c.roles for m in n.missing]:
                if why not in c.blockers:
                    c.blockers.append(why)
            out.append(c)
    return out


def touches(f: Any, c: Cell) -> bool:
    """Whether finding ``f`` is about cell ``c``: its cell, or an engine the cell's roles run on."""
    if f.cell:
        return tuple(f.cell) == (c.profile, c.engine)
    return bool(f.engine) and f.engine in c.uses


def asked(cfg: Any, profile: str = "", engine: str = "") -> Tuple[str, List[str]]:
    """The profile and the engines the user asks for (the options, else the config's pipeline section)."""
    pipeline = getattr(cfg, "pipeline", None)
    p = profile or getattr(pipeline, "profile", "")
    e = engine or getattr(pipeline, "engine", "auto")
    return p, list(ENGINES) if e == "auto" else [e]


def judge(findings: List[Any], table: List[Cell], profile: str, engines: List[str]) -> int:
    """Set each finding's shown status (note, or FAIL where it blocks all that was asked) and return the exit
    code: 0 when an asked cell runs (or the fake engine was asked), else 1."""
    mine = [c for c in table if c.profile == profile and c.engine in engines]
    ok = "fake" in engines or any(c.runs for c in mine)
    for f in findings:
        if f.status not in ("warn", "fail") or not (f.engine or f.cell):
            continue
        touched = [c for c in mine if touches(f, c)]
        if not touched or (ok and not any(c.runs for c in touched)):
            f.status = "note"  # it stops nothing that was asked for (or only what another engine replaces)
        elif not ok and f.blocks:
            f.status = "fail"
    return 0 if ok else 1


def render(table: List[Cell], profile: str, engines: List[str], code: int) -> List[str]:
    """The table of what runs here and the verdict line."""
    lines = ["what runs here (asked: profile %s on %s; > marks it):" % (
        profile, " or ".join(engines) if len(engines) > 1 else "--engine %s" % engines[0])]
    fixes_shown = set()
    for c in table:
        mark = ">" if c.profile == profile and c.engine in engines else " "
        head = "%s %-14s %-8s" % (mark, c.profile, c.engine)
        if c.runs:
            lines.append("%s yes (%s)" % (head, ", ".join(n.label(c.engine) for n in c.roles)))
            continue
        lines.append("%s no: %s" % (head, "; ".join(t for t, _ in c.blockers)))
        for _, fix in c.blockers:
            if fix and fix not in fixes_shown:
                fixes_shown.add(fix)
                lines.append("%s fix: %s" % (" " * len(head), fix))
    lines.append("  " + FAKE_NOTE)
    if "fake" in engines:
        lines.append("verdict: %s runs on --engine fake (nothing real runs there)" % profile)
    elif code == 0:
        where = [c.engine for c in table if c.profile == profile and c.engine in engines and c.runs]
        lines.append("verdict: %s runs here on %s: python run.py --profile %s%s"
                     % (profile, " and ".join(where), profile, " --engine %s" % where[0] if len(where) == 1 else ""))
    elif not any(c.profile == profile for c in table):
        lines.append("verdict: profile %s is not in the config (profiles: %s)"
                     % (profile, ", ".join(sorted({c.profile for c in table}))))
    else:
        lines.append("verdict: %s runs on none of %s here; the fixes are above" % (profile, ", ".join(engines)))
    return lines
