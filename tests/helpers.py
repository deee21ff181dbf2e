"""Helpers for tests: an async runner that fails on leaked tasks, in-process configs."""
from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Dict

import pytest

from edgepipe.pipeline.config import loading as config

ASSETS = Path(os.environ.get("EDGEPIPE_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def run_async(coro, timeout: float = 60.0):
    """Run a coroutine in a fresh event loop; fail if it leaves tasks behind."""
    async def main():
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            me = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            for t in left:
                t.cancel()
            if left:
                await asyncio.wait(left)
                raise AssertionError("tasks left running: %s" % [t.get_coro() for t in left])
    return asyncio.run(main())


def inproc_config(**sections) -> config.Config:
    """The repository's config with every endpoint in-process (no TCP port) and overrides applied.

    ``sections`` maps a section name to a dict of field values, e.g. fer={"workers": 3}. Tests ask for
    the fake engine and the synthetic source unless they say otherwise (the repository's defaults are
    auto, which depend on the machine). The aggregator's join deadline is far off unless a test sets it:
    a frame leaves partial because of what happened to it, never because a loaded machine was slow.
    """
    cfg = config.load()
    cfg.endpoints.metrics = "inproc://metrics-public"
    cfg.pipeline.engine = "fake"
    cfg.pipeline.source = "synthetic:faces=3,fps=30,size=640x480"
    cfg.endpoints.results = "inproc://results"
    cfg.aggregator.deadline_ms = 600000.0
    for name, values in sections.items():
        section = getattr(cfg, name)
        for key, value in values.items():
            if not hasattr(section, key):
                raise AttributeError("%s.%s" % (name, key))
            setattr(section, key, value)
    return cfg


def wait_pipeline_ready(proc) -> Dict[str, int]:
    """Read ``run.py -v``'s stderr until "pipeline ready"; the pids of the groups that said they are ready.
    Fails the test, with the run's last lines, when it ends before that."""
    pids: Dict[str, int] = {}
    seen = []
    for line in proc.stderr:
        seen.append(line)
        m = re.search(r"group (\S+) ready: pid (\d+)", line)
        if m:
            pids[m.group(1)] = int(m.group(2))
        if "pipeline ready" in line:
            return pids
    proc.wait()
    pytest.fail("pipeline never became ready (exit %s):\n%s" % (proc.returncode, "".join(seen[-30:])))
