"""``python run.py models [list|fetch NAME...|verify]``, also ``python -m edgepipe.models.store.cli``.

- ``list``: every model with its task, engines, input and where its files are;
- ``fetch NAME...`` (no name: every model with a download source): fetch into
  the cache and verify the sha256;
- ``verify``: re-hash every file found in the model folders and the cache;
  exit status 1 when one does not match the manifest.

``--path DIR`` (repeatable) adds a model folder, like the config's ``models.paths``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional, Sequence

from edgepipe.models.engines.engine import EngineError
from edgepipe.models.families.discovery import family_of
from edgepipe.models.store import fetch
from edgepipe.models.store.manifest import MODELS, get


def _input(spec) -> str:
    h, w, c = spec.input_shape
    return "%dx%dx%d %s %s" % (h, w, c, spec.input_dtype, spec.color)


def _fakeable(spec) -> bool:
    """Whether the fake engine emulates the model (its family says what to fake)."""
    try:
        return family_of(spec).fake_outputs(spec) is not None
    except EngineError:
        return False


def cmd_list(paths: Sequence[str], out=None) -> int:
    out = out or sys.stdout
    rows = [("name", "task", "engines", "input", "files")]
    for name in sorted(MODELS):
        spec = MODELS[name]
        where = []
        for role, filename in fetch.all_files(spec):
            p = fetch.locate(spec, filename, paths)
            if p is not None:
                state = str(p)
            elif fetch.sources_for(spec, filename):
                state = "not fetched (fetchable)"
            else:
                state = "missing (no source: add its folder to models.paths)"
            where.append("%s: %s" % (role, state))
        fake = _fakeable(spec)
        engines = ",".join((["fake"] if fake else []) + sorted(spec.files))
        rows.append((name, spec.task, engines, _input(spec), "; ".join(where)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        out.write("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] + "\n")
    return 0


def cmd_fetch(names: Sequence[str], paths: Sequence[str], out=None) -> int:
    """Fetch and verify; one progress line per file ([i/n]), the download's own progress on stderr."""
    out = out or sys.stdout
    targets = list(names) or [n for n in sorted(MODELS) if MODELS[n].sources]
    status = 0
    plan = []
    for name in targets:
        try:
            spec = get(name)
        except EngineError as exc:
            out.write("%s: FAILED: %s\n" % (name, exc))
            status = 1
            continue
        plan += [(spec, role, filename) for role, filename in fetch.all_files(spec)]
    for i, (spec, role, filename) in enumerate(plan, 1):
        head = "[%d/%d] %s %s" % (i, len(plan), spec.name, role)
        here = fetch.locate(spec, filename, paths)
        out.write("%s: %s\n" % (head, ("checking %s" % here) if here else
                                    ("fetching %s from %s" % (filename, _source_name(spec, filename)))))
        out.flush()
        try:
            p = fetch.resolve_file(spec, filename, paths, fetch=True)
        except EngineError as exc:
            out.write("%s: FAILED: %s\n" % (head, exc))
            status = 1
            continue
        out.write("%s: %s (sha256 %s)\n" % (head, p, fetch.sha256_file(p)))
    return status


def _source_name(spec, filename: str) -> str:
    srcs = fetch.sources_for(spec, filename)
    if not srcs:
        return "nowhere (no public source)"
    s = srcs[0]
    return ("the PyPI wheel %s==%s" % (s["package"], s["version"])) if s.get("via") == "wheel" else s.get("url", "?")


def cmd_verify(paths: Sequence[str], out=None) -> int:
    out = out or sys.stdout
    status = 0
    seen = 0
    for name in sorted(MODELS):
        spec = MODELS[name]
        for role, filename in fetch.all_files(spec):
            for d in list(fetch.search_dirs(paths)) + [fetch.cache_dir()]:
                p = d / filename
                if not p.is_file():
                    continue
                seen += 1
                actual = fetch.sha256_file(p)
                expected = spec.sha256.get(filename, "")
                if not expected:
                    out.write("UNPINNED  %s %s: %s sha256 %s\n" % (name, role, p, actual))
                elif actual == expected:
                    out.write("OK        %s %s: %s\n" % (name, role, p))
                else:
                    out.write("MISMATCH  %s %s: %s sha256 %s, expected %s\n" % (name, role, p, actual, expected))
                    status = 1
    out.write("%d file(s) checked%s\n" % (seen, ", mismatches found" if status else ""))
    return status


def models_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py models", description="list, fetch and verify model files")
    parser.add_argument("--path", action="append", default=[], help="a model folder (repeatable)")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("list", help="models, engines, inputs and where their files are")
    f = sub.add_parser("fetch", help="fetch and verify models (default: all with a source)")
    f.add_argument("names", nargs="*")
    sub.add_parser("verify", help="re-hash every file found; exit 1 on a mismatch")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.cmd == "fetch":
        return cmd_fetch(args.names, args.path)
    if args.cmd == "verify":
        return cmd_verify(args.path)
    return cmd_list(args.path)


if __name__ == "__main__":
    sys.exit(models_main())
