"""The model files a placed run needs, and the one message that refuses a run when some are missing.

A role on the CPU or an Edge TPU needs its model's file for that engine; a model whose labels are in a
side file (``labels_file``) needs it on every engine, the fake one too. ``require_files`` looks for each
in the model folders and the cache (``models/store/fetch.py``), downloads the missing ones that have a
source when asked to, and raises ``MissingModelFiles`` naming every file still missing, where it comes
from (the manifest's URL or PyPI wheel, or nowhere) and the folder to put it in.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

from edgepipe.models.engines.engine import EngineError
from edgepipe.models.spec import ModelSpec
from edgepipe.models.store.fetch import ENV_PATH, cache_dir, find_local, locate, resolve_file, sources_for
from edgepipe.pipeline.config.sections import ConfigError


class MissingModelFiles(ConfigError):
    """Model files a run needs are neither in a model folder nor downloadable now (one line, no traceback)."""

    user_facing = True


class Missing(NamedTuple):
    role: str
    spec: ModelSpec
    filename: str
    tried: bool  # a download was tried and failed


def is_synthetic(source: str) -> bool:
    return source == "synthetic" or source.startswith("synthetic:")


def needed_files(spec: ModelSpec, engine: str) -> List[str]:
    """The files ``spec`` needs on ``engine``: its model file (none on the fake engine) and its labels file."""
    out = []
    if engine != "fake" and spec.files.get(engine):
        out.append(spec.files[engine])
    if spec.labels_file and not spec.labels:
        out.append(spec.labels_file)
    return out


def file_available(spec: ModelSpec, filename: str, model_paths: Sequence[str] = ()) -> bool:
    """Whether the file is in a model folder or the cache, or has a source to download it from."""
    return locate(spec, filename, model_paths) is not None or bool(sources_for(spec, filename))


def missing_files(placed: Dict[str, ModelSpec], engines: Dict[str, str], model_paths: Sequence[str] = (),
                  fetch: bool = False) -> List[Missing]:
    """The files of each role's model (``placed``) on its engine that are not here. ``fetch``: download the
    ones that have a source now (a failed download leaves the file missing); without it a file with a
    source counts as there (the engine downloads it when it loads)."""
    out = []
    for role, spec in placed.items():
        for name in needed_files(spec, engines[role]):
            if find_local(spec, name, model_paths) is not None:  # checks its sha256: a wrong file is an error
                continue
            sources = sources_for(spec, name)
            if sources and not fetch:
                continue
            if sources:
                try:
                    resolve_file(spec, name, model_paths, fetch=True)
                    continue
                except EngineError:  # each failed source was logged; the message below sums them up
                    pass
            out.append(Missing(role, spec, name, bool(sources)))
    return out


def where_from(spec: ModelSpec, filename: str) -> str:
    """Where a file is published, in words: its URLs or PyPI wheels, or nowhere."""
    said = []
    for src in sources_for(spec, filename):
        if src.get("via") == "url":
            said.append(src["url"])
        elif src.get("via") == "wheel":
            said.append("the PyPI wheel %s %s (%s)" % (src["package"], src["version"], src["member"]))
    return " or ".join(said) if said else "published nowhere: copy it from a machine that has it"


def describe(missing: Sequence[Missing], model_paths: Sequence[str] = (), header: str = "") -> str:
    """The one message: every missing file, where it comes from, the folder to put it in."""
    items = ["%s (%s of model %s): %s%s" % (m.filename, m.role, m.spec.name,
                                            "download failed from " if m.tried else "", where_from(m.spec, m.filename))
             for m in missing]
    folders = "; ".join(str(p) for p in model_paths)
    put = "put %s in %s (the model cache), or in a folder listed in models.paths%s or $%s" % (
        "it" if len(missing) == 1 else "them", cache_dir(), " (%s)" % folders if folders else "", ENV_PATH)
    tried = [m for m in missing if m.tried]
    more = ("; with internet, `python run.py models fetch %s` downloads %s"
            % (" ".join(sorted({m.spec.name for m in tried})), "it" if len(tried) == 1 else "them")) if tried else ""
    return "%smissing model file%s: %s; %s%s" % (header, "" if len(missing) == 1 else "s", "; ".join(items), put, more)


def require_files(placed: Dict[str, ModelSpec], engines: Dict[str, str], model_paths: Sequence[str] = (),
                  fetch: bool = False, header: str = "") -> None:
    """Raise MissingModelFiles when a file the run needs is missing (see ``missing_files``)."""
    missing = missing_files(placed, engines, model_paths, fetch)
    if missing:
        raise MissingModelFiles(describe(missing, model_paths, header))
