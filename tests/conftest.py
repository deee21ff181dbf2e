"""Shared fixtures: a bus that fails the test when a socket is left open."""
from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import configuration, settings

from bus.sockets import Bus

# no example database written into the repository: every run starts from the tests' own examples
settings.register_profile("edgepipe", database=None)
settings.load_profile("edgepipe")
# and its caches (.hypothesis/constants, filled as the test modules load) in a temporary folder, removed at the end
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="edgepipe-hypothesis-")
configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config):
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


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
