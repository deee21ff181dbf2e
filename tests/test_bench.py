"""``run.py bench``: the pipeline benchmark end to end (tiny frame counts), the model benchmark on a shared
model, and the note when matplotlib is missing. No timing thresholds: the machines are noisy."""
from __future__ import annotations

import json
import os

import pytest

from edgepipe.pipeline.bench import cases as bench_cases
from edgepipe.pipeline.bench import charts
from edgepipe.pipeline.bench import commands as bench
from edgepipe.pipeline.bench import common as bench_common
from edgepipe.pipeline.bench import report as bench_report
from edgepipe.pipeline.config.loading import load

SHARED_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "assets",
                             "models")


def test_bench_pipeline_quick(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = bench.main(["pipeline", "--engine", "fake", "--quick", "--frames", "8", "--warmup", "2", "--out", str(out),
                     "--no-progress", "--profiles", "fd+fer64"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    data = json.loads((out / "bench_pipeline.json").read_text())

    planned = {c.id for c in bench_cases.plan(engine="fake")}
    got = {c["id"]: c for c in data["cases"]}
    assert set(got) == planned
    assert not data["errors"]
    for cid, c in got.items():
        assert c["fps"] and c["fps"] > 0, cid
        assert c["frames_completed"] > 0, cid
        assert c["frames_captured"] == 8, cid
        assert c["latency_ms"]["p50"] > 0, cid
        assert c["busy_ms_p50"], cid
        if c["kind"] == "pipeline":
            assert c["leaked_sockets"] == [], cid
            assert any(k.startswith("fer-") for k in c["busy_ms_p50"]), cid

    # every comparison of the brief is there
    kinds = {(c["kind"], c["faces"], c["workers"], c["encoder"], c["transport"]) for c in data["cases"]}
    for f in (1, 3, 5):
        for w in (1, 2, 4):
            assert ("pipeline", f, w, "raw", "inproc") in kinds
        assert ("serial", f, None, "raw", None) in kinds
    assert ("pipeline", 3, 2, "jpeg", "inproc") in kinds
    assert ("pipeline", 3, 2, "raw", "ipc") in kinds
    comp = data["comparisons"]
    assert comp["encoder"]["ratio"] and comp["transport"]["ratio"]
    serial = comp["pipeline_vs_serial"]
    assert {(r["faces"], r["encoder"]) for r in serial} == {(1, "raw"), (3, "raw"), (5, "raw"), (3, "jpeg")}
    assert all(r["serial_fps"] > 0 and r["speedup"] > 0 for r in serial)

    # the fake Edge TPU table: one device, auto placement and two devices, each against its bound
    rows = {(r["placement"], r["faces"], r["workers"]): r for r in data["devices"]}
    for f in (1, 3, 5):
        assert ("one", f, 2) in rows and ("auto", f, 2) in rows and ("two", f, 2) in rows
    one, auto, two = rows[("one", 3, 2)], rows[("auto", 1, 2)], rows[("two", 3, 4)]
    assert one["where"] == {"detector": "fake:0", "fer": "fake:0"}
    assert one["bound_fps"] == pytest.approx(1000 / (8.16 + 3 * 6.47), abs=0.1)  # the reference's TPU times
    assert auto["where"] == {"detector": "fake:0", "fer": "cpu"}  # FER64 is faster on the CPU
    assert auto["bound_fps"] == pytest.approx(1000 / 8.16, abs=0.1)
    assert set(two["busy_pct"]) == {"fake:0", "fake:1"} and two["bound_fps"] == pytest.approx(2 * one["bound_fps"], abs=0.2)
    for r in data["devices"]:
        assert r["eta"] > 0 and r["latency_ms"]["p99"] > 0, r
    assert "FPS/B" in printed and "fake Edge TPU" in printed
    # whole-system memory, as a user runs the profile: alone and with the TPU actors in a child Python
    mem = {r["layout"]: r for r in data["memory"]}
    assert set(mem) == {"one process", "dual-Python"} and not any("error" in r for r in mem.values()), mem
    assert set(mem["dual-Python"]["by_process"]) == {"main", "tpu"}
    assert mem["dual-Python"]["rss_mb"] == pytest.approx(sum(mem["dual-Python"]["by_process"].values()), abs=0.2)

    m = data["machine"]
    for key in ("cpu_count", "python", "platform", "date", "git_commit"):
        assert key in m
    assert "times" in printed and "(a) FER pool" in printed
    assert not os.path.exists(bench_cases.ipc_dir()), "ipc socket folder left behind"
    if charts.available():
        for name in ("fer", "encoder", "transport", "serial"):
            assert (out / ("bench_pipeline_%s.png" % name)).stat().st_size > 1000


def test_no_matplotlib_note(monkeypatch, capsys):
    monkeypatch.setattr(charts, "available", lambda: False)
    drawn = []
    assert bench_common.with_charts(lambda: drawn.append(1) or ["x.png"]) == []
    assert not drawn
    assert "pip install matplotlib" in capsys.readouterr().out


def test_bench_models_on_a_shared_model(tmp_path, monkeypatch, capsys):
    if not os.path.isdir(SHARED_MODELS):
        pytest.skip("shared model folder %s is absent" % SHARED_MODELS)
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    monkeypatch.setenv("EDGEPIPE_MODEL_PATH", SHARED_MODELS)
    out = tmp_path / "models"
    rc = bench.main(["models", "--models", "retinaface", "--runs", "3", "--warmup", "1", "--threads", "1",
                     "--engines", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    data = json.loads((out / "bench_models.json").read_text())
    (row,) = data["rows"]
    assert row["model"] == "retinaface" and row["cpu"]["1"]["fps"] > 0
    assert "retinaface" in printed
    if charts.available():
        assert (out / "bench_models.png").stat().st_size > 1000
    # the per-machine table that `auto` placement reads
    from edgepipe.pipeline.plan.placement import load_table
    assert load_table()["retinaface"]["cpu_ms"] == row["cpu"]["1"]["median_ms"]


def test_pipeline_charts_skip_a_comparison_whose_runs_failed(tmp_path):
    if not charts.available():
        pytest.skip("matplotlib is not installed")
    cases = bench_cases.plan(faces=(3,), workers=(2,), engine="fake", placements=("one",))
    failed = {c.id: "ActorFailed: fer-0 did not start" for c in cases if c.encoder == "jpeg" or c.transport == "ipc"}
    runs = {c.id: [] if c.id in failed else [{"fps": 10.0, "latency_ms": {"p50": 1.0, "p99": 2.0}, "drop_rate": 0.0}]
            for c in cases}
    result = bench_report.report(cases, runs, failed, engine="cpu", frames=1, warmup=0, repeats=1,
                                 profile="fd+fer64", base_cfg=load(None), elapsed=0.0)
    assert result["comparisons"]["encoder"]["other_fps"] is None  # the failed side is in the report
    written = {os.path.basename(p) for p in charts.pipeline_charts(result, str(tmp_path))}
    assert "bench_pipeline_fer.png" in written
    assert not written & {"bench_pipeline_encoder.png", "bench_pipeline_transport.png"}
