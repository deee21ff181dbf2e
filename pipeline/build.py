"""Build the actors of one process from the config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from edgepipe.actors.aggregator import Aggregator
from edgepipe.actors.capture import Capture
from edgepipe.actors.classifier import Classifier
from edgepipe.actors.detector import Detector
from edgepipe.actors.encoder import Encoder
from edgepipe.actors.fer import FerWorker
from edgepipe.actors.monitoring.metrics_hub import MetricsHub
from edgepipe.actors.monitoring.resource_monitor import ResourceMonitor
from edgepipe.actors.monitoring.resources import PiSensors
from edgepipe.actors.runtime.base import Actor
from edgepipe.actors.runtime.engines import EngineSettings
from edgepipe.actors.sinks.display import Display, make_sink
from edgepipe.actors.sinks.live_view import LiveView, is_web
from edgepipe.actors.sinks.mqtt_sink import MqttSink
from edgepipe.actors.sinks.recorder import Recorder
from edgepipe.actors.sources.sources import is_live
from edgepipe.bus.sockets import Bus
from edgepipe.models.engines.engine import FaultCounter
from edgepipe.models.families.family import input_for
from edgepipe.models.store import manifest
from edgepipe.pipeline.config.loading import Config
from edgepipe.pipeline.ops.keys import configure_curve
from edgepipe.pipeline.placement import ROLES as ENGINE_ROLES
from edgepipe.pipeline.placement import RolePlacement, place

# start-up order: consumers first, the source last
ROLES = ("metrics", "resources", "recorder", "mqtt", "display", "aggregator", "fer", "detector", "classifier",
         "encoder", "capture")


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
        return [a for role in ROLES for a in self.roles.get(role, [])]

    def one(self, role: str) -> Optional[Actor]:
        found = self.roles.get(role)
        return found[0] if found else None

    @property
    def inference(self) -> Optional[Actor]:
        return self.one("detector") or self.one("classifier")

    def subscriber_waits(self) -> List:
        """Coroutines waiting until every local publisher has all its subscribers (anywhere)."""
        cfg = self.cfg
        display = cfg.pipeline.display != "none"
        lossless = not is_live(cfg.pipeline.source)
        # the mqtt actor is not waited for: it starts before the aggregator binds (in-process it is attached
        # at the bind), and a bound XPUB counts subscriptions per topic, not per subscriber
        want = {"capture": 1 + display, "encoder": 1, "detector": 1, "classifier": 1,
                "aggregator": 1 + display + lossless}
        return [a.pub.wait_subscribers(want[role]) for role, n in want.items()
                for a in self.roles.get(role, [])]


def engine_settings(cfg: Config, kind: Optional[str] = None, group_tpu: str = "") -> EngineSettings:
    """The settings of an engine of ``kind`` (default: pipeline.engine) from the config's ``[engine.KIND]``;
    a group that owns an Edge TPU (``groups.NAME.tpu``) runs on that one."""
    settings = cfg.engine.settings(kind or cfg.pipeline.engine).for_group(group_tpu)
    return EngineSettings(engine=settings, model_paths=tuple(cfg.models.paths))


def build(cfg: Config, bus: Bus, opts: RunOptions, local: Callable[[str], bool] = lambda role: True,
          group_tpu: str = "") -> Pipeline:
    """The actors whose role ``local(role)`` accepts, wired to the config's endpoints."""
    ep = cfg.endpoints
    placement = place(cfg, group_tpu=group_tpu, warn=any(local(r) for r in ENGINE_ROLES))
    names = {role: pl.model for role, pl in placement.items()}
    settings = {role: engine_settings(cfg, pl.engine, group_tpu) for role, pl in placement.items()}
    mkw = {"metrics_endpoint": ep.metrics_in, "metrics_interval": cfg.bus.metrics_interval_s}
    p = Pipeline(cfg, models=dict(names), placement=placement)
    fer_spec = manifest.get(names["fer"]) if "fer" in names else None

    def add(role: str, make: Callable[[], object]) -> None:
        if local(role):
            made = make()
            p.roles[role] = list(made) if isinstance(made, list) else [made]

    add("metrics", lambda: MetricsHub("metrics", bus, inbound_endpoint=ep.metrics_in, public_endpoint=ep.metrics))
    add("resources", lambda: ResourceMonitor("resources", bus, interval=cfg.bus.metrics_interval_s,
                                             sensors=PiSensors(cfg.resources.sysfs_root, cfg.resources.vcgencmd),
                                             **mkw))
    add("recorder", lambda: Recorder("recorder", bus, results_endpoint=ep.results, results_path=opts.results_path,
                                     **mkw))
    if cfg.mqtt.host:
        add("mqtt", lambda: MqttSink("mqtt", bus, mqtt=cfg.mqtt, results_endpoint=ep.results,
                                     metrics_public_endpoint=ep.metrics, profile=cfg.pipeline.profile, **mkw))
    if cfg.pipeline.display != "none":
        display_cls, web = Display, {}
        if is_web(cfg.pipeline.display):  # the live view: every actor's metrics, where each role runs
            display_cls, web = LiveView, {"public_metrics_endpoint": ep.metrics,
                                          "roles": {r: pl.describe() for r, pl in placement.items()}}
        add("display", lambda: display_cls("display", bus, sink=make_sink(cfg.pipeline.display, cfg.display.fps),
                                           frames_endpoint=ep.frames, results_endpoint=ep.results,
                                           hwm=cfg.display.hwm, frame_buffer=cfg.display.frame_buffer, **web, **mkw))
    add("aggregator", lambda: Aggregator("aggregator", bus, detections_endpoint=ep.detections,
                                         expressions_endpoint=ep.expressions, results_endpoint=ep.results,
                                         hwm=cfg.fer.hwm, deadline_ms=cfg.aggregator.deadline_ms,
                                         ordered=cfg.aggregator.ordered, smoothing=cfg.aggregator.smoothing,
                                         **mkw))
    # the FER workers of this process (fer.processes or a group may run some of them elsewhere)
    fer_here = [i for i in range(cfg.fer.workers) if local("fer-%d" % i)]
    if fer_spec is not None and fer_here:
        p.roles["fer"] = [FerWorker("fer-%d" % i, bus, facejobs_endpoint=ep.facejobs,
                                    expressions_endpoint=ep.expressions, hwm=cfg.fer.hwm, engine=settings["fer"],
                                    model=fer_spec, invoke_timeout_ms=cfg.fer.invoke_timeout_ms,
                                    # a CPU interpreter runs one invoke at a time: a second job would only wait
                                    depth=cfg.fer.depth if settings["fer"].kind != "cpu" else 1, **mkw)
                          for i in fer_here]
    if "classifier" in names:
        add("classifier", lambda: Classifier("classifier", bus, encoded_endpoint=ep.encoded,
                                             detections_endpoint=ep.detections, hwm=cfg.detector.hwm,
                                             engine=settings["classifier"],
                                             model=manifest.get(names["classifier"]),
                                             top_k=cfg.classifier.top_k, birds_only=cfg.classifier.birds_only,
                                             freshest=cfg.detector.freshest and is_live(cfg.pipeline.source),
                                             depth=cfg.detector.depth,
                                             invoke_timeout_ms=cfg.detector.invoke_timeout_ms, **mkw))
    else:
        add("detector", lambda: Detector("detector", bus, encoded_endpoint=ep.encoded,
                                         detections_endpoint=ep.detections, facejobs_endpoint=ep.facejobs,
                                         hwm=cfg.detector.hwm, jobs_hwm=cfg.fer.hwm, engine=settings["detector"],
                                         model=manifest.get(names["detector"]), fer_model=fer_spec,
                                         score_threshold=cfg.detector.score_threshold,
                                         max_faces=cfg.detector.max_faces,
                                         freshest=cfg.detector.freshest and is_live(cfg.pipeline.source),
                                         depth=cfg.detector.depth,
                                         invoke_timeout_ms=cfg.detector.invoke_timeout_ms, **mkw))
    add("encoder", lambda: Encoder("encoder", bus, frames_endpoint=ep.frames, encoded_endpoint=ep.encoded,
                                   hwm=cfg.encoder.hwm, format=cfg.encoder.format,
                                   jpeg_quality=cfg.encoder.jpeg_quality,
                                   faults=encoder_faults(cfg),
                                   # the detector's input, made here to overlap its inference of the frame before
                                   detector_input=(input_for(manifest.get(names["detector"]))
                                                   if "detector" in names and "classifier" not in names else None),
                                   **mkw))
    add("capture", lambda: Capture("capture", bus, source=cfg.pipeline.source, frames_endpoint=ep.frames,
                                   hwm=cfg.capture.hwm, max_frames=opts.frames, duration_s=opts.duration_s,
                                   loop=cfg.capture.loop, results_endpoint=ep.results,
                                   max_in_flight=cfg.capture.max_in_flight,
                                   read_timeout_s=cfg.capture.read_timeout_s,
                                   reconnect_max_s=cfg.capture.reconnect_max_s, **mkw))
    capture, recorder = p.one("capture"), p.one("recorder")
    if capture is not None and recorder is not None:
        capture.truth_sink = recorder.expect_truth  # the answer key never crosses the bus
    monitor = p.one("resources")
    if monitor is not None:
        monitor.engines = {role: pl.engine for role, pl in placement.items()}
        if recorder is not None:
            monitor.frames_done = lambda: recorder.stats.counters.get("out", 0)  # for FPS per W
    return p


def encoder_faults(cfg: Config) -> Optional[FaultCounter]:
    """The counter of the faults a test asked the encoder for (``engine.fake.faults.encoder``)."""
    plan = cfg.engine.fake.faults.get("encoder")
    return FaultCounter(plan) if plan is not None else None


def make_bus(cfg: Config) -> Bus:
    """The process's bus, with CURVE keys when the config names them."""
    bus = Bus(max_header=cfg.bus.max_header_kb * 1024, max_image=cfg.bus.max_image_mb << 20)
    if cfg.security.keys_dir:
        configure_curve(bus, cfg.security.keys_dir)
    return bus
