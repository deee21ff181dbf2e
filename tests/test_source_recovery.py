"""Sources that recover: a real MJPEG stream over a local socket that stalls, drops and comes back.

The server is a thread of the test serving multipart JPEG over HTTP on
127.0.0.1, as an IP camera does; OpenCV (FFmpeg) reads it. Each connection's
frames carry the connection's number in their grey level, so a frame says
which connection it came from. The test drives the server with events. Read
timeouts and the reconnect backoff run on virtual clocks (``fake_clock``) that
the tests step once the state they wait for is there: no real timeout is waited.
"""
from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import List, Optional

import cv2
import numpy as np
import pytest
from fake_clock import FakeClock, Stepper
from helpers import inproc_config, run_async

from edgepipe.actors.sources.live_sources import LiveOpenCvSource, Reconnecting, SourceStalled
from edgepipe.actors.sources.picamera2_source import Picamera2Source
from edgepipe.actors.sources.source_factory import make_source
from edgepipe.actors.sources.sources import SourceError, is_live
from edgepipe.pipeline.plan import placement
from edgepipe.pipeline.plan.source_auto import resolve_source, v4l2_nodes
from edgepipe.pipeline.run_command import human_summary
from edgepipe.pipeline.runner import RunOptions, run

READ_TIMEOUT_S = 30.0  # virtual seconds; OpenCV's own open/read timeouts (real time) get it too: never reached


def jpeg(level: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((96, 128, 3), level, np.uint8))
    assert ok
    return buf.tobytes()


class MjpegServer:
    """Serves connection N with frames of grey level 40*N.

    ``plan[N]`` says what connection N does after ``frames`` frames: "stall" (keep the socket open and
    silent until the next connection arrives), "close" (hang up), "refuse" (hang up before any reply),
    or "stream" (send until the client goes away).
    """

    def __init__(self, plan: List[str], frames: int = 5) -> None:
        self.plan = plan
        self.frames = frames
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d/stream.mjpg" % self.sock.getsockname()[1]
        self.connections = 0
        self.arrived = threading.Condition()
        self.next_connection = threading.Event()
        self.closing = threading.Event()
        self.threads: List[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, name="mjpeg-accept", daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.arrived:
                self.connections += 1
                self.arrived.notify_all()
            self.next_connection.set()
            self.next_connection = threading.Event()
            n = self.connections
            what = self.plan[n - 1] if n <= len(self.plan) else "stream"
            t = threading.Thread(target=self._serve, args=(conn, n, what, self.next_connection),
                                 name="mjpeg-%d" % n, daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, n: int, what: str, next_conn: threading.Event) -> None:
        try:
            conn.recv(4096)
            if what == "refuse":
                return
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
            body = jpeg(40 * n)
            part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(body) + body + b"\r\n"
            sent = 0
            while not self.closing.is_set():
                if sent >= self.frames and what == "stall":
                    next_conn.wait()  # silent until the client gives up on us and reconnects
                    return
                if sent >= self.frames and what == "close":
                    return
                conn.sendall(part)
                sent += 1
        except OSError:
            pass  # the client went away
        finally:
            conn.close()

    def wait_connections(self, n: int) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.connections >= n, 60), "no connection %d" % n

    def close(self) -> None:
        self.closing.set()
        self.next_connection.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        for t in [self.acceptor] + self.threads:
            t.join(10)


@pytest.fixture
def server_factory():
    made: List[MjpegServer] = []

    def make(plan, frames=5):
        made.append(MjpegServer(plan, frames))
        return made[-1]

    yield make
    for s in made:
        s.close()


def level(item) -> int:
    img, truth = item
    assert truth is None
    return int(round(float(img.mean()) / 40.0))  # the connection the frame came from


