"""A real Mosquitto broker on a free loopback port, a subscriber that records
what it receives, and a TCP relay whose connections a test can cut."""
from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
from typing import Callable, List, Optional, Tuple

import aiomqtt

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``/usr/sbin/mosquitto`` with a generated config; ``start()`` returns once it listens."""

    def __init__(self, workdir: str, port: int = 0, listener: str = "allow_anonymous true\n") -> None:
        self.port = port or free_port()
        self.conf = os.path.join(workdir, "mosquitto.conf")
        with open(self.conf, "w") as fh:
            fh.write("listener %d 127.0.0.1\n" % self.port + listener)
            fh.write("persistence false\n"
                     "user %s\n"  # as root, stay root: the broker reads files of the test's private tmp dir
                     % (getpass.getuser() if os.geteuid() == 0 else "mosquitto") +
                     "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
        self.proc: Optional[subprocess.Popen] = None
        self.log: List[str] = []
        self.reader: Optional[threading.Thread] = None

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        opened = False
        for line in self.proc.stderr:  # synchronise on the broker saying it listens, then runs
            self.log.append(line)
            opened = opened or "Opening ipv4 listen socket on port %d" % self.port in line
            if opened and line.rstrip().endswith(" running"):
                self.reader = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
                self.reader.start()
                return
        self.stop()
        raise RuntimeError("mosquitto did not start: %s" % "".join(self.log))

    def _drain(self, out) -> None:
        for line in out:  # the broker never blocks on a full pipe
            self.log.append(line)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            if self.reader is not None:
                self.reader.join()
                self.reader = None
            if proc.stderr is not None:
                proc.stderr.close()


def tls_files(workdir: str) -> dict:
    """A test CA and a server certificate for 127.0.0.1 (openssl), as paths."""
    d = {k: os.path.join(workdir, k) for k in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "ext")}
    with open(d["ext"], "w") as fh:
        fh.write("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (["req", "-x509"] + ec + ["-keyout", d["ca.key"], "-out", d["ca.pem"], "-days", "2",
                                         "-subj", "/CN=edgepipe test CA"],
                ["req"] + ec + ["-keyout", d["server.key"], "-out", d["server.csr"], "-subj", "/CN=127.0.0.1"],
                ["x509", "-req", "-in", d["server.csr"], "-CA", d["ca.pem"], "-CAkey", d["ca.key"],
                 "-CAcreateserial", "-out", d["server.pem"], "-days", "2", "-extfile", d["ext"]]):
        subprocess.run(["openssl"] + cmd, check=True, capture_output=True)
    return d


class Recorder:
    """A real MQTT client subscribed to ``#``: every message as (topic, payload, retain)."""

    def __init__(self, port: int, **client_kw) -> None:
        self.port = port
        self.client_kw = client_kw
        self.messages: List[Tuple[str, bytes, bool]] = []
        self.changed = asyncio.Event()
        self.task: Optional["asyncio.Task[None]"] = None

    async def __aenter__(self) -> "Recorder":
        subscribed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(subscribed))
        waiter = asyncio.ensure_future(subscribed.wait())
        done, _ = await asyncio.wait([self.task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            await asyncio.wait([waiter])
        if self.task in done:
            self.task.result()
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.wait([self.task])

    async def _run(self, subscribed: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, **self.client_kw) as client:
            await client.subscribe("#", qos=1)
            subscribed.set()
            async for m in client.messages:
                self.messages.append((str(m.topic), bytes(m.payload), bool(m.retain)))
                ev, self.changed = self.changed, asyncio.Event()
                ev.set()

    async def wait_for(self, predicate: Callable[["Recorder"], bool]) -> None:
        while not predicate(self):
            await self.changed.wait()

    def on(self, topic: str) -> List[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    def json(self, topic: str) -> list:
        return [json.loads(p) for p in self.on(topic)]


class Relay:
    """A TCP relay to the broker; ``cut()`` drops every connection without an MQTT DISCONNECT."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: Optional[asyncio.base_events.Server] = None
        self.port = 0
        self.writers: List[asyncio.StreamWriter] = []
        self.pipes: List["asyncio.Task[None]"] = []

    async def __aenter__(self) -> "Relay":
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        self.cut()
        await self.server.wait_closed()
        if self.pipes:
            await asyncio.wait(self.pipes)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_w]
        self.pipes += [asyncio.ensure_future(self._pipe(reader, up_w)), asyncio.ensure_future(self._pipe(up_r, writer))]

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers = []
