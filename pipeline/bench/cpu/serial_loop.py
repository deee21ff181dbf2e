"""The reference project's serial two-process loop, as a baseline for ``bench pipeline --engine cpu``.

Two processes and one ZeroMQ hop, one frame at a time:

- the *front end* (``SerialLoop``, in the benchmark's process) reads a frame
  from a source, sends its pixels to the back end and waits for the result
  before it reads the next frame: one frame in flight, as the reference does;
- the *back end* (``python -m edgepipe.pipeline.bench.cpu.serial_loop --connect ENDPOINT ...``)
  receives the frame, detects faces, runs FER on each face one after the
  other, and sends the result back.

The sockets are REQ (front end, binds) and REP (back end, connects), over
``ipc://`` (a socket file in a private temporary folder, removed on close) or
``tcp://127.0.0.1`` (a port the system picks). Messages are multipart:

- front to back: ``[b"ping"]``, ``[b"frame", header JSON, pixels]``, ``[b"stop"]``;
- back to front: ``[b"ready", JSON]``, ``[b"result", JSON]``, ``[b"bye", JSON]``,
  ``[b"error", JSON]``.

The back end builds the same engines and model families as the pipeline's
actors (``models.registry``), with the same thread count and model search
path. It exits after ``stop``, when its parent process is gone, or after
``--idle-timeout`` seconds without a message.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgepipe import ROOT as REPO
from edgepipe.actors.runtime.engines import EngineSettings
from edgepipe.actors.runtime.stats import percentile
from edgepipe.actors.sources.source_factory import make_source
from edgepipe.bus.raw import readable, reply_socket, request_socket
from edgepipe.models.registry import expression_model, face_detector
from edgepipe.models.store import manifest
from edgepipe.pipeline.bench.cpu.cpu_cost import PairCpu

log = logging.getLogger("edgepipe.serial")

TRANSPORTS = ("ipc", "tcp")


# ---------------------------------------------------------------- back end (the second process)

def load_models(settings: Any, det_spec: Any, fer_spec: Any, engines: List[Any], score_threshold: Optional[float],
                max_faces: int, actors: Sequence[str] = ("detector", "fer-0")) -> Any:
    """(face detector, expression model) of a serial loop, on engines built and loaded one after the other.

    Each engine joins ``engines`` as soon as it is built, so that the caller closes it whatever fails next.
    """

    loaded = []
    for spec, actor in zip((det_spec, fer_spec), actors):
        engine = settings.build(spec, settings.fault_counter(actor))
        engines.append(engine)
        engine.load()
        loaded.append(engine)
    return (face_detector(det_spec, loaded[0], score_threshold=score_threshold, max_faces=max_faces),
            expression_model(fer_spec, loaded[1]))


def backend_main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgepipe.pipeline.bench.cpu.serial_loop",
                                 description="The serial loop's back end: detect, then FER per face, one frame "
                                 "at a time, behind one ZeroMQ REP socket.")
    ap.add_argument("--connect", required=True, help="the front end's endpoint (ipc://... or tcp://127.0.0.1:N)")
    ap.add_argument("--detector", required=True, help="face detector model name (models/manifest)")
    ap.add_argument("--fer", required=True, help="expression model name")
    ap.add_argument("--engine", default="cpu", help="engine kind (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per interpreter")
    ap.add_argument("--model-path", action="append", default=[], help="folder searched for model files")
    ap.add_argument("--score-threshold", type=float, default=None, help="default: the model's own")
    ap.add_argument("--max-faces", type=int, default=16)
    ap.add_argument("--idle-timeout", type=float, default=120.0, help="exit after this many seconds without a "
                    "message (default 120)")
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s serial-backend %(levelname)s %(message)s")


    parent = os.getppid()
    ctx, sock = reply_socket(args.connect)
    engines: List[Any] = []
    code = 0
    try:
        values = {"threads": args.threads} if args.engine != "fake" else {}
        settings = EngineSettings.of(args.engine, model_paths=args.model_path, **values)
        det_spec, fer_spec = manifest.get(args.detector), manifest.get(args.fer)
        load_error = ""
        try:
            detector, fer = load_models(settings, det_spec, fer_spec, engines, args.score_threshold,
                                        args.max_faces, ("serial-detector", "serial-fer"))
        except Exception as exc:  # reported to the front end, which raises it
            load_error = "%s: %s" % (type(exc).__name__, exc)
        idle_since = time.monotonic()
        while True:
            if not readable(sock, 500):
                if os.getppid() != parent:
                    log.warning("front end gone; exiting")
                    return 3
                if time.monotonic() - idle_since > args.idle_timeout:
                    log.warning("no message for %.0f s; exiting", args.idle_timeout)
                    return 3
                continue
            idle_since = time.monotonic()
            parts = sock.recv_multipart(copy=False)
            kind = parts[0].bytes
            if kind == b"ping":
                if load_error:
                    sock.send_multipart([b"error", json.dumps({"error": load_error}).encode()])
                    code = 1
                    return code
                sock.send_multipart([b"ready", json.dumps({
                    "pid": os.getpid(), "python": sys.version.split()[0], "detector": det_spec.name,
                    "fer": fer_spec.name, "threads": args.threads}).encode()])
            elif kind == b"stop":
                sock.send_multipart([b"bye", json.dumps({"pid": os.getpid()}).encode()])
                return code
            elif kind == b"frame" and not load_error:
                head = json.loads(parts[1].bytes)
                img = np.frombuffer(parts[2].buffer, dtype=np.uint8).reshape(head["h"], head["w"], 3)
                t0 = time.perf_counter()
                faces = detector.detect(img)
                crops = [fer.prepare(img, f) for f in faces]
                t1 = time.perf_counter()
                labels = [fer.classify(c).label for c in crops]  # one face after the other
                t2 = time.perf_counter()
                sock.send_multipart([b"result", json.dumps({
                    "i": head["i"], "faces": len(faces), "labels": labels,
                    "boxes": [[round(float(v), 1) for v in (f.x1, f.y1, f.x2, f.y2)] for f in faces],
                    "detect_ms": (t1 - t0) * 1000.0, "fer_ms": (t2 - t1) * 1000.0}).encode()])
            else:
                sock.send_multipart([b"error", json.dumps({"error": "unexpected message %r" % kind[:16]}).encode()])
    finally:
        for e in engines:
            try:
                e.close()
            except Exception:  # closing must not hide the reason we stopped
                log.exception("closing an engine")
        sock.close()
        ctx.term()


# ---------------------------------------------------------------- front end (the benchmark's process)

class SerialLoopError(RuntimeError):
    pass


def frame_digest(image: Any) -> str:
    """A short hash of a frame's pixels (to show two runs saw the same frames)."""
    return hashlib.sha1(image.tobytes()).hexdigest()[:16]


