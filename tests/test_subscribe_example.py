"""examples/subscribe.py, a client with nothing but pyzmq and msgpack, against a running pipeline."""
from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import inproc_config, run_async

from edgepipe.pipeline.runner import RunOptions, run

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "subscribe.py"


def test_subscribe_example_imports_only_pyzmq_msgpack_and_the_standard_library():
    tree = ast.parse(SCRIPT.read_text())
    names = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert names - set(sys.stdlib_module_names) == {"zmq", "msgpack"}


def test_subscribe_example_prints_results_and_metrics(tmp_path):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=30"}, bus={"metrics_interval_s": 0.2})
    cfg.endpoints.results = "ipc://%s" % (tmp_path / "results")
    cfg.endpoints.metrics = "ipc://%s" % (tmp_path / "metrics")
    got = {}

    async def main():
        stop, ready = asyncio.Event(), asyncio.Event()
        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=100000), stop, on_ready=lambda p: ready.set()))
        try:
            await ready.wait()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SCRIPT), "--results", cfg.endpoints.results, "--metrics", cfg.endpoints.metrics,
                "--count", "5", "--timeout", "60", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            got.update(rc=proc.returncode, out=out.decode(), err=err.decode())
        finally:
            stop.set()
            got["summary"] = await runner

    run_async(main(), timeout=120)
    assert got["rc"] == 0, got["err"]
    lines = got["out"].splitlines()
    assert lines[0].startswith("listening: results at ipc://")
    results = [line for line in lines if line.startswith("result camera default frame ")]
    metrics = [line for line in lines if line.startswith("metric ")]
    assert len(results) >= 5 and len(metrics) >= 5
    # the synthetic source draws two faces; the fake FER labels them
    assert any("2 face(s) [" in line and " track " in line for line in results), results
    actors = {"capture", "encoder", "detector", "fer-0", "fer-1", "aggregator", "recorder", "resources", "metrics"}
    for line in metrics:
        m = re.match(r"metric ([a-z0-9-]+): [0-9.]+ fps, busy [0-9]+%, in [0-9]+, out [0-9]+, dropped [0-9]+, rejected 0",
                     line)
        assert m and m.group(1) in actors, line
    assert got["summary"]["leaked_sockets"] == []


def test_subscribe_example_started_first_finds_the_pipeline_by_name_and_gets_frame_0(tmp_path):
    env = dict(os.environ, EDGEPIPE_RUN_DIR=str(tmp_path / "runs"))
    client = subprocess.Popen([sys.executable, str(SCRIPT), "--name", "cam", "--timeout", "120"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().startswith("listening: results at ipc://%s/cam/results" % (tmp_path / "runs"))
        p = subprocess.run([sys.executable, "run.py", "--engine", "fake", "--source", "synthetic:faces=1,fps=0",
                            "--frames", "4", "--name", "cam"], cwd=str(SCRIPT.parents[1]), env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        out, err = client.communicate(timeout=120)  # it ends at the results' eos
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0, err
    results = [line for line in out.splitlines() if line.startswith("result ")]
    assert [r.split(":")[0] for r in results] == ["result camera default frame %d" % i for i in range(4)]
    assert "end of stream: aggregator sent 4, last frame 3 (camera default)" in out
