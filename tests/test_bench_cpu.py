"""``run.py bench pipeline --engine cpu``: the pipeline and the serial two-process loop on the same real frames.

Structure only (a few frames): both sides ran on the same frames, ratios and faces per frame are recorded,
the back-end process exited and left no socket file behind. No timing thresholds: the machines are noisy."""
from __future__ import annotations

import json
import os

import pytest
from helpers import ASSETS

from edgepipe.pipeline.bench import commands as bench
from edgepipe.pipeline.bench.cpu import compare as bench_cpu

IMAGES = ASSETS / "images"


def _why_skip() -> str:
    if not IMAGES.is_dir():
        return "test assets not found at %s" % ASSETS
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        return "ai-edge-litert is not installed (the CPU engine)"
    from edgepipe.models.store import manifest
    from edgepipe.models.store.fetch import file_for, find_local

    for name in ("blazeface-full", "fer64"):
        spec = manifest.get(name)
        if find_local(spec, file_for(spec, "cpu"), [str(ASSETS / "models")]) is None:
            return "model %s not in the cache: python run.py models fetch blazeface-full fer64" % name
    return ""


needs_real = pytest.mark.skipif(bool(_why_skip()), reason=_why_skip() or "-")


@needs_real
def test_bench_cpu_quick_runs_both_sides_on_the_same_frames(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = bench.main(["pipeline", "--engine", "cpu", "--quick", "--frames", "4", "--warmup", "1",
                     "--images", str(IMAGES), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    data = json.loads((out / bench_cpu.OUT_NAME).read_text())
    assert data["machine"]["cpus_usable"] and data["machine"]["python"]
    assert not data["errors"]
    assert data["settings"]["models"] == {"detector": "blazeface-full", "fer": "fer64"}

    sets = data["frame_sets"]
    assert sets["seed640"]["size"] == [640, 480]
    assert set(sets) == {"seed640", "multi_face", "faces5"}
    for row in data["pipeline_vs_serial"]:
        name = row["frames"]
        assert row["same_frames"], name
        assert row["ratio"] and row["ratio"] > 0, name
        assert row["pipeline_fps"] > 0 and row["serial_fps"] > 0, name
        assert row["pipeline_faces_per_frame"] is not None and row["serial_faces_per_frame"] is not None
        assert row["serial_in_flight"] == 1
        assert row["ratio_vs_in_memory"] and row["serial_in_memory_faces_per_frame"] is not None, name
        p = data["runs"]["pipeline:" + name]
        s = data["runs"]["serial:" + name] + data["runs"]["serial_mem:" + name]
        for r in p:
            assert r["frames_captured"] == 4 and r["leaked_sockets"] == [] and r["drained"], name
            assert r["faces_frames"] == r["frames_completed"] + r["frames_partial"] > 0, name
        for r in s:
            assert r["frames"] == 4, name
            # both of its processes' CPU time over the timed frames
            assert r["front_core_ms_per_frame"] > 0 and r["back_core_ms_per_frame"] > 0, name
            assert r["core_ms_per_frame"] == pytest.approx(r["front_core_ms_per_frame"]
                                                           + r["back_core_ms_per_frame"], abs=0.01), name
            assert r["frame_digests"] == [sets[name]["digest"]], name  # the pipeline's source's frame
            assert r["backend_exit_code"] == 0 and not r["ipc_dir_left"], name  # its ipc folder is gone
            assert r["endpoint_kind"] == "ipc" and r["in_flight"] == 1
            pid = r["backend"]["pid"]
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # the back end is gone (and reaped)
    assert {r["frames"] for r in data["pipeline_vs_serial"]} == {"seed640", "multi_face"}
    pool = data["fer_pool"]
    assert pool["workers"] == [1, 2] and pool["ratio"] and all(pool["faces_per_s"])
    assert all(f is not None for f in pool["faces_per_frame"])
    stage = pool["stage_only"]
    assert stage["ratio"] and all(stage["faces_per_s"]) and stage["faces_per_frame"] >= 1
    for w in (1, 2):
        for r in data["runs"]["ferstage:faces5:w%d" % w]:
            assert r["errors"] == 0 and r["leaked_sockets"] == []
            assert sum(r["per_worker"].values()) == r["faces"] == 4 * stage["faces_per_frame"]
    procs = pool["stage_processes"]
    assert procs["ratio"] and all(procs["faces_per_s"]) and procs["faces_per_frame"] == stage["faces_per_frame"]
    for w in (1, 2):
        for r in data["runs"]["ferprocs:faces5:w%d" % w]:
            assert r["errors"] == 0 and r["leaked_sockets"] == [] and r["depth"] == 1
            assert sum(r["per_worker"].values()) == r["faces"] == 4 * procs["faces_per_frame"]
            # a child process per worker, each said ready, sent its final report and exited cleanly
            assert sorted(r["processes"]) == ["fer-%d" % i for i in range(w)]
            pids = {p["pid"] for p in r["processes"].values()}
            assert len(pids) == w and os.getpid() not in pids
            for name, p in r["processes"].items():
                assert p["exit_code"] == 0 and p["final_report"] == [name]
                with pytest.raises(ProcessLookupError):
                    os.kill(p["pid"], 0)
    assert "pipeline" in printed and "serial" in printed and "FER pool" in printed and "FER stage" in printed
    assert "FER stage in processes" in printed
    pp = pool["pipeline_processes"]
    assert pp["ratio"] and all(pp["faces_per_s"]) and pp["vs_one_worker_in_process"]
    for w in (1, 2):
        for r in data["runs"]["poolprocs:faces5:w%d" % w]:
            assert r["processes"] == ["main"] + ["fer-%d" % i for i in range(w)]
            assert r["frames_captured"] == 4 and r["unaccounted"] == 0 and r["leaked_sockets"] == []
            assert r["faces_frames"] == r["frames_completed"] + r["frames_partial"] > 0
    assert "FER pool in processes" in printed
    assert not list(tmp_path.glob("**/*.ipc"))


@needs_real
def test_serial_loop_over_tcp_closes_cleanly():
    from edgepipe.pipeline.bench.cpu.serial_loop import SerialLoop

    loop = SerialLoop("blazeface-short", "fer64", transport="tcp", model_paths=[str(ASSETS / "models")])
    try:
        loop.start()
        r = loop.run(str(IMAGES / "single_face.jpg"), 2)
    finally:
        loop.close()
    assert r["frames"] == 2 and r["faces_per_frame"] == 1.0 and r["endpoint_kind"] == "tcp"
    assert loop.exit_code == 0 and loop.sock is None


def test_missing_images_folder_is_a_clear_error(tmp_path, capsys):
    rc = bench.main(["pipeline", "--engine", "cpu", "--quick", "--images", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--images" in err and "does not exist" in err
