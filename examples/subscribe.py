#!/usr/bin/env python3
"""Listen to a running edgepipe: print its results and its metrics.

Needs only pyzmq and msgpack (pip install pyzmq msgpack) and imports nothing
from edgepipe: it is an example of a client in any language, following
docs/wire.md.

    python examples/subscribe.py [--name NAME] [--camera CAMERA]
    python examples/subscribe.py --results ENDPOINT --metrics ENDPOINT [--camera CAMERA]

By default it listens to the pipeline named NAME (``--name`` of run.py,
``pipeline.name``; ``default``) on this host, at the endpoints
``python run.py endpoints --name NAME`` prints: they are known before the
pipeline starts, so this client may start first and gets the first results.
Or give the endpoints (the ``results ...`` and ``metrics ...`` lines the
pipeline prints on stdout, or the tcp:// ones of its config's [endpoints]).

``--camera CAMERA`` takes one camera's results only, by subscription alone
(docs/wire.md, "Topics"): the topic ``result/CAMERA/`` and the ends of stream
that concern it, ``eos/CAMERA/`` (its own, and the one camera's) and ``eos//``
(every camera's, after several).
"""
import argparse
import os
import re
import sys
import tempfile

import msgpack
import zmq

SCHEMA_VERSION = 5  # the wire this client reads (docs/wire.md)
CAMERA_KINDS = ("frame", "encoded", "detections", "facejob", "expression", "result", "done", "eos")  # KIND/CAMERA/
CAMERA_NAME = re.compile(r"[A-Za-z0-9_]{1,32}$")


def topics_of(camera):
    """The results endpoint's topics to subscribe to: every camera's results and end of stream, or one
    camera's (a topic is a prefix: "result/a/" never matches camera "ab"'s "result/ab/")."""
    if camera is None:
        return ("result", "eos")
    return ("result/%s/" % camera, "eos/%s/" % camera, "eos//")


def pipeline_folder(name):
    """Where the pipeline named ``name`` publishes (docs/wire.md, "Endpoints"): BASE/NAME, BASE being
    $EDGEPIPE_RUN_DIR, else $XDG_RUNTIME_DIR/edgepipe, else /tmp/edgepipe-UID; without $EDGEPIPE_RUN_DIR,
    the system service's /run/edgepipe/NAME when that one is there."""
    if os.environ.get("EDGEPIPE_RUN_DIR"):
        return os.path.join(os.environ["EDGEPIPE_RUN_DIR"], name)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(xdg, "edgepipe") if xdg and os.path.isdir(xdg) else \
        os.path.join(tempfile.gettempdir(), "edgepipe-%d" % os.getuid())
    service = os.path.join("/run/edgepipe", name)
    mine = os.path.join(base, name)
    return service if not os.path.exists(mine) and os.path.exists(service) else mine


def decode(frames):
    """Frames of one message -> (kind, sequence number, fields); the image frame, if any, is not needed here.
    Frame 0, the topic, is KIND/CAMERA/ for a kind with a camera (CAMERA "" for every camera's end of
    stream), else the kind; it must agree with the fields."""
    topic = frames[0].decode("ascii")
    kind, _, camera = topic.partition("/")
    version, seq, _image, fields = msgpack.unpackb(frames[1], raw=False)
    if version != SCHEMA_VERSION:
        raise ValueError("%s message of schema version %r; this client reads %d" % (kind, version, SCHEMA_VERSION))
    if not isinstance(fields, dict) or fields.get("kind") != kind:
        raise ValueError("frame 0 %r does not match the message's kind" % topic[:64])
    named = "%s/" % fields.get("camera", "default") if kind in CAMERA_KINDS else ""  # left out at its default
    if camera != named:
        raise ValueError("frame 0 %r does not match the message's camera" % topic[:64])
    return kind, seq, fields


def describe_result(r):
    faces = []
    for f in r.get("faces", []):
        x1, y1, x2, y2, _score = f["box"]
        label = f.get("smoothed") or f.get("expression") or "?"
        conf = f.get("confidence")
        faces.append("%s%s track %d at (%.0f,%.0f)-(%.0f,%.0f)" % (
            label, " %.2f" % conf if conf is not None else "", f.get("track", -1), x1, y1, x2, y2))
    text = "result camera %s frame %d: %d face(s)%s, %.1f ms capture to result%s" % (
        r.get("camera", "default"), r["frame_id"], len(faces), (" [" + "; ".join(faces) + "]") if faces else "",
        (r["t_result"] - r["t_capture"]) * 1000.0, ", partial" if r.get("partial") else "")
    if r.get("labels"):
        text += ", labels " + ", ".join("%s %.2f" % (label, p) for label, p in r["labels"][:3])
    return text


