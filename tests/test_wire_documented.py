"""docs/wire.md is true for what a run sends on its public endpoints (issue 21): every message of a run on
`results` and `metrics` (result, done, eos, metric) decoded as a client in any language would, each field
found in the document's lists, every actor, counter and gauge in the metric table (pipeline/metrics/wire.py,
whose rendering the document holds), and every actor's final snapshot, the metrics hub's last."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Set

import msgspec
import zmq

from edgepipe.bus.messages import SCHEMA_VERSION
from edgepipe.pipeline.metrics.wire import markdown, undocumented

ROOT = Path(__file__).resolve().parents[1]
WIRE = (ROOT / "docs" / "wire.md").read_text(encoding="utf-8")


def _section(heading: str) -> str:
    start = WIRE.index(heading)
    nxt = WIRE.find("\n### ", start + 1)
    return WIRE[start:nxt if nxt > 0 else len(WIRE)]


def _table_fields(text: str) -> Set[str]:
    """The backticked names in the first column of the first table in ``text``."""
    out: Set[str] = set()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for line in rows[2:]:
        cell = line.split("|")[1]
        if not cell.strip().startswith("`"):
            break  # the next table
        out.update(re.findall(r"`([a-z_]+)`", cell))
    return out


def _documented():
    result = _section("### `result`")
    face = result[result.index("A face map:"):]
    return {
        "result": _table_fields(result) | {"kind"},
        "face": _table_fields(face),
        "done": set(re.findall(r"^`([a-z_]+)` \(int\)", _section("### `done`"), re.M)) | {"kind"},
        "eos": _table_fields(_section("### `eos`")) | {"kind"},
        "metric": _table_fields(_section("### `metric`")) | {"kind"},
    }


def test_the_document_holds_the_metric_table():
    assert markdown() in WIRE, "docs/wire.md: paste `python -m edgepipe.pipeline.metrics.wire` between the markers"


def test_every_message_of_a_run_on_the_public_endpoints_is_documented(tmp_path):
    doc = _documented()
    assert doc["result"] >= {"frame_id", "faces", "labels"} and doc["face"] >= {"box", "track"}
    assert doc["done"] == {"frame_id", "kind"} and "final" in doc["metric"]
    env = dict(os.environ, EDGEPIPE_RUN_DIR=str(tmp_path / "runs"))
    conf = tmp_path / "c.toml"
    conf.write_text("[bus]\nmetrics_interval_s = 0.1\n")
    ctx = zmq.Context()
    subs = {}
    try:
        for key in ("results", "metrics"):
            s = ctx.socket(zmq.SUB)
            s.linger = 0
            s.rcvhwm = 0  # no limit: every message of the run stays queued for the checks below
            s.setsockopt(zmq.RECONNECT_IVL, 10)
            s.subscribe(b"")
            s.connect("ipc://%s/default/%s" % (tmp_path / "runs", key))  # before the start (docs/wire.md)
            subs[key] = s
        p = subprocess.run([sys.executable, "run.py", "--engine", "fake", "--source", "synthetic:faces=2,fps=0",
                            "--frames", "30", "--config", str(conf)], cwd=str(ROOT), env=env, capture_output=True,
                           text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        got = {key: [] for key in subs}
        for key, s in subs.items():
            while s.poll(0):  # the run has ended: everything it sent is queued here
                got[key].append(s.recv_multipart())
    finally:
        for s in subs.values():
            s.close()
        ctx.term()
    kinds = {"results": {"result", "done", "eos"}, "metrics": {"metric"}}
    seen, finals, wrong = {"results": set(), "metrics": set()}, [], []
    for key, messages in got.items():
        for frames in messages:
            kind, _, camera = frames[0].decode("ascii").partition("/")  # the topic: KIND/CAMERA/ or KIND
            header = msgspec.msgpack.decode(frames[1])
            assert len(frames) == 2 and len(header) == 4 and header[0] == SCHEMA_VERSION and header[2] is None, (kind, header)
            msg = header[3]
            assert kind in kinds[key] and msg["kind"] == kind
            assert camera == ("" if kind == "metric" else "%s/" % msg.get("camera", "default")), frames[0]
            seen[key].add(kind)
            wrong += ["%s.%s" % (kind, f) for f in set(msg) - doc[kind]]
            if kind == "result":
                for face in msg["faces"]:
                    wrong += ["face.%s" % f for f in set(face) - doc["face"]]
                    assert len(face["box"]) == 5  # [x1, y1, x2, y2, score]
            if kind == "metric":
                wrong += ["%s: %s" % (msg["actor"], w) for w in undocumented(msg)]
                if msg.get("final"):
                    finals.append(msg["actor"])
    assert not wrong, "sent but not in docs/wire.md: %s" % sorted(set(wrong))
    assert seen == kinds
    ids = [msgspec.msgpack.decode(f[1])[3]["frame_id"] for f in got["results"] if f[0] == b"result/default/"]
    assert sorted(ids) == list(range(30))  # connected before the start: the first results too
    actors = {msgspec.msgpack.decode(f[1])[3]["actor"] for f in got["metrics"]}
    assert actors >= {"capture", "encoder", "detector", "fer-0", "fer-1", "aggregator", "recorder", "metrics",
                      "resources"}
    assert sorted(finals) == sorted(actors) and finals[-1] == "metrics"  # each final once, the hub's last