def stream(url: str, reads: FakeClock, backoff: FakeClock, backoff_s: float = 0.05,
           backoff_max_s: float = 0.4) -> Reconnecting:
    """A reconnecting stream whose read timeouts (30 virtual seconds) and backoff run on virtual clocks."""
    src = Reconnecting(url, lambda: LiveOpenCvSource(url, url, read_timeout_s=READ_TIMEOUT_S, clock=reads),
                       backoff_s=backoff_s, backoff_max_s=backoff_max_s, clock=backoff)
    src.open()
    return src


@pytest.fixture
def in_thread():
    """Runs a function in a thread beside the test: its Future (``result(60)`` waits for it to end)."""
    pool = ThreadPoolExecutor(2, thread_name_prefix="test")
    try:
        yield pool.submit
    finally:
        pool.shutdown(wait=True)


@pytest.mark.parametrize("what", ["stall", "close"])
def test_a_stream_that_stalls_or_drops_is_reconnected(what, server_factory, caplog):
    server = server_factory([what, "stream"])
    reads, backoff = FakeClock(), FakeClock()
    src = stream(server.url, reads, backoff)
    try:
        with caplog.at_level(logging.WARNING, logger="edgepipe.source"):
            seen = [level(src.read())]
            # a stall: the reads of connection 1 time out on the clock, stepped until connection 2 comes
            # (a step before its last frame came makes it time out early: fewer frames of connection 1 are read)
            with Stepper(reads, until=lambda: server.connections >= 2) if what == "stall" else nullcontext():
                while seen[-1] == 1 and len(seen) <= 6:  # the newest frame wins: up to 5 frames of the first
                    seen.append(level(src.read()))
            assert seen[0] == 1 and seen[-1] == 2  # then a frame of the second connection
            assert src.reconnects == 1 and src.up
            for _ in range(3):
                assert level(src.read()) == 2
    finally:
        src.close()
    assert backoff.slept == []  # the first reopen worked: no backoff
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    back = [r for r in caplog.records if "back after" in r.getMessage()]
    assert len(lost) == 1 and len(back) == 1  # once per change of state


def step_backoffs(clock: FakeClock, n: int) -> List[float]:
    """Steps the next ``n`` sleepers of ``clock`` (a reader's backoff waits), each once it sleeps: their lengths."""
    done = [clock.step_blocking()]
    while len(done) < n:
        done.append(clock.step_blocking(begun_after=done[-1].index))
    return [s.duration for s in done]


@pytest.mark.parametrize("refused,backoff_max_s,delays", [(3, 0.4, [0.05, 0.1, 0.2]),  # doubling from backoff_s
                                                          (4, 0.15, [0.05, 0.1, 0.15, 0.15])])  # up to its cap
def test_a_server_that_is_down_is_retried_with_backoff(refused, backoff_max_s, delays, server_factory, caplog,
                                                       in_thread):
    server = server_factory(["close"] + ["refuse"] * refused + ["stream"])  # 6 connections at most: levels 40..240
    reads, backoff = FakeClock(), FakeClock()
    src = stream(server.url, reads, backoff, backoff_max_s=backoff_max_s)
    stepper = in_thread(step_backoffs, backoff, refused)  # each refused reconnect waits on the clock
    try:
        with caplog.at_level(logging.WARNING, logger="edgepipe.source"):
            seen = [level(src.read())]
            while seen[-1] == 1 and len(seen) <= 6:
                seen.append(level(src.read()))
            assert seen[0] == 1 and seen[-1] == refused + 2  # connections 2 .. refused+1 were refused
    finally:
        src.close()
    assert stepper.result(60) == pytest.approx(delays)
    assert backoff.slept == pytest.approx(delays) and backoff.pending == []
    assert src.reconnects == 1 and server.connections == refused + 2
    assert src.backoff.failures == 0  # back: the next loss starts from backoff_s again
    assert len([r for r in caplog.records if "lost" in r.getMessage()]) == 1  # not once per attempt
    back = [r for r in caplog.records if "back after" in r.getMessage()][0].getMessage()
    assert "%d attempts" % (refused + 1) in back


