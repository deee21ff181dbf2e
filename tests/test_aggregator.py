"""The aggregator alone, fed over real inproc sockets: joins, deadlines, order, strays."""
from __future__ import annotations

import asyncio

from helpers import run_async

from edgepipe.actors.aggregator import Aggregator, AggregatorConfig
from edgepipe.actors.runtime.context import Context
from edgepipe.bus.messages import Box, Detections, Eos, Expression, FaceLabel, Result


def det(fid, n):
    return Detections(fid, 0.0, 0.0, 100, 100, [Box(i, i, i + 10, i + 10, 1.0) for i in range(n)], n)


def expr(fid, i, label="happy", error="", count=1):
    return Expression(fid, i, count, "test", 1.0, [] if error else [FaceLabel(label, 0.9)] * count, error)


class FakeClock:
    """The aggregator's deadline clock, moved by the test only. Each read marks one more aggregator turn,
    so a test can wait for the aggregator to have taken in what it was sent without polling on time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.read = asyncio.Event()

    def __call__(self) -> float:
        self.read.set()
        return self.now

    async def until(self, predicate) -> None:
        while not predicate():
            self.read.clear()
            await self.read.wait()


async def harness(bus, deadline_ms, ordered, feed, topics=("result", "eos")):
    clock = FakeClock()  # frozen unless a test moves it: no frame leaves by its deadline on a slow machine
    agg = Aggregator("aggregator", bus, AggregatorConfig(deadline_ms=deadline_ms, ordered=ordered),
                     {"detections": "inproc://d", "expressions": "inproc://e", "results": "inproc://r"},
                     Context(fer_hwm=100), clock=clock)
    dpub = bus.pub("inproc://d", hwm=100, name="test.det")
    epush = bus.push("inproc://e", hwm=100, bind=False, name="test.expr")
    rsub = bus.sub("inproc://r", hwm=100, name="test.results", topics=topics)
    try:
        await agg.start()
        await dpub.wait_subscribers(1)
        await agg.pub.wait_subscribers(1)
        out = []
        await feed(dpub, epush, rsub, out, agg, clock)
        await dpub.send(Eos("test", -1, dpub.sent("detections")))
        while True:
            msg = await rsub.recv()
            if isinstance(msg, Eos):
                break
            out.append(msg)
        return agg, out
    finally:
        await agg.stop()
        for ch in (dpub, epush, rsub):
            ch.close()


def test_join_out_of_order_early_late_and_strays(bus):
    async def feed(dpub, epush, rsub, out, agg, clock):
        await epush.send(expr(1, 0, "sad"))  # before its detections
        await dpub.send(det(0, 2))
        await dpub.send(det(1, 1))
        await dpub.send(det(2, 0))
        await epush.send(expr(0, 1, "angry"))
        await epush.send(expr(0, 1, "angry"))  # duplicate
        await epush.send(expr(0, 7))  # no such face
        await epush.send(expr(0, 0, "fear"))

    agg, out = run_async(harness(bus, 2000.0, True, feed))
    assert [r.frame_id for r in out] == [0, 1, 2]
    assert all(isinstance(r, Result) and not r.partial and r.in_order for r in out)
    assert [f.expression for f in out[0].faces] == ["fear", "angry"]
    assert [f.expression for f in out[1].faces] == ["sad"]
    c = agg.stats.counters
    assert c["duplicate_expressions"] == 1 and c["bad_expressions"] == 1
    assert c["completed"] == 3


def test_each_result_is_followed_by_a_done_message_for_capture_credits(bus):
    async def feed(dpub, epush, rsub, out, agg, clock):
        await dpub.send(det(0, 1))
        await dpub.send(det(1, 0))
        await epush.send(expr(0, 0, "sad"))

    _, out = run_async(harness(bus, 2000.0, True, feed, topics=("result", "done", "eos")))
    assert [(type(m).__name__, m.frame_id) for m in out] == [("Result", 0), ("Done", 0), ("Result", 1), ("Done", 1)]


def test_deadline_makes_partial_and_late_expressions_are_not_joined(bus):
    async def feed(dpub, epush, rsub, out, agg, clock):
        await dpub.send(det(0, 2))
        await epush.send(expr(0, 0, "happy"))
        await dpub.send(det(1, 1))
        await epush.send(expr(1, 0, "sad"))
        c = agg.stats.counters
        await clock.until(lambda: c.get("in", 0) == 2 and c.get("expressions", 0) == 2)
        assert rsub.recv_nowait() is None  # frame 0 waits for its second face, frame 1 behind it
        clock.now += 0.05  # frame 0's deadline passes (and frame 1's, which is complete anyway)
        await dpub.send(det(2, 0))  # the next frame's detections come after it
        out.append(await rsub.recv())  # frame 0 leaves partial at its deadline
        await epush.send(expr(0, 1, "angry"))  # too late: never joined
        await clock.until(lambda: c.get("late_expressions", 0) == 1)

    agg, out = run_async(harness(bus, 50.0, True, feed))
    assert [r.frame_id for r in out] == [0, 1, 2]
    assert out[0].partial and out[0].faces[1].expression is None and out[0].faces[0].expression == "happy"
    assert not out[1].partial and out[1].in_order
    assert agg.stats.counters["partial"] == 1
    assert agg.stats.counters["late_expressions"] == 1


def test_expressions_whose_detections_never_come_are_forgotten_after_the_deadline(bus):
    async def feed(dpub, epush, rsub, out, agg, clock):
        c = agg.stats.counters
        await epush.send(expr(5, 0, "sad"))  # frame 5's detections are lost upstream
        await clock.until(lambda: c.get("expressions", 0) == 1)
        clock.now += 0.06  # past the deadline: the early expression is an orphan now
        await dpub.send(det(0, 0))
        out.append(await rsub.recv())
        assert c.get("orphan_expressions", 0) == 1 and agg.early_n == 0
        await dpub.send(det(5, 1))  # a late copy of frame 5's detections finds nothing to join
        await clock.until(lambda: c.get("in", 0) == 2)
        clock.now += 0.06
        await dpub.send(det(6, 0))

    agg, out = run_async(harness(bus, 50.0, True, feed))
    assert [r.frame_id for r in out] == [0, 5, 6]
    assert not out[0].partial and out[1].partial and out[1].faces[0].expression is None and not out[2].partial
    assert agg.stats.counters["orphan_expressions"] == 1


def test_unordered_mode_marks_overtaking_frames(bus):
    async def feed(dpub, epush, rsub, out, agg, clock):
        await dpub.send(det(0, 1))
        await dpub.send(det(1, 1))
        await epush.send(expr(1, 0))
        out.append(await rsub.recv())  # frame 1 is complete and leaves first
        await epush.send(expr(0, 0))

    agg, out = run_async(harness(bus, 5000.0, False, feed))
    assert [r.frame_id for r in out] == [1, 0]
    assert out[0].in_order and not out[1].in_order
    assert agg.stats.counters["out_of_order"] == 1


def test_error_expressions_complete_frames_as_partial(bus):
    async def feed(dpub, epush, rsub, out, agg, clock):
        await dpub.send(det(0, 2))
        await epush.send(expr(0, 0))
        await epush.send(expr(0, 1, "", error="InjectedFault: boom"))

    agg, out = run_async(harness(bus, 5000.0, True, feed))
    assert len(out) == 1 and out[0].partial
    assert out[0].faces[1].expression is None


def test_tracks_smooth_a_flickering_label():
    from edgepipe.actors.tracks import Tracker
    t = Tracker(window=5)
    labels = ["happy", "happy", "sad", "happy", "sad", "sad", "sad"]
    votes = []
    for fid, label in enumerate(labels):
        (tid, vote), (tid2, vote2) = t.update(fid, [([10 + fid, 10, 60 + fid, 60], label),
                                                    ([200, 200, 250, 250], "angry")])
        assert (tid, tid2) == (0, 1)  # the moving face keeps its track; the other face has its own
        assert vote2 == "angry"
        votes.append(vote)
    assert votes == ["happy", "happy", "happy", "happy", "happy", "sad", "sad"]
    # a face far from every track starts a new one; tracks not seen for a while are forgotten
    (tid, vote), = t.update(100, [([400, 10, 450, 60], None)])
    assert tid == 2 and vote is None and set(t.tracks) == {2}
