"""``python run.py endpoints [--name NAME] [--config PATH]``: where a pipeline's public endpoints are, whether
or not it runs, one line each (``results ENDPOINT``, ``metrics ENDPOINT``), the lines ``run.py`` prints on
stdout when the pipeline is ready (docs/wire.md, "Endpoints").

``ipc://{pipeline}/...`` is in the folder of the pipeline's name: that of the running pipeline of that name
(in any place a pipeline of this user may run, ``bus.rundir.candidate_bases``), else the one a pipeline
started from here would make (``bus.rundir.base_dir``). An endpoint of the config's own (``tcp://``,
``ipc:///PATH``) is printed as it is; one in a run's private folder (``ipc://{run}/...``) is resolved when
that pipeline runs.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Tuple

from edgepipe.bus.rundir import PIPELINE, RunDirError, pipeline_dir, resolve
from edgepipe.pipeline.config.loading import ConfigError, load

PUBLIC = ("results", "metrics")


def public_endpoints(config: Optional[str] = None, name: Optional[str] = None) -> Tuple[Dict[str, str], bool]:
    """The public endpoints of the pipeline named ``name`` (default: the config's ``pipeline.name``), and
    whether a pipeline of that name runs now."""
    cfg = load(config, name=name)
    path, running = pipeline_dir(cfg.pipeline.name)
    out = {}
    for key in PUBLIC:
        ep = getattr(cfg.endpoints, key).replace(PIPELINE, path)
        try:
            ep = resolve(ep)
        except RunDirError:  # {run}: a private folder that exists only while that run lives
            pass
        out[key] = ep
    return out, running


def lines(endpoints: Dict[str, str]) -> List[str]:
    return ["%s %s" % (k, endpoints[k]) for k in PUBLIC]


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="run.py endpoints", description=(
        "print where a pipeline's results and metrics are (whether or not it runs): 'results ENDPOINT' and "
        "'metrics ENDPOINT', the lines run.py prints on stdout when it is ready"))
    ap.add_argument("--name", help="the pipeline's name (pipeline.name; default: the config's, 'default')")
    ap.add_argument("--config", help="a config file overlaid on config.toml beside run.py")
    args = ap.parse_args(argv)
    try:
        endpoints, running = public_endpoints(args.config, args.name)
    except ConfigError as exc:
        print("config error: %s" % exc, file=sys.stderr)
        return 2
    print("\n".join(lines(endpoints)))
    if not running:
        print("(no pipeline of that name runs now; these are where it will publish)", file=sys.stderr)
    return 0
