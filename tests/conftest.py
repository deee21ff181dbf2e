"""Shared fixtures: a bus that fails the test when a socket is left open."""
from __future__ import annotations

import pytest

from bus.sockets import Bus


@pytest.fixture
def bus():
    """A Bus for one test; fails the test when a socket is left open."""
    b = Bus()
    try:
        yield b
        leaked = b.open_channels()
        assert not leaked, "sockets left open: %s" % leaked
    finally:
        b.close()


@pytest.fixture(autouse=True, scope="session")
def _private_device_locks_and_table(tmp_path_factory):
    """Device claims and the `auto` placement table of this test session, away from the user's."""
    import os

    old = {k: os.environ.get(k) for k in ("EDGEPIPE_DEVICE_LOCKS", "EDGEPIPE_BENCH_TABLE")}
    base = tmp_path_factory.mktemp("edgepipe-state")
    os.environ["EDGEPIPE_DEVICE_LOCKS"] = str(base / "locks")
    os.environ["EDGEPIPE_BENCH_TABLE"] = str(base / "table.json")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
