"""``run.py bench cameras``: several cameras in one pipeline, end to end at the smallest size, the goals judged
on canned numbers and the table (the CPU meter's tests: test_bench_cpu_cost.py). No speed is asserted: the
machines are noisy."""
from __future__ import annotations

import json

import pytest
from test_bench_cpu import needs_real

from edgepipe.models.engines.engine import EngineError
from edgepipe.pipeline.bench import commands as bench
from edgepipe.pipeline.bench.cameras import goals


def _accounted(cams):
    for name, c in cams.items():
        assert c["frames_captured"] > 0, name
        assert c["frames_captured"] == c["frames_completed"] + c["frames_partial"] + c["frames_dropped"], (name, c)
        assert c["unaccounted"] == 0, (name, c)


def test_smallest_fake_run_writes_every_field_and_accounts_for_every_camera(tmp_path, capsys):
    rc = bench.main(["cameras", "--cameras", "2", "--placements", "one", "--cpu-cameras", "0", "--frames", "15",
                     "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads((tmp_path / "bench_cameras.json").read_text())
    assert data["machine"]["cpus_usable"] and "load_avg" in data["machine"] and "git_commit" in data["machine"]
    assert data["errors"] == {} and data["cpu"] == {}
    rows = data["fake"]["rows"]
    assert [(r["placement"], r["cameras"]) for r in rows] == [("one", 1), ("one", 2)]
    for r in rows:
        for key in ("fps", "fps_min", "fps_max", "bound_fps", "total_over_bound", "slowest_over_fastest",
                    "p50_ms_max", "p99_ms_max", "p99_over_single", "busy_pct", "cpu_pct", "core_ms_per_frame",
                    "lost", "wrong_expressions", "goals", "camera_fps"):
            assert key in r, key
        assert len(r["camera_fps"]) == r["cameras"] == len(r["cameras_detail"])
        _accounted(r["cameras_detail"])
        assert r["lost"] == 0 and r["wrong_expressions"] == 0  # the fake FER reads the synthetic truth
        assert r["captured"] == 15 * r["cameras"] and r["core_ms_per_frame"] > 0 and r["cpu_pct"] > 0
        assert set(r["busy_pct"]) == {"fake:0"} and r["bound_fps"] > 0
        assert {g["goal"] for g in r["goals"]} >= {"nothing lost", "0 wrong expressions"}
    assert "placement  cams  FPS min" in out and "wrote %s" % (tmp_path / "bench_cameras.json") in out


def row(placement, cameras, fps_cams, bound, p99, lost=0, wrong=0):
    return {"placement": placement, "cameras": cameras, "offered_fps": 30.0 * cameras, "fps": sum(fps_cams),
            "camera_fps": {"cam%d" % (i + 1): v for i, v in enumerate(fps_cams)}, "fps_min": min(fps_cams),
            "fps_max": max(fps_cams), "bound_fps": bound, "total_over_bound": round(sum(fps_cams) / bound, 3),
            "slowest_over_fastest": round(min(fps_cams) / max(fps_cams), 3), "p50_ms_max": p99 / 2,
            "p99_ms_max": p99, "busy_pct": {"fake:0": 80.0}, "cpu_pct": 40.0, "core_ms_per_frame": 6.0,
            "dropped": 0, "lost": lost, "wrong_expressions": wrong, "fer_engine": "fake"}


def _met(r):
    return {g["goal"].split(" ")[0]: g["met"] for g in r["goals"]}


def test_goals_on_canned_numbers():
    rows = [row("one", 1, [30.0], 68.4, 20.0), row("one", 2, [29.5, 29.2], 68.4, 29.0),
            row("one", 3, [22.0, 21.0, 20.0], 68.4, 90.0, lost=1),
            row("auto", 4, [29.5, 29.0, 25.0, 29.9], 122.5, 40.0),
            row("two", 1, [30.0], 136.7, 20.0), row("two", 4, [29.9, 28.5, 30.0, 30.0], 136.7, 29.0, wrong=2)]
    goals.judge_fake(rows)
    one1, one2, one3, auto4, two1, two4 = rows
    assert _met(one2) == {"each": True, "p99": True, "nothing": True, "0": True} and one2["under_capacity"]
    assert one2["p99_over_single"] == 1.45
    # 3 cameras over the bound: total 63 >= 0.9 x 68.4, fair 20/22 = 0.91; one frame lost
    assert not one3["under_capacity"] and _met(one3) == {"total": True, "slowest": True, "nothing": False, "0": True}
    assert [g["goal"] for g in one3["goals"]][0] == "total >= 0.9 x 68.4"
    # 4 cameras with auto: 120 FPS offered against a 122.5 bound is over capacity; the target is 0.9 x 120
    assert [g["goal"] for g in auto4["goals"]][0] == "total >= 0.9 x 120.0"
    assert _met(auto4)["total"] is True and _met(auto4)["slowest"] is False  # 113.4 >= 108; 25 / 29.9 = 0.84
    assert _met(two4) == {"each": False, "p99": True, "nothing": True, "0": False}
    assert goals.verdict(one2) == "met" and goals.verdict(two4).startswith("MISSED: each >= 29 FPS (28.5)")
    assert one1["goals"][0]["met"] and two1["p99_over_single"] == 1.0


def test_cpu_cost_is_judged_per_round_against_the_serial_loop():
    runs = [dict(row("cpu", 2, [24.0, 23.0], 1.0, 40.0), round=0, core_ms_per_frame=8.0),
            dict(row("cpu", 2, [24.0, 20.0], 1.0, 40.0), round=1, core_ms_per_frame=9.0)]
    serial = [{"round": 0, "core_ms_per_frame": 10.0}, {"round": 1, "core_ms_per_frame": 10.0}]
    assert goals.cost_ratios(runs, serial) == [0.8, 0.9]
    merged = goals.merge_cpu(runs, serial)
    assert merged["vs_serial"] == 0.85 and merged["serial_core_ms_per_frame"] == 10.0
    assert merged["fps_runs"] == [47.0, 44.0] and merged["fps"] == 44.0  # the median run: the lower of two
    goals.judge_cpu([merged], 23.976)
    assert merged["served"] == 1 and merged["goals"][0] == {"goal": "core-ms <= 0.85x serial", "met": True,
                                                             "value": "x0.850"}


def test_the_table_renders_every_row_with_its_verdict():
    fake = [row("one", 1, [30.0], 68.4, 20.0), row("one", 3, [20.0, 20.0, 10.0], 68.4, 80.0)]
    goals.judge_fake(fake)
    cpu = [dict(row("cpu", 1, [24.0], 1.0, 30.0), serial_core_ms_per_frame=7.5, vs_serial=0.8, faces_per_frame=1.0)]
    goals.judge_cpu(cpu, 23.976)
    result = {"machine": {"cpu_model": "Test CPU", "machine": "x86_64", "cpus_usable": 2, "python": "3.11",
                          "load_avg": [1.0, 1.0, 1.0], "git_commit": "abcdef0123456"},
              "fake": {"profile": "fd+fer64", "camera_fps": 30, "frames": 90, "repeats": 1, "rows": fake},
              "cpu": {"profile": "fd+fer64", "models": ["blazeface-full", "fer64"], "clip_fps": 23.976,
                      "frames": 72, "repeats": 1, "serial_faces_per_frame": 1.0, "rows": cpu},
              "errors": {"cpu:2": "RuntimeError: boom"}}
    text = goals.render(result)
    assert "machine: Test CPU, x86_64 (2 CPUs usable)" in text and "commit abcdef0123" in text
    lines = text.splitlines()
    one3 = next(ln for ln in lines if ln.startswith("one        3"))
    assert "50.0" in one3 and "MISSED: total >= 0.9 x 68.4 (50.0); slowest >= 0.9x fastest (0.500)" in one3
    assert next(ln for ln in lines if ln.startswith("one        1")).endswith("met")
    assert any(ln.startswith("1     1/1") and "x0.80" in ln and ln.endswith("met") for ln in lines)
    assert "the clip's 23.98 FPS" in text and "failed: cpu:2: RuntimeError: boom" in text


@pytest.mark.parametrize("argv, says", [(["--placements", "one,three"], "--placements: three"),
                                        (["--frames", "0"], "--frames must be at least 1"),
                                        (["--cpu-cameras", "-1"], "--cpu-cameras must be at least 0")])
def test_bad_options_are_one_line(argv, says, tmp_path, capsys):
    assert bench.main(["cameras", "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and len(err.splitlines()) == 1


@needs_real
def test_smallest_cpu_run_measures_the_pipeline_and_the_serial_loop_on_the_demo_clip(tmp_path, capsys):
    try:
        from edgepipe.actors.sources.demo import demo_path
        demo_path()
    except EngineError as exc:
        pytest.skip("the demo clip is not here: %s" % exc)
    rc = bench.main(["cameras", "--placements", "", "--cpu-cameras", "1", "--cpu-frames", "8", "--repeats", "1",
                     "--no-progress", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().out
    cpu = json.loads((tmp_path / "bench_cameras.json").read_text())["cpu"]
    assert cpu["clip_fps"] and cpu["models"] == ["blazeface-full", "fer64"]
    (r,) = cpu["rows"]
    _accounted(r["cameras_detail"])
    assert r["cameras"] == 1 and r["core_ms_per_frame"] > 0 and r["serial_core_ms_per_frame"] > 0
    assert r["vs_serial"] and r["vs_serial_runs"] and "served" in r
    (s,) = cpu["serial_runs"]
    assert s["frames"] == 8 and s["faces_per_frame"] > 0 and s["round"] == 0
