"""One camera's results by subscription (issue 21): a message that names a camera carries it in its topic,
frame 0 = KIND/CAMERA/, so that a subscriber takes one camera's messages by subscription alone; a subscriber
of the kind alone still gets every camera's; camera names that are prefixes of each other (a, ab) never mix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import zmq
from helpers import run_async

from edgepipe.bus import messages as m
from edgepipe.bus.channel import MAX_CAMERA_TOPICS
from edgepipe.bus.codec import Codec, DecodeError, encode, topic
from edgepipe.bus.sockets import MAX_SUBSCRIPTION, BusError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "subscribe.py"
FRAMES = 12  # per camera


def result(camera: str, frame_id: int = 1) -> m.Result:
    return m.Result(frame_id, 1.0, 2.0, 64, 48, [], False, True, camera=camera)


def test_the_topic_names_the_kind_and_the_camera_and_the_codec_checks_both():
    assert topic("result", "a") == "result/a/" and topic("eos", "") == "eos//" and topic("result") == "result"
    assert topic("metric", "a") == "metric"  # a kind without a camera: the kind alone
    with pytest.raises(ValueError):
        topic("result", "a/b")
    assert encode(result("ab"))[0] == b"result/ab/" and encode(m.Done(3))[0] == b"done/default/"
    assert encode(m.Eos("aggregator", 3, 8, camera=""))[0] == b"eos//"
    assert encode(m.Metric("x", 1, 1.0))[0] == b"metric"
    header = encode(result("a"), 1)[1]
    codec = Codec()
    assert codec.decode([b"result/a/", header]).camera == "a"
    refused = {b"result/ab/": "wrong_camera",  # another camera than the header's
               b"result/default/": "wrong_camera", b"result": "wrong_camera", b"result/a": "wrong_camera",
               b"result/a/x/": "wrong_camera", b"result/a-b/": "wrong_camera", b"result//": "wrong_camera",
               b"result/" + b"a" * 33 + b"/": "wrong_camera", b"done/a/": "wrong_kind", b"resul/a/": "unknown_kind"}
    for frame0, reason in refused.items():
        with pytest.raises(DecodeError) as err:
            codec.decode([frame0, header])
        assert err.value.reason == reason, (frame0, err.value)
    with pytest.raises(DecodeError) as err:  # a kind without a camera names none
        codec.decode([b"metric/a/", encode(m.Metric("x", 1, 1.0))[1]])
    assert err.value.reason == "wrong_camera"


def test_each_camera_is_numbered_apart_so_a_camera_subscriber_sees_no_gap(bus):
    async def main():
        pub = bus.pub("inproc://topics", hwm=100, name="pub")
        every = bus.sub("inproc://topics", hwm=100, name="every", topics=("result",))
        only_a = bus.sub("inproc://topics", hwm=100, name="a", topics=(topic("result", "a"),))
        try:
            await pub.wait_subscribers(2)
            sent = [result(cam, i) for i in range(5) for cam in ("a", "ab", "b")]
            for r in sent:
                await pub.send(r)
            got_every = [await every.recv() for _ in sent]
            got_a = [await only_a.recv() for _ in range(5)]
            await pub.send(result("a", 99))  # a marker: the next one a's subscriber gets, so none of ab's or b's
            got_a.append(await only_a.recv())  # was queued for it
        finally:
            for ch in (pub, every, only_a):
                ch.close()
        return sent, got_every, got_a, pub, every, only_a
    sent, got_every, got_a, pub, every, only_a = run_async(main())
    assert [(r.camera, r.frame_id) for r in got_a] == [("a", i) for i in range(5)] + [("a", 99)]
    assert [(r.camera, r.frame_id) for r in got_every] == [(r.camera, r.frame_id) for r in sent]
    assert only_a.lost == {} and every.lost == {}  # numbered per camera: no gap in either
    assert pub.sent("result") == 16 and pub.sent("result", "a") == 6
    assert every.seen("result") == 15 and only_a.seen("result") == 6


def test_a_publisher_takes_camera_topics_and_refuses_the_rest(bus):
    async def main():
        pub = bus.pub("inproc://camsubs", hwm=100, name="pub")
        raw = bus.ctx.socket(zmq.SUB)
        raw.linger = 0
        try:
            raw.connect("inproc://camsubs")
            good = (b"result/a/", b"eos//", b"eos/ab/", b"res", b"expression/" + b"z" * 32 + b"/")
            bad = (b"result/a", b"result/", b"result/a/b/", b"result/a-b/", b"metric/a/", b"result/" + b"z" * 33 + b"/",
                   b"nope/a/")
            for t in bad + good:  # in this order: once the good ones are in, the bad ones were read before them
                raw.subscribe(t)
            assert all(len(t) + 1 <= MAX_SUBSCRIPTION for t in good)
            await pub.wait_subscribers(len(good))
            assert pub.rejected == {"bad_subscription": len(bad)}
            await pub.send(result("ab"))
            await pub.send(result("a"))
            await pub.send(m.Eos("aggregator", 1, 2, camera=""))
            frames = [await raw.recv_multipart() for _ in range(3)]
            assert [f[0] for f in frames] == [b"result/ab/", b"result/a/", b"eos//"]  # "res" takes both results
        finally:
            raw.close()
            pub.close()
    run_async(main())


def test_the_camera_topics_a_publisher_holds_are_bounded(bus):
    async def main():
        pub = bus.pub("inproc://many", hwm=100, name="pub")
        raw = bus.ctx.socket(zmq.SUB)
        raw.linger = 0
        try:
            raw.connect("inproc://many")
            n = MAX_CAMERA_TOPICS + 50
            for i in range(n):
                raw.subscribe(b"result/c%d/" % i)
            raw.subscribe(b"result")  # a marker after them: once it is in, every one before it was read
            await pub.wait_subscribers(MAX_CAMERA_TOPICS + 1)
            assert pub.rejected == {"bad_subscription": 50} and len(pub._camera_topics) == MAX_CAMERA_TOPICS
            raw.unsubscribe(b"result/c0/")  # a cancel frees its place
            raw.subscribe(b"result/late/")
            raw.subscribe(b"resul")  # the next marker
            await pub.wait_subscribers(MAX_CAMERA_TOPICS + 2)
            assert b"result/late/" in pub._camera_topics and b"result/c0/" not in pub._camera_topics
            assert pub.rejected == {"bad_subscription": 50}
        finally:
            raw.close()
            pub.close()
    run_async(main())


def test_a_subscriber_names_kinds_or_camera_topics_only(bus):
    for bad in ("result/a", "result/a-b/", "metric/a/", "bogus"):
        with pytest.raises(BusError, match="unknown topic"):
            bus.sub("inproc://x", hwm=10, name="s", topics=(bad,))
    bus.sub("inproc://x", hwm=10, name="s", topics=("result/a/", "eos//", "result")).close()


def test_one_cameras_subscription_on_the_public_results_gets_all_of_its_results_and_no_other(tmp_path):
    """A run with cameras a and ab: a plain SUB to result/a/ (and the ends of stream of a) gets every result of
    a and none of ab; examples/subscribe.py --camera a prints them, all of them, and nothing of ab."""
    runs = tmp_path / "runs"
    env = dict(os.environ, EDGEPIPE_RUN_DIR=str(runs))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = 0  # every message of the run stays queued for the checks below
    sub.setsockopt(zmq.RECONNECT_IVL, 10)
    for t in ("result/a/", "eos/a/", "eos//"):
        sub.subscribe(t.encode())
    sub.connect("ipc://%s/cams/results" % runs)  # before the start (docs/wire.md)
    client = subprocess.Popen([sys.executable, str(SCRIPT), "--name", "cams", "--camera", "a", "--timeout", "120"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    summary = tmp_path / "summary.json"
    try:
        assert client.stdout.readline().startswith("listening: results at ipc://%s/cams/results" % runs)
        p = subprocess.run([sys.executable, "run.py", "--engine", "fake", "--name", "cams", "--frames", str(FRAMES),
                            "--camera", "a=synthetic:faces=1,fps=0,size=160x120",
                            "--camera", "ab=synthetic:faces=2,fps=0,size=160x120,seed=3",
                            "--summary", str(summary)], cwd=str(ROOT), env=env, capture_output=True, text=True,
                           timeout=180)
        assert p.returncode == 0, p.stderr
        out, err = client.communicate(timeout=120)  # it ends at the end of stream
        got = []
        while sub.poll(0):  # the run has ended: everything it sent this subscriber is queued here
            got.append(sub.recv_multipart())
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
        sub.close()
        ctx.term()
    s = json.loads(summary.read_text())
    cams = s["cameras"]
    assert set(cams) == {"a", "ab"} and s["unaccounted"] == 0
    a_out = cams["a"]["frames_completed"] + cams["a"]["frames_partial"]
    assert a_out == FRAMES and cams["ab"]["frames_completed"] + cams["ab"]["frames_partial"] == FRAMES
    codec = Codec()
    decoded = [codec.decode_seq(f) for f in got]
    results = [(msg, seq) for msg, seq in decoded if isinstance(msg, m.Result)]
    assert [msg.camera for msg, _ in results] == ["a"] * a_out  # every one of a's, none of ab's
    assert sorted(msg.frame_id for msg, _ in results) == list(range(FRAMES))
    assert [seq for _, seq in results] == list(range(1, a_out + 1))  # a's own numbering: no gap
    eos = [msg for msg, _ in decoded if isinstance(msg, m.Eos)]
    assert len(eos) == 1 and eos[0].camera == "" and eos[0].sent == 2 * FRAMES  # every camera's, once
    # the example: a's results only, all of them, then the end of stream
    assert client.returncode == 0, err
    lines = out.splitlines()
    printed = [line for line in lines if line.startswith("result ")]
    assert [line.split(":")[0] for line in printed] == ["result camera a frame %d" % msg.frame_id
                                                         for msg, _ in results]
    assert not any("camera ab" in line for line in lines) and "lost" not in out
    assert "end of stream: aggregator sent %d, last frame %d (every camera)" % (2 * FRAMES, FRAMES - 1) in out
    assert msgspec.msgpack.decode(got[0][1])[0] == m.SCHEMA_VERSION == 5
