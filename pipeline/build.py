"""Build the actors of one process from the config."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional

from edgepipe.actors.roles import ENGINE_ROLES, ORDER, ROLES, Role, camera_actor
from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.runtime.context import Context, RoleModels
from edgepipe.actors.runtime.engines import EngineSettings
from edgepipe.actors.sinks.display import make_sink
from edgepipe.actors.sinks.live_view import LiveView, is_web
from edgepipe.actors.sources.sources import is_live
from edgepipe.bus.sockets import Bus
from edgepipe.models.families.family import input_for
from edgepipe.models.store import manifest
from edgepipe.pipeline.config.loading import Config
from edgepipe.pipeline.ops.keys import configure_curve
from edgepipe.pipeline.plan.placement import RolePlacement, model_for, place
from edgepipe.pipeline.processes.groups import CAMERA_LINKS, camera_link


@dataclass
class RunOptions:
    frames: Optional[int] = None
    duration_s: Optional[float] = None
    results_path: Optional[str] = None


@dataclass
class Pipeline:
    """The actors of this process, by role (a role run by another process is absent)."""

    cfg: Config
    roles: Dict[str, List[Actor]] = field(default_factory=dict)
    models: Dict[str, str] = field(default_factory=dict)
    placement: Dict[str, RolePlacement] = field(default_factory=dict)

    @property
    def actors(self) -> List[Actor]:
        """This process's actors in start order (the table of roles': consumers first, the source last)."""
        return [a for role in ROLES for a in self.roles.get(role.name, [])]

    def all(self, role: str) -> List[Actor]:
        """The actors of ``role`` in this process (one per camera for capture and encoder)."""
        return list(self.roles.get(role, []))

    def one(self, role: str) -> Optional[Actor]:
        found = self.roles.get(role)
        return found[0] if found else None

    @property
    def inference(self) -> Optional[Actor]:
        return self.one("detector") or self.one("classifier")

    def subscriber_waits(self) -> List:
        """Coroutines waiting until every local publisher has all its subscribers (anywhere): the roles of
        this run that connect to the endpoint it publishes on (``Role.publishes``)."""
        lossless = any(not is_live(c.source) for c in self.cfg.camera_list().values())
        waits = []
        for role in ROLES:
            if role.publishes is None or role.name not in self.roles:
                continue
            subscribers = [r for r in ROLES if role.publishes in r.connects and wanted(self.cfg, r, self.models)
                           # the mqtt actor is not waited for: it starts before the aggregator binds (in-process
                           # it is attached at the bind), and a bound XPUB counts subscriptions per topic, not
                           # per subscriber; capture takes results only from a recorded source (its credits)
                           and r.name != "mqtt" and (r.name != "capture" or lossless)]
            waits += [a.pub.wait_subscribers(len(subscribers)) for a in self.roles[role.name]]
        return waits


def engine_settings(cfg: Config, kind: Optional[str] = None, group_tpu: str = "", auto: bool = False) -> EngineSettings:
    """The settings of an engine of ``kind`` (default: pipeline.engine) from the config's ``[engine.KIND]``;
    a group that owns an Edge TPU (``groups.NAME.tpu``) runs on that one; ``auto``: placed by auto."""
    settings = cfg.engine.settings(kind or cfg.pipeline.engine).for_group(group_tpu)
    settings = settings.for_auto() if auto else settings
    return EngineSettings(engine=settings, model_paths=tuple(cfg.models.paths))


def build(cfg: Config, bus: Bus, opts: RunOptions, local: Callable[[str], bool] = lambda role: True,
          group_tpu: str = "") -> Pipeline:
    """The actors whose name ``local(name)`` accepts, one per role of the table (a pool: one per worker),
    each given its config section, its endpoints and the run's context."""
    placement = place(cfg, group_tpu=group_tpu, warn=any(local(r) for r in ENGINE_ROLES))
    models = {role: pl.model for role, pl in placement.items()}
    p = Pipeline(cfg, models=dict(models), placement=placement)
    context = run_context(cfg, opts, placement)
    cameras = cfg.camera_list()
    for role in ROLES:
        if not wanted(cfg, role, models):
            continue
        if role.per_camera:  # one per camera, each with its camera's source and endpoints
            made = [make_actor(cfg, bus, role, name, camera_context(context, cam, cameras[cam].fps_limit),
                               placement, group_tpu)
                    for cam in cameras for name in [camera_actor(role.name, cam, tuple(cameras))] if local(name)]
        else:
            names = ["%s-%d" % (role.name, i) for i in range(cfg.fer.workers)] if role.pool else [role.name]
            made = [make_actor(cfg, bus, role, name, context, placement, group_tpu) for name in names if local(name)]
        if made:
            p.roles[role.name] = made
    recorder = p.one("recorder")
    for capture in p.all("capture"):
        if recorder is not None:
            capture.truth_sink = recorder.expect_truth  # the answer key never crosses the bus
    monitor = p.one("resources")
    if monitor is not None:
        monitor.engines = {role: pl.engine for role, pl in placement.items()}
        if recorder is not None:
            monitor.frames_done = lambda: recorder.stats.counters.get("out", 0)  # for FPS per W
    return p


