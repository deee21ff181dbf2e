"""examples/subscribe.py, a client with nothing but pyzmq and msgpack, against a running pipeline."""
from __future__ import annotations

import ast
import asyncio
import re
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
    results = [line for line in lines if line.startswith("result frame ")]
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
