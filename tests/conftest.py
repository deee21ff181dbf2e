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