def describe_metric(m):
    c, g = m.get("counters", {}), m.get("gauges", {})
    return "metric %s: %.1f fps, busy %.0f%%, in %d, out %d, dropped %d, rejected %d%s" % (
        m["actor"], g.get("fps", 0.0), g.get("busy_pct", 0.0), c.get("in", 0), c.get("out", 0),
        c.get("dropped", 0), c.get("rejected", 0), " (final)" if m.get("final") else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description="print a running edgepipe's results and metrics")
    ap.add_argument("--name", help="the pipeline's name on this host (default: default, unless --results or "
                    "--metrics is given)")
    ap.add_argument("--results", help="the pipeline's results endpoint (ipc://PATH or tcp://HOST:PORT)")
    ap.add_argument("--metrics", help="its metrics endpoint (endpoints.metrics)")
    ap.add_argument("--camera", help="one camera's results only (its name: [cameras.NAME], --camera NAME=SPEC of "
                    "run.py; default for --source)")
    ap.add_argument("--count", type=int, default=0,
                    help="exit once N results and N metric snapshots were printed (0: run until Ctrl-C)")
    ap.add_argument("--timeout", type=float, default=30.0, help="exit 1 when nothing arrives for this many seconds")
    args = ap.parse_args(argv)
    if args.camera is not None and not CAMERA_NAME.match(args.camera):
        ap.error("--camera %s: a camera's name is 1 to 32 letters, digits or _" % args.camera)
    if args.name or not (args.results or args.metrics):
        folder = pipeline_folder(args.name or "default")
        args.results = args.results or "ipc://%s/results" % folder
        args.metrics = args.metrics or "ipc://%s/metrics" % folder

    ctx = zmq.Context()
    poller = zmq.Poller()
    socks = {}
    for name, endpoint, topics in (("results", args.results, topics_of(args.camera)),
                                   ("metrics", args.metrics, ("metric",))):
        if endpoint:
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RECONNECT_IVL, 20)  # not started yet: retry often (ms), not to miss the first results
            for t in topics:
                s.setsockopt(zmq.SUBSCRIBE, t.encode("ascii"))
            s.connect(endpoint)
            poller.register(s, zmq.POLLIN)
            socks[s] = name
    print("listening: %s" % ", ".join("%s at %s" % (n, e) for n, e in (("results", args.results),
                                                                           ("metrics", args.metrics)) if e),
          flush=True)
    printed = {name: 0 for name in socks.values()}
    last_seq = {}  # (stream, topic) -> the sender's last sequence number
    try:
        while True:
            events = dict(poller.poll(int(args.timeout * 1000)))
            if not events:
                print("nothing for %.0f s: is the pipeline running, with these endpoints?" % args.timeout,
                      file=sys.stderr)
                return 1
            for s in events:
                stream = socks[s]
                frames = s.recv_multipart()
                try:
                    kind, seq, fields = decode(frames)
                except (ValueError, msgpack.UnpackException) as exc:
                    print("skipped a message: %s" % exc, file=sys.stderr)
                    continue
                # one sender per kind on each socket (the hub re-sends every metric), numbering each topic
                # (each camera's messages of a kind) apart: one camera's subscriber sees no gap for the others'
                key = (stream, frames[0])
                if key in last_seq and seq > last_seq[key] + 1:
                    print("lost %d %s message(s) (this client fell behind)" % (seq - last_seq[key] - 1, kind))
                last_seq[key] = seq
                if kind == "result":
                    print(describe_result(fields), flush=True)
                elif kind == "metric":
                    print(describe_metric(fields), flush=True)
                elif kind == "eos":
                    camera = fields.get("camera", "default")
                    print("end of stream: %s sent %d, last frame %d (%s)" % (
                        fields["sender"], fields["sent"], fields["last_frame_id"],
                        "camera %s" % camera if camera else "every camera"), flush=True)
                    return 0
                else:
                    continue
                printed[stream] += 1
            if args.count and all(n >= args.count for n in printed.values()):
                return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for s in socks:
            s.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