def test_live_source_read_times_out(server_factory):
    server = server_factory(["stall"], frames=5)
    clock = FakeClock()
    src = LiveOpenCvSource(server.url, server.url, read_timeout_s=READ_TIMEOUT_S, clock=clock)
    src.open()
    try:
        assert level(src.read()) == 1
        t0 = clock.monotonic()
        with Stepper(clock) as stepper:  # every read that waits is given its whole timeout at once
            with pytest.raises(SourceStalled):
                for _ in range(5):  # the newest frame wins: fewer reads than frames sent may return
                    src.read()
        assert stepper.steps and clock.monotonic() - t0 >= READ_TIMEOUT_S  # virtual seconds: no real wait
    finally:
        src.close()
    server.close()  # the stalled connection ends; the grabber's read returns and it releases the capture


def test_close_ends_a_backoff_at_once(server_factory, in_thread):
    server = server_factory(["close"] + ["refuse"] * 1000, frames=5)
    reads, backoff = FakeClock(), FakeClock()
    src = stream(server.url, reads, backoff, backoff_s=3600.0, backoff_max_s=3600.0)
    assert level(src.read()) == 1

    def read_to_the_end() -> List[Optional[object]]:
        result: List[Optional[object]] = []
        while True:
            item = src.read()
            result.append(item)
            if item is None:
                return result

    reader = in_thread(read_to_the_end)
    s = backoff.sleeper_blocking()  # the first reconnect attempt was refused: now it waits an hour
    assert s.duration == 3600.0 and server.connections == 2
    src.close()
    assert reader.result(60)[-1] is None
    assert backoff.monotonic() < s.deadline  # ended by close(), not by the time


def test_pipeline_summary_counts_the_reconnect(server_factory):
    # the server hangs up after 10 frames (a dropped stream; a stall is the tests above, on a virtual clock)
    server = server_factory(["close", "stream"], frames=10)
    cfg = inproc_config(pipeline={"source": server.url})
    s = run_async(run(cfg, RunOptions(frames=40)))
    assert s["source_reconnects"] == 1
    assert s["frames_captured"] == 40 and s["unaccounted"] == 0
    assert "source: 1 reconnects" in human_summary(s)


def test_a_video_file_ends_the_run_cleanly(tmp_path):
    path = str(tmp_path / "clip.mp4")
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 96))
    for i in range(12):
        out.write(np.full((96, 128, 3), 10 * i, np.uint8))
    out.release()
    s = run_async(run(inproc_config(pipeline={"source": "video:" + path}), RunOptions()))
    assert s["frames_captured"] == 12 and s["drained"] and s["unaccounted"] == 0
    assert "source_reconnects" not in s and "source:" not in human_summary(s)


# ------------------------------------------------------------------ cameras that are not there

def test_a_missing_v4l2_camera_names_the_fix():
    with pytest.raises(SourceError) as err:
        make_source("v4l2:63").open()
    msg = str(err.value)
    assert "v4l2-ctl --list-devices" in msg and "'video' group" in msg
    assert "--source picamera2" in msg  # a Pi 5 CSI camera is no V4L2 capture node