def _pct(values: Sequence[float], q: float) -> float:
    return round(percentile(list(values), q), 3)


class SerialLoop:
    """The front end: spawns the back end, sends one frame at a time and waits for its result."""

    def __init__(self, detector: str, fer: str, *, threads: int = 1, model_paths: Sequence[str] = (),
                 score_threshold: Optional[float] = None, max_faces: int = 16, transport: str = "ipc",
                 python: Optional[str] = None, engine: str = "cpu", timeout_s: float = 60.0) -> None:
        if transport not in TRANSPORTS:
            raise ValueError("transport must be one of %s" % ", ".join(TRANSPORTS))
        self.detector, self.fer, self.threads = detector, fer, threads
        self.model_paths = list(model_paths)
        self.score_threshold, self.max_faces = score_threshold, max_faces
        self.transport, self.engine = transport, engine
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.endpoint = ""
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.ctx: Any = None
        self.sock: Any = None
        self.ready: Dict[str, Any] = {}
        self.exit_code: Optional[int] = None

    # -- life cycle

    def start(self) -> "SerialLoop":
        endpoint = None  # tcp: a free loopback port
        if self.transport == "ipc":
            self.dir = tempfile.mkdtemp(prefix="edgepipe-serial-", dir="/tmp" if os.path.isdir("/tmp") else None)
            endpoint = "ipc://%s/loop" % self.dir
        self.ctx, self.sock, self.endpoint = request_socket(endpoint)
        cmd = [self.python, "-m", "edgepipe.pipeline.bench.cpu.serial_loop", "--connect", self.endpoint, "--detector", self.detector,
               "--fer", self.fer, "--engine", self.engine, "--threads", str(self.threads),
               "--max-faces", str(self.max_faces)]
        if self.score_threshold is not None:
            cmd += ["--score-threshold", repr(float(self.score_threshold))]
        for p in self.model_paths:
            cmd += ["--model-path", p]
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env)
        kind, body = self._ask([b"ping"], self.timeout_s)
        if kind != b"ready":
            raise SerialLoopError("serial back end failed to start: %s" % body.get("error", body))
        self.ready = body
        return self

    def close(self) -> None:
        """Stop the back end (politely, then by force), close the socket, remove the ipc folder."""
        try:
            if self.proc is not None and self.proc.poll() is None and self.sock is not None:
                try:
                    self._ask([b"stop"], 5.0)
                except SerialLoopError as exc:
                    log.warning("serial back end did not say bye: %s", exc)
            if self.proc is not None:
                try:
                    self.exit_code = self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.exit_code = self.proc.wait(5)
        finally:
            if self.sock is not None:
                self.sock.close(0)
                self.sock = None
            if self.ctx is not None:
                self.ctx.term()
                self.ctx = None
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "SerialLoop":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _ask(self, parts: List[Any], timeout_s: float) -> Any:
        self.sock.send_multipart(parts, copy=False)
        deadline = time.monotonic() + timeout_s
        while not readable(self.sock, 100):
            if self.proc is not None and self.proc.poll() is not None:
                raise SerialLoopError("serial back end exited with code %s" % self.proc.returncode)
            if time.monotonic() > deadline:
                raise SerialLoopError("serial back end did not answer within %.0f s" % timeout_s)
        reply = self.sock.recv_multipart()
        return reply[0], json.loads(reply[1]) if len(reply) > 1 else {}

    # -- work

    def process(self, image: Any, i: int = 0) -> Dict[str, Any]:
        """One frame through the back end; its result (faces, labels, boxes, detect_ms, fer_ms)."""

        img = np.ascontiguousarray(image)
        h, w = img.shape[:2]
        head = json.dumps({"i": i, "w": w, "h": h}).encode()
        kind, body = self._ask([b"frame", head, img], self.timeout_s)
        if kind != b"result":
            raise SerialLoopError("serial back end: %s" % body.get("error", body))
        return body

    def run(self, source: str, frames: int, warmup: int = 0, in_memory: bool = False,
            pace_fps: float = 0.0) -> Dict[str, Any]:
        """Read ``warmup + frames`` frames from ``source`` (looping) and send each one when the previous
        result is back; the summary of the timed ``frames``.

        ``in_memory``: read the source's first frame once and send it every time, as a camera hands over a
        frame that is already decoded (for a source that loops one image, the same frames).
        ``pace_fps``: read frame i no earlier than i / pace_fps seconds after the first, as a read from a
        camera at that rate blocks until its next frame (0: as fast as the loop goes)."""

        src = make_source(source, loop=True)
        src.open()
        read_ms: List[float] = []
        latency: List[float] = []
        detect_ms: List[float] = []
        fer_ms: List[float] = []
        faces: List[int] = []
        digests: List[str] = []
        kept: Any = None
        cpu = PairCpu(self.proc.pid if self.proc is not None else None)  # front end + back end
        t_start = time.monotonic()
        try:
            for i in range(warmup + frames):
                if i == warmup:
                    t_start = time.monotonic()
                    cpu.mark_start()
                if pace_fps > 0:  # the camera's next frame is not there before its time
                    delay = t_start + (i - warmup if i >= warmup else i) / pace_fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                t0 = time.monotonic()
                item = kept if kept is not None else src.read()
                if item is None:
                    break
                if in_memory:
                    kept = item
                image = item[0]
                t1 = time.monotonic()
                res = self.process(image, i)
                t2 = time.monotonic()
                if i < warmup:
                    continue
                if not digests or len(digests) < 4:
                    d = frame_digest(image)
                    if d not in digests:
                        digests.append(d)
                read_ms.append((t1 - t0) * 1000.0)
                latency.append((t2 - t1) * 1000.0)
                detect_ms.append(res["detect_ms"])
                fer_ms.append(res["fer_ms"])
                faces.append(int(res["faces"]))
            elapsed = time.monotonic() - t_start
            cpu.mark_end()
        finally:
            src.close()
        done = len(faces)
        return {
            "frames": done,
            "duration_s": round(elapsed, 3),
            "fps": round(done / elapsed, 2) if elapsed > 0 else 0.0,
            "faces_total": sum(faces),
            "faces_per_frame": round(sum(faces) / done, 3) if done else 0.0,
            "faces_min_max": [min(faces), max(faces)] if faces else [0, 0],
            "frame_digests": digests,
            "in_flight": 1,
            "in_memory": in_memory,
            "transport": self.transport,
            "endpoint_kind": self.endpoint.split("://")[0],
            "backend": dict(self.ready),
            "ms_p50": {"read": _pct(read_ms, 50), "round_trip": _pct(latency, 50), "detect": _pct(detect_ms, 50),
                       "fer": _pct(fer_ms, 50),
                       "hop_overhead": _pct([a - b - c for a, b, c in zip(latency, detect_ms, fer_ms)], 50)},
            "latency_ms": {"p50": _pct(latency, 50), "p99": _pct(latency, 99)},
            **cpu.per_frame(done),
        }


if __name__ == "__main__":
    sys.exit(backend_main())
