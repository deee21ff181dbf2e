"""Where a pipeline's run folder is, and how a client finds a running pipeline in any of the places one may be."""
from __future__ import annotations

import os

import pytest

from edgepipe.bus import rundir
from edgepipe.bus.rundir import RunDir, RunDirError, candidate_bases, resolve


def test_a_client_looks_where_the_service_and_the_login_shell_put_their_runs(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEPIPE_RUN_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    bases = candidate_bases()
    assert rundir.SERVICE_BASE in bases  # the systemd service's (install-service sets EDGEPIPE_RUN_DIR to it)
    assert str(tmp_path / "xdg" / "edgepipe") in bases  # a login shell's
    assert any(b.endswith("edgepipe-%d" % os.getuid()) for b in bases)  # no XDG_RUNTIME_DIR at all
    assert len(bases) == len(set(bases))
    monkeypatch.setenv("EDGEPIPE_RUN_DIR", str(tmp_path / "mine"))
    assert candidate_bases() == [str(tmp_path / "mine")]  # set, it says where the pipelines are


def test_resolve_finds_the_one_live_run_in_any_base_and_names_them_all_when_several(tmp_path):
    service, shell = tmp_path / "service", tmp_path / "shell"
    run = RunDir.create(str(service))  # this process's: alive
    try:
        ep = resolve("ipc://{run}/metrics", bases=[str(shell), str(service)])
        assert ep == "ipc://%s/metrics" % run.path
        other = RunDir.create(str(shell))
        try:
            with pytest.raises(RunDirError, match="2 pipelines run"):
                resolve("ipc://{run}/metrics", bases=[str(shell), str(service)])
        finally:
            other.remove()
    finally:
        run.remove()
    with pytest.raises(RunDirError, match="no running pipeline under"):
        resolve("ipc://{run}/metrics", bases=[str(shell), str(service)])
    assert resolve("tcp://127.0.0.1:5590") == "tcp://127.0.0.1:5590"  # a fixed endpoint is left as it is