def run_context(cfg: Config, opts: RunOptions, placement: Dict[str, RolePlacement]) -> Context:
    """What the whole run knows that several actors need (``live``: some camera is live)."""
    cameras = {name: cam.source for name, cam in cfg.camera_list().items()}
    return Context(metrics_interval=cfg.bus.metrics_interval_s, live=any(is_live(s) for s in cameras.values()),
                   source=cfg.pipeline.source if not cfg.cameras else "", display=cfg.pipeline.display,
                   profile=cfg.pipeline.profile, frames=opts.frames, duration_s=opts.duration_s,
                   results_path=opts.results_path, fer_hwm=cfg.fer.hwm,
                   placement={r: pl.describe() for r, pl in placement.items()}, order=ORDER,
                   faults=dict(cfg.engine.fake.faults), cameras=cameras if cfg.cameras else {},
                   labels={name: cam.label for name, cam in cfg.camera_list().items() if cam.label})


def camera_context(context: Context, camera: str, fps_limit: float) -> Context:
    """The context of one camera's capture or encoder: its camera, source and whether it is live."""
    source = context.camera_sources()[camera]
    return replace(context, camera=camera, source=source, live=is_live(source), fps_limit=fps_limit)


def wanted(cfg: Config, role: Role, models: Dict[str, str]) -> bool:
    """Whether this run has the role: a model role when the profile names its model (the detector unless
    a classifier replaces it), MQTT when a broker is set, the display unless it is none."""
    if role.engine:
        return role.name in models and not (role.name == "detector" and "classifier" in models)
    if role.name == "mqtt":
        return bool(cfg.mqtt.host)
    if role.name == "display":
        return cfg.pipeline.display != "none"
    return True


def make_actor(cfg: Config, bus: Bus, role: Role, name: str, context: Context,
               placement: Dict[str, RolePlacement], group_tpu: str) -> Actor:
    """One actor of ``role``: its class from the table, its section whole, its endpoints by name."""
    endpoints = {ep: getattr(cfg.endpoints, ep) for ep in role.endpoints}
    cameras = list(cfg.camera_list())
    for ep in (e for e in CAMERA_LINKS if e in endpoints):
        if role.per_camera:  # its camera's own frames / encoded endpoint
            endpoints[ep] = camera_link(cfg, ep, context.camera)
            continue
        # a role that connects to every camera's (the detector, the display): those given in [cameras.NAME] as
        # ``LINK.CAMERA``; it derives the others from ``LINK`` itself (bus.sockets.camera_endpoint)
        endpoints.update({"%s.%s" % (ep, cam): camera_link(cfg, ep, cam) for cam in cameras
                          if getattr(cfg.cameras.get(cam), ep, "")})
    args: List[object] = [name, bus]
    if role.section is not None:
        args.append(getattr(cfg, role.section))
    args += [endpoints, context]
    actor_cls = role.actor
    if role.engine:
        pl = placement[role.name]
        fer = placement.get("fer")
        args.append(RoleModels(engine_settings(cfg, pl.engine, group_tpu, pl.auto), manifest.get(pl.model),
                               manifest.get(fer.model) if role.name == "detector" and fer is not None else None,
                               cpu_fallback(cfg, role.name, pl.engine)))
    elif role.name == "display":
        if is_web(cfg.pipeline.display):
            actor_cls = LiveView  # the live view: every actor's metrics, where each role runs
        sink = make_sink(cfg.pipeline.display, cfg.display.fps)
        if hasattr(sink, "set_cameras"):  # the live view: a tile per camera, with its label
            sink.set_cameras({cam: c.label for cam, c in cfg.camera_list().items()})
        args.append(sink)
    elif role.name == "encoder" and "detector" in placement and "classifier" not in placement:
        # the detector's input, made here to overlap its inference of the frame before
        args.append(input_for(manifest.get(placement["detector"].model)))
    return actor_cls(*args)


def cpu_fallback(cfg: Config, role: str, engine: str) -> Optional[RoleModels]:
    """Where a role on an accelerator goes when the device is lost: the CPU with the model the profile names
    for it there; None on the CPU, or when that model has no CPU file (its frames are then dropped)."""
    if engine == "cpu":
        return None
    spec = manifest.get(model_for(cfg, role, "cpu"))
    return RoleModels(engine_settings(cfg, "cpu"), spec) if "cpu" in spec.files else None


def make_bus(cfg: Config) -> Bus:
    """The process's bus, with CURVE keys when the config names them."""
    bus = Bus(max_header=cfg.bus.max_header_kb * 1024, max_image=cfg.bus.max_image_mb << 20)
    if cfg.security.keys_dir:
        configure_curve(bus, cfg.security.keys_dir)
    return bus
