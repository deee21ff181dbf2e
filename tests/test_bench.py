"""``run.py bench``: the pipeline benchmark end to end (tiny frame counts), the model benchmark on a shared
model, and the note when matplotlib is missing. No timing thresholds: the machines are noisy."""
from __future__ import annotations

import json
import os

import pytest

from pipeline import bench, charts

SHARED_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "assets",
                             "models")


def test_bench_pipeline_quick(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = bench.main(["pipeline", "--quick", "--frames", "8", "--warmup", "2", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    data = json.loads((out / "bench_pipeline.json").read_text())

    planned = {c.id for c in bench.plan()}
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

    m = data["machine"]
    for key in ("cpu_count", "python", "platform", "date", "git_commit"):
        assert key in m
    assert "times" in printed and "(a) FER pool" in printed
    assert not os.path.exists(bench.ipc_dir()), "ipc socket folder left behind"
    if charts.available():
        for name in ("fer", "encoder", "transport", "serial"):
            assert (out / ("bench_pipeline_%s.png" % name)).stat().st_size > 1000


def test_no_matplotlib_note(monkeypatch, capsys):
    monkeypatch.setattr(charts, "available", lambda: False)
    drawn = []
    assert bench._charts(lambda: drawn.append(1) or ["x.png"]) == []
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