def test_picamera2_without_the_package_names_the_fix():
    pytest.importorskip("cv2")
    try:
        import picamera2  # noqa: F401
        pytest.skip("Picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(SourceError) as err:
        make_source("picamera2:640x480").open()
    assert "sudo apt install python3-picamera2" in str(err.value) and "--system-site-packages" in str(err.value)
    assert "v4l2:0" not in str(err.value)


class StalledCamera:
    """A camera behind Picamera2's interface whose capture job never completes."""

    def __init__(self) -> None:
        self.timeouts: List[float] = []

    def capture_array(self, name="main", wait=None):
        assert wait is False
        return object()

    def wait(self, job, timeout=None):
        self.timeouts.append(timeout)
        from concurrent.futures import TimeoutError as FutureTimeout
        raise FutureTimeout()

    def stop(self):
        pass

    def close(self):
        pass


def test_picamera2_capture_has_a_timeout():
    src = Picamera2Source("picamera2", (640, 480), read_timeout_s=1.5)
    src.cam = StalledCamera()
    with pytest.raises(SourceError, match="no frame from the camera within 1.5 s"):
        src.read()
    assert src.cam.timeouts == [1.5]
    src.close()


# ------------------------------------------------------------------ defaults

def test_source_auto_prefers_the_pi_camera_then_v4l2_then_the_demo():
    imx708 = {"Model": "imx708", "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a", "Num": 0}
    assert resolve_source("auto", cameras=lambda: ([imx708], ""))[0] == "picamera2"
    assert resolve_source("auto", cameras=lambda: ([], ""), nodes=lambda: [(0, "USB Camera"), (2, "UVC")],
                          captures=lambda i: i == 2)[0] == "v4l2:2"
    spec, why = resolve_source("auto", cameras=lambda: ([], ""), nodes=lambda: [(0, "dummy")],
                               captures=lambda i: False)
    assert spec == "demo" and "/dev/video0" in why
    assert resolve_source("synthetic:fps=0") == ("synthetic:fps=0", "")
    assert resolve_source("auto")[0] == "demo"  # this machine: no camera


def test_v4l2_nodes_skip_the_pi_codec_isp_and_csi_receiver_nodes(tmp_path):
    dev, sysfs = tmp_path / "dev", tmp_path / "sys-root"
    dev.mkdir()
    for n, name in ((0, "rp1-cfe"), (1, "USB 2.0 Camera: USB Camera"), (19, "rpi-hevc-dec"), (20, "pispbe")):
        (dev / ("video%d" % n)).write_text("")
        d = sysfs / "sys" / "class" / "video4linux" / ("video%d" % n)
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
    assert v4l2_nodes(str(dev), str(sysfs)) == [(1, "USB 2.0 Camera: USB Camera")]
    # a webcam's second node carries metadata only (V4L2_CAP_META_CAPTURE 0x00800000): not a camera
    (dev / "video2").write_text("")
    meta = lambda path: 0x00800000 if path.name == "video2" else 0x04200001  # noqa: E731
    assert [n for n, _ in v4l2_nodes(str(dev), str(sysfs), caps_of=meta)] == [1]


def test_demo_plays_at_its_frame_rate_and_loops_unless_unpaced(caplog):
    assert is_live("demo") and not is_live("demo:unpaced")
    with caplog.at_level(logging.INFO, logger="edgepipe.source"):  # INFO: the loop is normal, no warning
        paced = make_source("demo")
        paced.open()
    unpaced = make_source("demo:unpaced")
    unpaced.open()
    try:
        assert paced.live and 20 < paced.fps < 30
        assert not unpaced.live and unpaced.fps == 0.0
        assert "looping" in caplog.text and "own frame rate" in caplog.text
        frames = paced.frame_count
        assert frames > 100
        for i in range(frames + 2):  # past its end: it starts again, as a camera goes on
            assert paced.read() is not None, "frame %d" % i
        assert paced.loops == 1
    finally:
        paced.close()
        unpaced.close()


def test_engine_auto_falls_back_to_fake_only_without_models(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path / "empty-cache"))
    no_tpu = lambda: (False, "no Coral here")  # noqa: E731
    # the synthetic source, and a model with no file here and no public source: the fake engine
    cfg = inproc_config(pipeline={"engine": "auto", "profile": "cls-imagenet"})
    placed = placement.place(cfg, tpu_check=no_tpu, warn=False)
    assert {p.engine for p in placed.values()} == {"fake"}
    assert "the fake engine" in placed["classifier"].reason and "no Coral here" in placed["classifier"].reason
    cfg = inproc_config(pipeline={"engine": "auto", "profile": "fd+fer64"})
    placed = placement.place(cfg, tpu_check=no_tpu, warn=False)
    assert {p.engine for p in placed.values()} == {"cpu"}  # fetchable from the package index: real models
