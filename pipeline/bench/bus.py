"""``python run.py bench bus``: what the wire costs, against raw pyzmq in the same run.

(a) Codec: encode plus decode of a 5-face ``Detections`` header (and of the
    5-face ``Result`` an outside client gets), in microseconds per message, through
    ``bus.codec`` exactly as a channel does it (goal: <= 10 us); and the
    metrics hub's work on one metric: decode and re-encode it, against relaying
    it undecoded as the hub does (``Codec.relay``).
(b) One hop of a 640x480x3 uint8 ``Frame`` (image as a zero-copy side frame)
    and of the 5-face header over ``inproc://``, ``ipc://`` and
    ``tcp://127.0.0.1``, through the project's ``Bus``/``Channel`` (PUSH to
    PULL: encode, send, receive, validate, decode), against raw pyzmq sockets of
    the same context sending the same bytes (``send_multipart`` /
    ``recv_multipart(copy=False)``, zero-copy for the image as the channel
    does it, no encode and no decode). Both sides run in one event loop (the
    one ``run.py`` uses), like the actors of one process. Two measures:

    - stream: the sender sends N messages back to back, the receiver takes
      them; time per message (throughput);
    - ping-pong: one message at a time, the receiver answers each with a
      one-byte raw message on a second socket pair (the same answer for both
      sides); round-trip time (latency).

    ratio = raw time / project time: 1.0 means the project adds nothing; the
    goal for a frame hop is >= 0.8.

Every measurement runs ``--repeats`` times, the project and raw pyzmq one
right after the other (the order swaps every repeat), so that drift on a noisy
machine hits both alike. Reported: the median time of each side, the median of
the per-repeat ratios (``ratio``) and the ratio of each side's fastest run
(``best``). Ratios are only meaningful within one run. Results: ``bench_bus.json`` in ``--out`` with the machine's
description.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

import msgspec
import numpy as np

from edgepipe.actors.runtime.tasks import task_group
from edgepipe.bus import messages as m
from edgepipe.bus.codec import Codec, encode, encode_relayed
from edgepipe.bus.raw import libzmq_version, raw_pair
from edgepipe.bus.sockets import Bus
from edgepipe.pipeline.bench.common import DEFAULT_OUT, machine_info, write_report
from edgepipe.pipeline.loop import event_loop_run

TRANSPORTS = ("inproc", "ipc", "tcp")
FACES = 5
CODEC_GOAL_US = 10.0
HOP_GOAL_RATIO = 0.8
DEFAULTS = {"codec": 20000, "frames": 200, "headers": 2000, "repeats": 11}
QUICK = {"codec": 5000, "frames": 60, "headers": 600, "repeats": 5}
FRAME_HWM = 16  # like the pipeline's frame links
HEADER_HWM = 1000


# ---------------------------------------------------------------- payloads

def five_face_detections() -> m.Detections:
    boxes = []
    for i in range(FACES):
        x, y = 40.0 + 110.0 * i, 120.0 + 10.0 * i
        boxes.append(m.Box(x, y, x + 80.0, y + 96.0, 0.9 - 0.05 * i))
    return m.Detections(12345, time.monotonic(), time.monotonic(), 640, 480, boxes, FACES)


def five_face_result() -> m.Result:
    det = five_face_detections()
    faces = [m.FaceResult(b, "happy", 0.75, i, "happy") for i, b in enumerate(det.faces)]
    return m.Result(det.frame_id, det.t_capture, time.monotonic(), 640, 480, faces, False, True)


def frame_640x480() -> m.Frame:
    image = np.random.RandomState(0).randint(0, 255, (480, 640, 3)).astype(np.uint8)
    return m.Frame(12345, time.monotonic(), "synthetic:bench", image)


# ---------------------------------------------------------------- (a) codec

def bench_codec(msg: Any, n: int, repeats: int) -> Dict[str, Any]:
    """Median microseconds per message to encode, and to decode, ``msg`` as a channel does."""
    codec = Codec()
    frames = [bytes(f) for f in encode(msg, 1)]
    enc: List[float] = []
    dec: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for seq in range(n):
            encode(msg, seq)
        t1 = time.perf_counter()
        for _ in range(n):
            codec.decode_seq(frames)
        t2 = time.perf_counter()
        enc.append((t1 - t0) / n * 1e6)
        dec.append((t2 - t1) / n * 1e6)
    e, d = statistics.median(enc), statistics.median(dec)
    return {"header_bytes": len(frames[1]), "encode_us": round(e, 3), "decode_us": round(d, 3),
            "total_us": round(e + d, 3), "messages": n, "repeats": repeats}


def typical_metric() -> m.Metric:
    """An actor's snapshot as the metrics hub gets them: a dozen counters, ten gauges."""
    counters = ("in", "out", "dropped", "dropped.stale", "rejected", "faces", "jobs", "partial", "completed",
                "restarts", "ignored", "lost")
    gauges = ("fps", "fps_avg", "busy_pct", "busy_ms_p50", "busy_ms_p99", "latency_ms_p50", "latency_ms_p99",
              "uptime_s", "pending", "on.cpu")
    return m.Metric("detector", 4242, time.monotonic(), {k: 1000 + i for i, k in enumerate(counters)},
                    {k: 12.5 + i for i, k in enumerate(gauges)})


