"""The table of roles: every actor of the pipeline, described once.

A role names its actor class, the config section the actor takes whole, the endpoints it binds and
those it connects to, whether a process group may move it (``[groups.NAME] actors = [...]``), whether
it runs a model (its engine is placed: ``[placement]``), the counters it keeps from its first snapshot
and its drop reasons. The table's order is the start order: consumers first, the source last (so no
publisher starts before its subscribers); read backwards it runs from the source to the sinks.

Building the actors (``pipeline/build.py``), process groups and their endpoints
(``pipeline/processes/groups.py``), placement (``pipeline/plan/placement.py``), the Prometheus exporter and
the live view read it. Adding an actor is a row here and its class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Type

from edgepipe.actors.aggregator import Aggregator
from edgepipe.actors.capture import Capture
from edgepipe.actors.classifier import Classifier
from edgepipe.actors.detector import Detector
from edgepipe.actors.encoder import Encoder
from edgepipe.actors.fer import FerWorker
from edgepipe.actors.monitoring.metrics_hub import MetricsHub
from edgepipe.actors.monitoring.resource_monitor import ResourceMonitor
from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.sinks.display import Display
from edgepipe.actors.sinks.mqtt_sink import MqttSink
from edgepipe.actors.sinks.recorder import Recorder

COMMON = ("in", "out", "dropped", "rejected")  # every actor's
STAGE = COMMON + ("ignored", "restarts")  # an actor that runs a model under the watchdog
MOVES = ("failovers", "promotions")  # a model role: moved off its lost accelerator to the CPU, and back


@dataclass(frozen=True)
class Role:
    name: str  # the role, and its actor's name (a pool's workers are NAME-0, NAME-1, ...)
    actor: Type[Actor]
    section: Optional[str]  # the config section the actor takes whole (None: it has none)
    binds: Tuple[str, ...] = ()  # endpoints (``[endpoints]`` keys) it binds
    connects: Tuple[str, ...] = ()  # endpoints it connects to
    movable: bool = False  # a process group may take it (else it runs in the main process)
    engine: bool = False  # it runs a model: ``[placement]`` puts it on an engine
    counters: Tuple[str, ...] = COMMON  # kept from the first snapshot, 0 until counted
    drops: Tuple[str, ...] = ()  # drop reasons (``dropped.REASON``)
    pool: bool = False  # several workers share the role (NAME-0 .. NAME-N-1)
    per_camera: bool = False  # one per camera (NAME-CAMERA; NAME for the one camera ``default``), each on its
    # camera's own ``binds`` endpoints (``bus.sockets.camera_endpoint``)
    publishes: Optional[str] = None  # the endpoint it publishes frames or results on: the run starts the
    # source once every role of the run that connects to it has subscribed
    about: str = ""  # what it is, in a few words (config descriptions, the live view)

    @property
    def endpoints(self) -> Tuple[str, ...]:
        return self.binds + self.connects


# start order: consumers first, the source last
ROLES: Tuple[Role, ...] = (
    Role("metrics", MetricsHub, None, binds=("metrics_in", "metrics")),
    Role("resources", ResourceMonitor, "resources", connects=("metrics_in",)),
    Role("recorder", Recorder, None, connects=("results", "metrics_in"), drops=("transport",)),
    Role("mqtt", MqttSink, "mqtt", connects=("results", "metrics", "metrics_in")),
    Role("display", Display, "display", connects=("frames", "results", "metrics", "metrics_in"), movable=True,
         drops=("transport", "skipped", "no_frame")),  # skipped, no_frame: results it did not show
    Role("aggregator", Aggregator, "aggregator", binds=("results", "expressions"),
         connects=("detections", "metrics_in"), movable=True,
         counters=COMMON + ("completed", "partial", "out_of_order", "expressions", "late_expressions",
                            "orphan_expressions", "duplicate_detections", "duplicate_expressions",
                            "bad_expressions", "ignored"),
         drops=("transport",), publishes="results"),
    Role("fer", FerWorker, "fer", connects=("facejobs", "expressions", "metrics_in"), movable=True,
         engine=True, counters=STAGE + MOVES + ("errors", "timeouts", "faces", "faces_failed"), pool=True,
         about="the FER workers"),
    Role("detector", Detector, "detector", binds=("detections", "facejobs"), connects=("encoded", "metrics_in"),
         movable=True, engine=True, counters=STAGE + MOVES + ("faces", "jobs"),
         drops=("transport", "stale", "bad_frame", "engine_error", "engine_timeout", "device_gone"),
         publishes="detections",
         about="the face detector"),
    Role("classifier", Classifier, "classifier", binds=("detections",), connects=("encoded", "metrics_in"),
         movable=True, engine=True, counters=STAGE + MOVES,
         drops=("transport", "stale", "bad_frame", "engine_error", "engine_timeout", "device_gone"),
         publishes="detections",
         about="the whole-frame classifier (profile cls)"),
    Role("encoder", Encoder, "encoder", binds=("encoded",), connects=("frames", "metrics_in"), movable=True,
         counters=STAGE, drops=("transport", "encode_error", "encode_timeout"), publishes="encoded",
         per_camera=True),
    Role("capture", Capture, "capture", binds=("frames",), connects=("results", "metrics_in"),
         counters=COMMON + ("source_errors", "credit_timeouts"), publishes="frames", per_camera=True),
)
BY_NAME: Dict[str, Role] = {r.name: r for r in ROLES}
ORDER = tuple(r.name for r in reversed(ROLES))  # from the source to the sinks
ENGINE_ROLES = tuple(r.name for r in reversed(ROLES) if r.engine)  # classifier, detector, fer
MOVABLE = tuple(r.name for r in reversed(ROLES) if r.movable)


def role_of(actor: str) -> Optional[Role]:
    """The role of an actor name (``fer-3`` -> fer, ``capture-left`` -> capture), None for a name that is no
    role's."""
    if actor in BY_NAME:
        return BY_NAME[actor]
    base, sep, n = actor.partition("-")
    role = BY_NAME.get(base) if sep and n else None
    if role is not None and (role.per_camera or role.pool and n.isdigit()):
        return role
    return None


def camera_actor(role: str, camera: str, cameras: Tuple[str, ...]) -> str:
    """The name of ``role``'s actor for ``camera``: the role's own for the one camera ``default``, else
    ROLE-CAMERA."""
    return role if tuple(cameras) == ("default",) else "%s-%s" % (role, camera)


def users(endpoint: str) -> Tuple[str, ...]:
    """The roles that use ``endpoint``: the one that binds it first, then those that connect to it."""
    binders = tuple(r.name for r in ROLES if endpoint in r.binds)
    return binders + tuple(r.name for r in ROLES if endpoint in r.connects and r.name not in binders)


def markdown() -> str:
    """The table as the README shows it (``tests/test_roles.py`` checks that the README has it)."""
    rows = ["| role | actor | section | binds | connects to | movable | model |", "|---|---|---|---|---|---|---|"]
    for r in ROLES:
        actor = "%s.%s" % (r.actor.__module__.replace("edgepipe.", ""), r.actor.__name__)
        rows.append("| %s | `%s` | %s | %s | %s | %s | %s |" % (
            r.name + (" (pool)" if r.pool else ""), actor, "`[%s]`" % r.section if r.section else "-",
            ", ".join(r.binds) or "-", ", ".join(e for e in r.connects if e != "metrics_in") or "-",
            "yes" if r.movable else "-", "yes" if r.engine else "-"))
    return "\n".join(rows)
