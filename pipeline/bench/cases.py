"""``bench pipeline``'s configurations: the plan of cases, the config of each, one in-process run."""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from edgepipe import ROOT
from edgepipe.pipeline.bench.common import REPO, SHARED_MODELS
from edgepipe.pipeline.config.loading import Config, GroupConfig, apply_overrides, endpoint_names
from edgepipe.pipeline.loop import event_loop_run
from edgepipe.pipeline.runner import RunOptions, run

DEFAULT_FRAMES, QUICK_FRAMES = 300, 100
DEFAULT_WARMUP, QUICK_WARMUP = 30, 10
DEFAULT_REPEATS, QUICK_REPEATS = 3, 1
FACES = (1, 3, 5)
WORKERS = (1, 2, 4)
COMPARE_FACES = 3  # (b), (c) and the JPEG serial loop run at this many faces ...
COMPARE_WORKERS = 2  # ... with this FER pool size

PLACEMENTS = ("one", "auto", "two")  # fake engine: every role on one device; auto (FER may go to the CPU); 2 devices
TWO_DEVICE_WORKERS = (2, 4)


@dataclass(frozen=True)
class Case:
    kind: str  # "pipeline" | "serial"
    faces: int
    workers: int = 0  # FER pool size (pipeline only)
    encoder: str = "raw"
    transport: str = "inproc"
    placement: str = "one"  # one | auto | two (see PLACEMENTS); "one" is every role on pipeline.engine
    profile: str = ""  # "" = the benchmark's first profile

    @property
    def id(self) -> str:
        tail = ("" if self.placement == "one" else ":" + self.placement) + (":" + self.profile if self.profile else "")
        if self.kind == "serial":
            return "serial:f%d:%s%s" % (self.faces, self.encoder, tail)
        return "pipeline:f%d:w%d:%s:%s%s" % (self.faces, self.workers, self.encoder, self.transport, tail)


def plan(faces: Sequence[int] = FACES, workers: Sequence[int] = WORKERS, engine: str = "fake",
         profiles: Sequence[str] = ("",), placements: Sequence[str] = PLACEMENTS) -> List[Case]:
    """Every configuration of one benchmark, in run order.

    The first profile gets every comparison; on the fake engine each profile
    also runs with ``auto`` placement and on two devices (``placements``
    chooses which of one, auto, two run).
    """
    cases = _plan(faces, workers, engine, profiles)
    return [c for c in cases if c.placement in placements or engine != "fake"]


def _plan(faces: Sequence[int], workers: Sequence[int], engine: str, profiles: Sequence[str]) -> List[Case]:
    cases: List[Case] = []
    for f in faces:
        cases += [Case("pipeline", f, w) for w in workers]
        cases.append(Case("serial", f))
    cf = COMPARE_FACES if COMPARE_FACES in faces else faces[len(faces) // 2]
    cw = COMPARE_WORKERS if COMPARE_WORKERS in workers else workers[len(workers) // 2]
    extra = [Case("pipeline", cf, cw), Case("pipeline", cf, cw, encoder="jpeg"),
             Case("pipeline", cf, cw, transport="ipc"), Case("pipeline", cf, cw, transport="group"),
             Case("serial", cf, encoder="jpeg")]
    cases += [c for c in extra if c not in cases]
    if engine != "fake":
        return cases
    for i, prof in enumerate(profiles):
        prof = prof if i else ""
        if i:
            for f in faces:
                cases += [Case("pipeline", f, w, profile=prof) for w in workers]
        for f in faces:
            cases.append(Case("pipeline", f, cw, placement="auto", profile=prof))
        for f in faces:
            cases += [Case("pipeline", f, w, placement="two", profile=prof) for w in TWO_DEVICE_WORKERS]
    return cases


def tpu_python() -> str:
    """The TPU venv's Python (``.venv-tpu``, Python 3.9 with LiteRT) if it exists, else this one."""
    venv = os.path.join(ROOT, ".venv-tpu", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def ipc_dir() -> str:
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()  # short: ipc paths max ~100 bytes
    return os.path.join(base, "edgepipe-bench-%d" % os.getpid())


def case_config(base: Callable[[], Config], case: Case, engine: str, profile: Optional[str]) -> Config:
    """A fresh typed config for one configuration; never a TCP port."""
    cfg = base()
    cfg = apply_overrides(cfg, profile=case.profile or profile, engine=engine, display="none",
                          source="synthetic:faces=%d,fps=0" % case.faces)
    cfg.placement.detector = cfg.placement.fer = cfg.placement.classifier = ""
    if case.placement == "auto":
        cfg.pipeline.engine = "auto"
        cfg.engine.auto.accelerator = "fake"
        cfg.engine.auto.faces = case.faces
        cfg.engine.fake.devices = 1
    elif case.placement == "two":
        cfg.engine.fake.devices = 2
    else:
        cfg.engine.fake.devices = 1
    shared = os.path.normpath(os.path.join(REPO, SHARED_MODELS))
    if os.path.isdir(shared) and shared not in cfg.models.paths:
        cfg.models.paths.append(shared)  # the CPU files `auto` may choose (FER112)
    cfg.encoder.format = case.encoder
    cfg.groups = {}  # every actor in this process, but for the "group" transport
    if case.transport == "group":
        # the detector and the FER pool in a child process (the TPU venv's Python when there is one):
        # the interpreter hop of the dual-Python set-up, over ipc://
        cfg.groups = {"tpu": GroupConfig(actors=["detector", "fer"], python=tpu_python())}
    if case.workers:
        cfg.fer.workers = case.workers
    for name in endpoint_names():
        if case.transport == "ipc":
            value = "ipc://%s/%s" % (ipc_dir(), name)
        elif case.transport == "group":
            value = "inproc://bench-%s" % name  # the runner makes the cross-process ones ipc://
        else:
            value = "inproc://bench-%s" % name
        setattr(cfg.endpoints, name, value)
    return cfg


def run_pipeline_case(cfg: Config, frames: int) -> Dict[str, Any]:
    """The runner's summary of one in-process run of ``frames`` captured frames, on the same event loop
    (uvloop when installed) as ``run.py``."""
    return event_loop_run(run(cfg, RunOptions(frames=frames)))