def bench_relay(n: int, repeats: int) -> Dict[str, Any]:
    """Median microseconds per metric for the metrics hub's work on it: decode and re-encode it (the typed
    path), against relaying it (``Codec.relay``, the actor's name, ``encode_relayed``; what the hub does)."""
    codec, actor = Codec(), msgspec.msgpack.Decoder(m.MetricActor)
    frames = [bytes(f) for f in encode(typical_metric(), 1)]
    typed: List[float] = []
    relayed: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for seq in range(n):
            msg, _ = codec.decode_seq(frames)
            encode(msg, seq)
        t1 = time.perf_counter()
        for seq in range(n):
            kind, body = codec.relay(frames)
            actor.decode(body)
            encode_relayed(kind, body, seq)
        t2 = time.perf_counter()
        typed.append((t1 - t0) / n * 1e6)
        relayed.append((t2 - t1) / n * 1e6)
    a, b = statistics.median(typed), statistics.median(relayed)
    return {"header_bytes": len(frames[1]), "decode_encode_us": round(a, 3), "relay_us": round(b, 3),
            "ratio": round(a / b, 2), "messages": n, "repeats": repeats}


# ---------------------------------------------------------------- (b) hops

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Endpoints:
    """Fresh endpoints for each socket pair (a tcp port, an ipc path in a private folder)."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.n = 0

    def new(self, transport: str) -> str:
        self.n += 1
        if transport == "inproc":
            return "inproc://bench-bus-%d" % self.n
        if transport == "ipc":
            return "ipc://%s/%d" % (self.tmp, self.n)
        return "tcp://127.0.0.1:%d" % _free_port()


async def _stream(send: Callable[[], Awaitable[Any]], recv: Callable[[], Awaitable[Any]], n: int) -> float:
    """Seconds per message, n messages sent back to back."""
    async def consume() -> None:
        for _ in range(n):
            await recv()

    async with task_group() as tg:  # the block ends when the consumer has received all n
        tg.start_soon(consume, name="bench.consume")
        t0 = time.perf_counter()
        for _ in range(n):
            await send()
    return (time.perf_counter() - t0) / n


async def _pingpong(send: Callable[[], Awaitable[Any]], recv: Callable[[], Awaitable[Any]],
                    ack_push: Any, ack_pull: Any, n: int) -> float:
    """Seconds per round trip: one message there, a one-byte answer back."""
    async def echo() -> None:
        for _ in range(n):
            await recv()
            await ack_push.send(b"k")

    async with task_group() as tg:  # the block ends when the echo has answered all n
        tg.start_soon(echo, name="bench.echo")
        t0 = time.perf_counter()
        for _ in range(n):
            await send()
            await ack_pull.recv()
    return (time.perf_counter() - t0) / n


async def _one(bus: Bus, eps: _Endpoints, transport: str, msg: Any, n: int, hwm: int, project: bool,
               mode: str) -> float:
    """One measurement (seconds per message or round trip) on fresh sockets, after a short warm-up."""
    closers: List[Callable[[], None]] = []
    try:
        if project:
            endpoint = eps.new(transport)
            pull = bus.pull(endpoint, hwm=hwm, bind=True, name="bench.pull")
            closers.append(pull.close)
            push = bus.push(endpoint, hwm=hwm, bind=False, name="bench.push")
            closers.append(push.close)

            async def send() -> Any:
                return await push.send(msg)

            async def recv() -> Any:
                return await pull.recv()
        else:
            frames = encode(msg, 1)  # the same bytes the project sends
            big = len(frames) > 2
            rpush, rpull = raw_pair(bus, eps.new(transport), hwm)
            closers += [rpull.close, rpush.close]

            async def send() -> Any:
                return await rpush.send_multipart(frames, copy=not big)

            async def recv() -> Any:
                return await rpull.recv_multipart(copy=False)
        warm = max(2, n // 10)
        if mode == "stream":
            await _stream(send, recv, warm)
            return await _stream(send, recv, n)
        ack_push, ack_pull = raw_pair(bus, eps.new(transport), 16)
        closers += [ack_pull.close, ack_push.close]
        await _pingpong(send, recv, ack_push, ack_pull, warm)
        return await _pingpong(send, recv, ack_push, ack_pull, n)
    finally:
        for close in reversed(closers):
            close()


async def bench_hops(counts: Dict[str, int], transports=TRANSPORTS, modes=("stream", "pingpong"),
                     progress: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    payloads = [("frame", frame_640x480(), counts["frames"], FRAME_HWM),
                ("header", five_face_detections(), counts["headers"], HEADER_HWM)]
    bus = Bus()
    tmp = tempfile.mkdtemp(prefix="edgepipe-bench-bus-")
    rows: List[Dict[str, Any]] = []
    try:
        eps = _Endpoints(tmp)
        for name, msg, n, hwm in payloads:
            nbytes = sum(memoryview(f).nbytes for f in encode(msg, 1))
            for transport in transports:
                for mode in modes:
                    runs: Dict[bool, List[float]] = {True: [], False: []}
                    for r in range(counts["repeats"]):
                        for project in ((True, False) if r % 2 == 0 else (False, True)):
                            runs[project].append(await _one(bus, eps, transport, msg, n, hwm, project, mode))
                    proj, raw = statistics.median(runs[True]) * 1e6, statistics.median(runs[False]) * 1e6
                    # each repeat's project and raw runs are neighbours in time: their ratio cancels slow drift
                    paired = [r / p for p, r in zip(runs[True], runs[False]) if p > 0]
                    best = min(runs[False]) / min(runs[True]) if min(runs[True]) > 0 else None
                    row = {"payload": name, "bytes": nbytes, "transport": transport, "mode": mode, "messages": n,
                           "project_us": round(proj, 2), "raw_us": round(raw, 2),
                           "ratio": round(statistics.median(paired), 3) if paired else None,
                           "ratio_best": round(best, 3) if best is not None else None,
                           "project_runs_us": [round(x * 1e6, 2) for x in runs[True]],
                           "raw_runs_us": [round(x * 1e6, 2) for x in runs[False]]}
                    rows.append(row)
                    if progress is not None:
                        progress("%-6s %-6s %-8s project %9.1f us  raw %9.1f us  ratio %.2f (best runs %.2f)"
                                 % (name, transport, mode, proj, raw, row["ratio"] or 0.0, row["ratio_best"] or 0.0))
    finally:
        bus.close()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    return rows


# ---------------------------------------------------------------- report

def bench_bus(counts: Dict[str, int], progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:

    codec = {"detections_5_faces": bench_codec(five_face_detections(), counts["codec"], counts["repeats"]),
             "result_5_faces": bench_codec(five_face_result(), counts["codec"], counts["repeats"])}
    hops = event_loop_run(bench_hops(counts, progress=progress))
    info = machine_info()
    info["versions"]["msgspec"] = msgspec.__version__
    info["versions"]["libzmq"] = libzmq_version()
    frame_hops = {mode: [h["ratio"] for h in hops if h["payload"] == "frame" and h["mode"] == mode]
                  for mode in ("stream", "pingpong")}
    return {
        "machine": info,
        "counts": dict(counts),
        "codec": codec,
        "relay": bench_relay(counts["codec"], counts["repeats"]),
        "hops": hops,
        "goals": {
            "codec_us": {"goal": CODEC_GOAL_US, "measured": codec["detections_5_faces"]["total_us"],
                         "met": codec["detections_5_faces"]["total_us"] <= CODEC_GOAL_US},
            "frame_hop_ratio": {mode: {"goal": HOP_GOAL_RATIO, "lowest": min(r) if r else None,
                                       "met": bool(r) and min(r) >= HOP_GOAL_RATIO}
                                for mode, r in frame_hops.items()},
        },
    }


def render(result: Dict[str, Any]) -> str:
    out = ["codec (bus.codec, as a channel encodes and decodes; median us per message):"]
    for name, c in result["codec"].items():
        out.append("  %-30s %5d bytes  encode %6.2f  decode %6.2f  total %6.2f us"
                   % (name, c["header_bytes"], c["encode_us"], c["decode_us"], c["total_us"]))
    g = result["goals"]["codec_us"]
    out.append("  goal: 5-face header encode + decode <= %.0f us: %s (%.2f us)"
               % (g["goal"], "met" if g["met"] else "MISSED", g["measured"]))
    r = result["relay"]
    out.append("  metrics hub, one %d-byte metric: decode + re-encode %.2f us, relay undecoded %.2f us (%.1fx)"
               % (r["header_bytes"], r["decode_encode_us"], r["relay_us"], r["ratio"]))
    out.append("")
    out.append("one hop, PUSH -> PULL in one event loop (median us per message or round trip; ratio = median of")
    out.append("raw / project over the repeats; best = the ratio of each side's fastest run):")
    out.append("  %-7s %-8s %-7s %-9s %12s %12s %7s %6s" % ("payload", "bytes", "via", "mode", "project us",
                                                          "raw zmq us", "ratio", "best"))
    for h in result["hops"]:
        out.append("  %-7s %-8d %-7s %-9s %12.1f %12.1f %7.2f %6.2f"
                   % (h["payload"], h["bytes"], h["transport"], h["mode"], h["project_us"], h["raw_us"],
                      h["ratio"] or 0.0, h["ratio_best"] or 0.0))
    for mode, g in result["goals"]["frame_hop_ratio"].items():
        if g["lowest"] is not None:
            out.append("  goal: a frame hop (%s) >= %.1fx raw pyzmq on every transport: %s (lowest %.2f)"
                       % (mode, g["goal"], "met" if g["met"] else "MISSED", g["lowest"]))
    mi = result["machine"]
    out.append("")
    out.append("machine: %s, %s CPUs usable, load %s, Python %s, pyzmq %s (libzmq %s), msgspec %s"
               % (mi["machine"], mi["cpus_usable"], mi["load_avg"], mi["python"], mi["versions"].get("zmq"),
                  mi["versions"].get("libzmq"), mi["versions"].get("msgspec")))
    return "\n".join(out)


# ---------------------------------------------------------------- command line

def add_parser(sub: Any) -> None:
    """``bench bus`` in ``run.py bench``'s sub-commands."""
    b = sub.add_parser("bus", help="codec time of a 5-face header; one hop of a frame and a header through "
                       "the bus vs raw pyzmq (inproc, ipc, tcp)")
    b.add_argument("--quick", action="store_true", help="fewer messages and repeats (%s)"
                   % ", ".join("%s %d" % kv for kv in QUICK.items()))
    what = {"codec": "headers encoded and decoded per codec timing", "frames": "frames per hop measurement",
            "headers": "headers per hop measurement", "repeats": "measurements of each case (median reported)"}
    for key in ("codec", "frames", "headers", "repeats"):
        b.add_argument("--" + key, type=int, metavar="N", help="%s (default %d, --quick %d)"
                       % (what[key], DEFAULTS[key], QUICK[key]))
    b.add_argument("--no-progress", dest="progress", action="store_false", help="no line per measurement")
    b.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./%s)" % DEFAULT_OUT)


def main_args(args: argparse.Namespace) -> int:
    counts = dict(QUICK if args.quick else DEFAULTS)
    for key in counts:
        if getattr(args, key) is not None:
            counts[key] = getattr(args, key)
    if min(counts.values()) < 1:
        print("error: --codec, --frames, --headers and --repeats must be at least 1", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    print("bench bus: codec %(codec)d messages; hops: %(frames)d frames, %(headers)d headers; "
          "%(repeats)d repeats, median" % counts, flush=True)
    result = bench_bus(counts, progress=(lambda s: print("  " + s, flush=True)) if args.progress else None)
    print()
    print(render(result))
    write_report(args.out, "bench_bus.json", result)
    return 0
