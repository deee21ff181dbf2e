#!/usr/bin/env python3
"""Make the README's screenshot of the live view: run the pipeline, open the page in headless Chromium, shoot.

    python tools/screenshot.py [--out docs/web-view.png] [-- RUN.PY OPTIONS]

By default the pipeline is ``run.py --profile fd+fer64 --engine cpu --source demo`` (real models on the CPU,
the demo clip). The shot is taken once the panels show the detector and every FER worker at work and a face
with its expression, after a few more updates so that the figures have settled.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.chromium import Chromium  # noqa: E402

DEFAULT_RUN = ["--profile", "fd+fer64", "--engine", "cpu", "--source", "demo"]

# resolves once the page has had `updates` status events in which the detector and every FER worker have
# FPS > 0 and (with `faces`) a face is listed
WAIT_FOR_WORK = """new Promise((ok) => {
    let good = 0;
    const check = (s) => {
        const fers = s.actors.filter((a) => a.name.startsWith('fer-'));
        if (s.actors.some((a) => a.name === 'detector' && a.fps > 0) && fers.length && fers.every((a) => a.fps > 0)
            && (!%(faces)s || s.faces.length > 0) && ++good >= %(updates)d) { ok(s); return true; }
        return false; };
    window.addEventListener('edgepipe-status', function h(e) {
        if (check(e.detail)) window.removeEventListener('edgepipe-status', h); });
})"""


class RunPy:
    """``python run.py ...`` in the background with its stderr read line by line; ``url`` is the live view."""

    def __init__(self, args: List[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "run.py")] + args, cwd=str(ROOT),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: List[str] = []
        self.url: Optional[str] = None
        self.has_url = threading.Event()
        self.reader = threading.Thread(target=self._read, name="run.py-stderr", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if self.url is None and "live view at http://" in line:
                self.url = line.split("live view at ", 1)[1].strip()
                self.has_url.set()
        self.has_url.set()  # stderr closed: the run ended

    def stop(self) -> Tuple[int, str]:
        """Ctrl-C, then wait for the summary: (exit code, stdout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=120)
        self.reader.join(timeout=30)
        return self.proc.returncode, out


def shoot(run_args: List[str], out: Path, updates: int = 4, faces: bool = True) -> Path:
    run = RunPy(run_args + ["--display", "web:127.0.0.1:0", "-v"])
    try:
        if not run.has_url.wait(300) or not run.url:
            raise SystemExit("run.py did not start the live view:\n" + "\n".join(run.lines[-20:]))
        with Chromium(width=1280, height=560) as browser:
            page = browser.page()
            page.navigate(run.url)
            page.evaluate(WAIT_FOR_WORK % {"faces": "true" if faces else "false", "updates": updates},
                          await_promise=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(str(out))
    finally:
        rc, summary = run.stop()
    print(summary, end="")
    if rc != 0:
        raise SystemExit("run.py exited %d:\n%s" % (rc, "\n".join(run.lines[-20:])))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "web-view.png"))
    ap.add_argument("run_args", nargs="*", help="run.py options (after --); default: %s" % " ".join(DEFAULT_RUN))
    args = ap.parse_args(argv)
    path = shoot(args.run_args or DEFAULT_RUN, Path(args.out))
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
