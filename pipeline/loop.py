"""The event loop and logging set-up every command shares (``run.py`` and ``run.py bench``)."""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def event_loop_run(coro) -> Any:
    try:
        import uvloop  # type: ignore[import-not-found]  # optional: the stdlib loop without it
    except ImportError:
        return asyncio.run(coro)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # novermin (3.11+ only)
            return runner.run(coro)
    uvloop.install()
    return asyncio.run(coro)
