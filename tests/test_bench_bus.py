"""``run.py bench bus`` end to end with tiny counts: the structure of what it prints and writes, not speed."""
from __future__ import annotations

import json

from edgepipe.pipeline.bench import commands as bench


def test_bench_bus_quick(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = bench.main(["bus", "--quick", "--codec", "50", "--frames", "3", "--headers", "5", "--repeats", "2",
                     "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    data = json.loads((out / "bench_bus.json").read_text())

    assert data["counts"] == {"codec": 50, "frames": 3, "headers": 5, "repeats": 2}
    assert data["machine"]["cpus_usable"] >= 1 and data["machine"]["versions"]["msgspec"]
    for name in ("detections_5_faces", "result_5_faces"):
        c = data["codec"][name]
        assert c["encode_us"] > 0 and c["decode_us"] > 0 and c["total_us"] > 0
        assert c["messages"] == 50
        assert c["header_bytes"] > 0

    r = data["relay"]
    assert r["decode_encode_us"] > 0 and r["relay_us"] > 0 and r["ratio"] > 0 and r["messages"] == 50
    assert "metrics hub, one" in printed

    hops = {(h["payload"], h["transport"], h["mode"]): h for h in data["hops"]}
    assert set(hops) == {(p, t, mode) for p in ("frame", "header") for t in ("inproc", "ipc", "tcp")
                         for mode in ("stream", "pingpong")}
    for key, h in hops.items():
        assert h["project_us"] > 0 and h["raw_us"] > 0 and h["ratio"] > 0 and h["ratio_best"] > 0, key
        assert len(h["project_runs_us"]) == len(h["raw_runs_us"]) == 2, key
        assert h["messages"] == (3 if h["payload"] == "frame" else 5), key
    assert hops[("frame", "tcp", "stream")]["bytes"] > 640 * 480 * 3  # the image and its header

    goals = data["goals"]
    assert goals["codec_us"]["goal"] == 10.0 and isinstance(goals["codec_us"]["met"], bool)
    assert set(goals["frame_hop_ratio"]) == {"stream", "pingpong"}
    # the printed table has every row and both goals
    assert printed.count(" inproc ") == 4 and printed.count(" tcp ") == 4
    assert "goal: 5-face header encode + decode <= 10 us" in printed
    assert "goal: a frame hop (stream)" in printed and "wrote %s" % (out / "bench_bus.json") in printed
