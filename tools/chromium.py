"""Drive the system's headless Chromium over the DevTools protocol (a websocket), for tests and screenshots.

    with Chromium() as browser:
        page = browser.page()
        page.navigate("http://127.0.0.1:8080/")
        page.evaluate("document.title")
        page.screenshot("out.png")

Uses Debian's ``chromium`` (``apt-get install chromium``) or ``$CHROMIUM``; no
browser is downloaded. Needs ``websocket-client`` (in the dev extra).
"""
from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.request
from typing import Any, Deque, Dict, List, Optional

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


class BrowserError(RuntimeError):
    pass


def find_chromium() -> Optional[str]:
    """The Chromium binary: $CHROMIUM, else chromium / chromium-browser on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One tab, through its DevTools websocket."""

    def __init__(self, ws_url: str, timeout: float) -> None:
        import websocket  # websocket-client
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: List[Dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> Dict[str, Any]:
        """Call a DevTools method and return its result (events that arrive meanwhile are kept)."""
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise BrowserError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The value of a JavaScript expression (of the promise it returns, with ``await_promise``)."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError("JavaScript error: %s" % (d.get("exception", {}).get("description") or d.get("text")))
        return r.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait until its document is parsed (a live MJPEG image never finishes loading)."""
        self.send("Page.enable")
        self.send("Runtime.enable")  # its exceptionThrown events land in ``events`` (see ``errors``)
        r = self.send("Page.navigate", url=url)
        if r.get("errorText"):
            raise BrowserError("cannot open %s: %s" % (url, r["errorText"]))
        self.evaluate("new Promise((ok) => document.readyState !== 'loading' ? ok(true) :"
                      " document.addEventListener('DOMContentLoaded', () => ok(true)))", await_promise=True)

    def errors(self) -> List[str]:
        """The page's uncaught JavaScript exceptions seen so far."""
        return [e["params"]["exceptionDetails"].get("exception", {}).get("description")
                or e["params"]["exceptionDetails"].get("text", "") for e in self.events
                if e.get("method") == "Runtime.exceptionThrown"]

    def screenshot(self, path: str) -> str:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.ws.close()


class Chromium:
    """A headless Chromium process with its own profile folder; a context manager."""

    def __init__(self, binary: Optional[str] = None, width: int = 1280, height: int = 860,
                 timeout: float = 120.0) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no Chromium found: apt-get install chromium (or set $CHROMIUM)")
        self.size = (width, height)
        self.timeout = timeout
        self.proc: Optional[subprocess.Popen] = None
        self.profile: Optional[str] = None
        self.http: Optional[str] = None
        self.log: Deque[str] = collections.deque(maxlen=50)
        self.pages: List[Page] = []
        self.drain: Optional[threading.Thread] = None

    def __enter__(self) -> "Chromium":
        self.profile = tempfile.mkdtemp(prefix="edgepipe-chromium-")
        cmd = [self.binary] + FLAGS + ["--user-data-dir=%s" % self.profile,
                                       "--window-size=%d,%d" % self.size, "about:blank"]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)
            assert self.proc.stderr is not None
            for line in self.proc.stderr:  # its first lines say where DevTools listens
                self.log.append(line.rstrip())
                if line.startswith("DevTools listening on ws://"):
                    self.http = "http://" + line.split("ws://", 1)[1].split("/", 1)[0]
                    break
            if self.http is None:
                raise BrowserError("Chromium exited (%s) before DevTools listened: %s"
                                   % (self.proc.wait(), " | ".join(self.log)))
            self.drain = threading.Thread(target=self._drain, name="chromium-stderr", daemon=True)
            self.drain.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    def page(self) -> Page:
        """The first tab."""
        with urllib.request.urlopen(self.http + "/json/list", timeout=self.timeout) as r:
            targets = json.load(r)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        p = Page(url, self.timeout)
        self.pages.append(p)
        w, h = self.size  # the viewport itself, whatever the window's frame takes
        p.send("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=False)
        return p

    def __exit__(self, *exc: Any) -> None:
        for p in self.pages:
            p.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.drain is not None:
                self.drain.join(timeout=10)
            if self.proc.stderr is not None and (self.drain is None or not self.drain.is_alive()):
                self.proc.stderr.close()
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
