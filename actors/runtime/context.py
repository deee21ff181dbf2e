"""What an actor is given besides its name, the bus and its config section.

- ``Endpoints``: the addresses of the endpoints its role binds and connects, by name (``frames``,
  ``encoded``, ...), as the table of roles (``actors/roles.py``) lists them; ``metrics_in`` for
  every actor that reports metrics.
- ``Context``: what the whole run knows and several actors need: the metrics interval, whether the
  source is live, the run's limits, the source and display specs, the profile, the FER pool's queue
  size (the detector's jobs and the aggregator's expressions match the workers'), where each role runs,
  the faults a test asked for.
- ``RoleModels``: for a role that runs a model, its engine settings and model, for the detector
  the FER model whose crops it cuts, and for a role on an accelerator its fallback (the CPU engine
  and the profile's CPU model) for when the device is lost.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from edgepipe.actors.runtime.engines import EngineSettings
from edgepipe.models.engines.engine import FaultPlan
from edgepipe.models.spec import ModelSpec

Endpoints = Mapping[str, str]


@dataclass(frozen=True)
class Context:
    metrics_interval: float = 1.0  # seconds between an actor's metrics snapshots
    live: bool = False  # a live source (camera, stream): the freshest frame wins, stale ones are dropped
    source: str = ""  # the capture's source spec (``demo``, ``v4l2:0``, ``synthetic:faces=2``, ...)
    display: str = "none"  # the display's spec (``none``, ``window``, ``file:PATH``, ``web[:PORT]``)
    profile: str = ""
    frames: Optional[int] = None  # stop after this many frames (None: the source's end)
    duration_s: Optional[float] = None  # stop after this long
    results_path: Optional[str] = None  # the recorder writes every result here (JSON lines)
    fer_hwm: int = 8  # the FER pool's queues: face jobs and expressions
    placement: Dict[str, str] = field(default_factory=dict)  # role -> where it runs, for the live view
    order: Tuple[str, ...] = ()  # the roles from the source to the sinks (the table's), for the live view
    faults: Dict[str, FaultPlan] = field(default_factory=dict)  # actor -> faults a test asked for (fake engine)
    camera: str = "default"  # a capture's or encoder's camera
    fps_limit: float = 0.0  # a capture's frame-rate limit (0: none)
    cameras: Dict[str, str] = field(default_factory=dict)  # every camera of the run -> its source spec ({}: one
    # camera ``default`` reading ``source``)
    labels: Dict[str, str] = field(default_factory=dict)  # camera -> its label for people ([cameras.NAME] label)

    def camera_sources(self) -> Dict[str, str]:
        """Every camera of the run -> its source spec, in name order."""
        return dict(self.cameras) if self.cameras else {"default": self.source}

    @property
    def several(self) -> bool:
        """Whether the run names its cameras (several, or one not named ``default``): per-camera counters."""
        return list(self.camera_sources()) != ["default"]


@dataclass(frozen=True)
class RoleModels:
    engine: EngineSettings
    model: ModelSpec
    fer_model: Optional[ModelSpec] = None  # the detector cuts its FER jobs' crops for this model
    fallback: Optional["RoleModels"] = None  # where the role goes when its accelerator is lost (the CPU)

    def fallback_of(self) -> Optional[Tuple[EngineSettings, ModelSpec]]:
        """The fallback's (engine settings, model), for ``EngineHost``."""
        return (self.fallback.engine, self.fallback.model) if self.fallback is not None else None
